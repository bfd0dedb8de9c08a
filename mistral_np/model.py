"""The Mistral forward pass: embed, L decoder layers, final norm, LM head.

    x0      = embed_tokens[ids]                        (T,) -> (T, D)
    x_{l+1} = decoder_layer(x_l)                       (T, D) -> (T, D), l = 0 .. L-1
    logits  = rms_norm(x_L, norm) @ lm_head^T          (T, D) -> (T, V)   (lm_head = embed_tokens if tied)

``forward`` is a pure function of (params, config, token ids, positions, cache). ``Model`` bundles
a checkpoint's config and parameters (and, once loaded, its tokenizer) behind the public API:
``model.forward(ids)`` is the oracle entry point, no cache, every token at once.

next: block.py.
"""

from __future__ import annotations

import numpy as np

from .block import decoder_layer
from .config import MistralConfig
from .ops import linear, take_rows
from .params import ModelParams
from .rmsnorm import rms_norm
from .rope import rope_tables


def hidden_states(params: ModelParams, cfg: MistralConfig, ids: np.ndarray, positions: np.ndarray,
                  dtype=np.float32, cache=None, trace=None) -> np.ndarray:
    """Token ids (T,) at absolute positions (T,) -> final-normed hidden states (T, D)."""
    x = take_rows(params.embed_tokens, ids).astype(dtype, copy=False)         # (T,) -> (T, D)
    if trace is not None:
        trace["embeddings"] = x
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta, dtype)     # (T, Dh/2) each
    for i, layer in enumerate(params.layers):
        x = decoder_layer(x, layer, cfg, positions, cos, sin, i, cache, trace)
    x = rms_norm(x, params.norm, cfg.rms_norm_eps)
    if trace is not None:
        trace["final_norm"] = x
    return x


def forward(params: ModelParams, cfg: MistralConfig, ids: np.ndarray, positions: np.ndarray | None = None,
            dtype=np.float32, cache=None, trace=None) -> np.ndarray:
    """Token ids (T,) -> logits (T, V). ``positions`` default to 0..T-1 (or follow the cache)."""
    if positions is None:
        start = 0 if cache is None else cache.next_position
        positions = np.arange(start, start + len(ids), dtype=np.int64)
    x = hidden_states(params, cfg, ids, positions, dtype, cache, trace)
    if params.lm_head is None:
        raise ValueError("this checkpoint has no lm_head (an embedding model): use hidden_states or load_embedder")
    logits = linear(x, params.lm_head)                                         # (T, D) -> (T, V)
    if trace is not None:
        trace["logits"] = logits
    return logits


class Model:
    """A loaded checkpoint: ``config``, ``params``, compute ``dtype``, and its ``tokenizer`` (or None)."""

    def __init__(self, config: MistralConfig, params: ModelParams, dtype=np.float32, tokenizer=None,
                 source: str | None = None):
        self.config, self.params, self.dtype = config, params, np.dtype(dtype)
        self.tokenizer, self.source = tokenizer, source
        self.last_stats = None  # GenerationStats of the last generate/chat call (generate.py)

    def _check_ids(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token_ids must be a non-empty 1-D integer array, got shape {ids.shape} "
                             f"dtype {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.config.vocab_size)]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        return ids.astype(np.int64)

    def forward(self, token_ids, trace: bool = False):
        """Logits (T, V) for a 1-D array of token ids, no cache; with ``trace=True`` also a dict of
        every named intermediate (see docs/conventions.md), returned as ``(logits, trace)``."""
        ids = self._check_ids(token_ids)
        tr = {} if trace else None
        logits = forward(self.params, self.config, ids, dtype=self.dtype, trace=tr)
        return (logits, tr) if trace else logits

    def generate(self, prompt, **kwargs):
        """Generator of text pieces continuing ``prompt`` (a string, encoded with BOS, or a list of ids used
        as given). Keywords: max_new_tokens=256, temperature=0.0 (greedy), top_k=0, top_p=1.0,
        repetition_penalty=1.0, seed=None, stop=None (strings), stop_ids=None (EOS), chunk_size=None (W).
        Counts and timings afterwards in ``self.last_stats``. See generate.py."""
        from .generate import generate_text
        return generate_text(self, prompt, **kwargs)

    def generate_ids(self, prompt_ids, **kwargs):
        """Generator of new token ids (no tokenizer needed); same keywords as ``generate`` except ``stop``."""
        from .generate import generate_ids
        return generate_ids(self, prompt_ids, **kwargs)

    def chat(self, messages, fmt=None, **kwargs):
        """Generator of the next answer's text pieces for ``[{"role", "content"}, ...]``, encoded with the
        tokenizer's chat template if it has one, else Mistral's format (chat.py); keywords as ``generate``."""
        from .generate import generate_chat
        return generate_chat(self, messages, fmt=fmt, **kwargs)

    def __repr__(self):
        c = self.config
        return (f"Model({c.model_type}, L={c.num_hidden_layers}, D={c.hidden_size}, H={c.num_attention_heads}, "
                f"K={c.num_key_value_heads}, W={c.sliding_window}, dtype={self.dtype}, source={self.source!r})")
