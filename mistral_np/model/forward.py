"""The Mistral forward pass: embed, L decoder layers, final norm, LM head.

    x0      = embed_tokens[ids]                        (T,) -> (T, D)
    x_{l+1} = decoder_layer(x_l)                       (T, D) -> (T, D), l = 0 .. L-1
    logits  = rms_norm(x_L, norm) @ lm_head^T          (T, D) -> (T, V)   (lm_head = embed_tokens if tied)

``forward`` is a pure function of (params, config, token ids, positions, cache). Without a cache every
token attends to the tokens of this call (the oracle: one call, the whole sequence); with a ``KVCache``
(kv_cache.py) the call continues a sequence, and its tokens also see the cached keys. A ``Trace``
(trace.py) records every named intermediate; the default records nothing.

Matches HF ``MistralForCausalLM`` / ``LlamaForCausalLM``: tests/test_model.py compares every traced intermediate
with transformers (float32 and float64), tests/test_smollm2.py on a real GGUF; docs/tour.md walks through it.

next: block.py.
"""

from __future__ import annotations

import numpy as np

from .block import decoder_layer
from .config import MistralConfig
from .kv_cache import NO_CACHE
from .ops import linear, take_rows
from .params import ModelParams
from .rmsnorm import rms_norm
from .rope import positions as rotary_positions
from .trace import NO_TRACE


def hidden_states(params: ModelParams, cfg: MistralConfig, ids: np.ndarray, positions: np.ndarray | None = None,
                  dtype=np.float32, cache=None, trace=NO_TRACE) -> np.ndarray:
    """Token ids (T,) at absolute positions (T,) -> final-normed hidden states (T, D).

    ``positions`` default to 0..T-1, or to the positions that follow the cache's contents."""
    if positions is None:
        start = 0 if cache is None else cache.next_position
        positions = np.arange(start, start + len(ids), dtype=np.int64)
    pos = rotary_positions(positions, cfg.head_dim, cfg.rope_theta, dtype)     # (T,), (T, Dh/2) x2
    x = take_rows(params.embed_tokens, ids).astype(dtype, copy=False)         # (T,) -> (T, D)
    trace.record("embeddings", x)
    for i, layer in enumerate(params.layers):
        x = decoder_layer(x, layer, cfg, pos, NO_CACHE if cache is None else cache.layer(i), trace.layer(i))
    x = rms_norm(x, params.norm, cfg.rms_norm_eps)
    trace.record("final_norm", x)
    return x


def forward(params: ModelParams, cfg: MistralConfig, ids: np.ndarray, positions: np.ndarray | None = None,
            dtype=np.float32, cache=None, trace=NO_TRACE) -> np.ndarray:
    """Token ids (T,) -> logits (T, V)."""
    if params.lm_head is None:
        raise ValueError("this checkpoint has no lm_head (an embedding model): use hidden_states")
    x = hidden_states(params, cfg, ids, positions, dtype, cache, trace)
    logits = linear(x, params.lm_head)                                         # (T, D) -> (T, V)
    trace.record("logits", logits)
    return logits
