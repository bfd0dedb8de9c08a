"""The public entry points: ``load_model``, ``load_tokenizer``, and the ``Model`` they return.

    model = load_model(path)                     a .gguf file, or an HF, consolidated or quantized folder
    logits = model.forward(ids)                  (T, V): the float path, no cache, every token at once
    logits, trace = model.forward(ids, trace=True)       and every named intermediate (model/trace.py)
    for piece in model.generate("Once upon", max_new_tokens=32): ...
    for piece in model.chat([{"role": "user", "content": "Hi"}]): ...
    tok = load_tokenizer(path)                   whatever load_model accepts, or a tokenizer file

``Model`` ties a config, its parameters and its tokenizer to the model maths (mistral_np.model) and to
generation (mistral_np.generation); it holds no maths of its own.

It is checked against transformers through its callers: tests/test_model.py compares ``Model.forward`` with
transformers at every traced intermediate, tests/test_generate.py compares ``generate`` with transformers' greedy
decoding, tests/test_smollm2.py does both on a real GGUF file, and tests/test_gguf_tokenizers.py checks that
``load_tokenizer`` gives the model's own tokenizer for every kind of path.

next: errors.py.
"""

from __future__ import annotations

import os

import numpy as np

from .checkpoints import load_params, open_checkpoint
from .checkpoints.source import TokenizerSource
from .errors import InvalidArgumentError, TokenizerError
from .generation.loop import check_token_ids, generate_chat, generate_ids, generate_text
from .model.config import MistralConfig
from .model.forward import forward
from .model.params import ModelParams
from .model.trace import NO_TRACE, Trace
from .text.tokenizer import Tokenizer, has_tokenizer

COMPUTE_DTYPES = (np.float32, np.float64)


def _compute_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InvalidArgumentError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in COMPUTE_DTYPES:
        raise InvalidArgumentError(f"compute dtype must be float32 or float64, got {dtype}")
    return dtype


class Model:
    """A loaded checkpoint: ``config``, ``params``, compute ``dtype``, and its ``tokenizer`` (or None)."""

    def __init__(self, config: MistralConfig, params: ModelParams, dtype=np.float32, tokenizer=None,
                 source: str | None = None):
        self.config, self.params, self.dtype = config, params, _compute_dtype(dtype)
        self.tokenizer, self.source = tokenizer, source
        self.last_stats = None  # GenerationStats of the last generate/chat call

    def forward(self, token_ids, trace: bool = False):
        """Logits (T, V) for a 1-D array of token ids, no cache; with ``trace=True`` also a dict of every
        named intermediate (model/trace.py lists them), returned as ``(logits, trace)``."""
        ids = check_token_ids(token_ids, self.config.vocab_size)
        if self.params.lm_head is None:
            raise InvalidArgumentError("this checkpoint has no lm_head (an embedding model): use "
                                       "mistral_np.load_embedder")
        recorder = Trace() if trace else NO_TRACE
        logits = forward(self.params, self.config, ids, dtype=self.dtype, trace=recorder)
        return (logits, recorder.tensors) if trace else logits

    def generate(self, prompt, **kwargs):
        """Generator of text pieces continuing ``prompt`` (a string, encoded with BOS, or a list of ids used
        as given). Keywords: max_new_tokens=256, temperature=0.0 (greedy), top_k=0, top_p=1.0,
        repetition_penalty=1.0, seed=None, stop=None (strings), stop_ids=None (EOS), chunk_size=None (W),
        prompt_activations="auto" ("auto", "int8" or "float"), decode_activations="int8" ("int8" or "float"):
        for quantized weights, see generation/loop.py.
        Counts and timings afterwards in ``self.last_stats``."""
        return generate_text(self, prompt, **kwargs)

    def generate_ids(self, prompt_ids, **kwargs):
        """Generator of new token ids (no tokenizer needed); same keywords as ``generate`` except ``stop``."""
        return generate_ids(self, prompt_ids, **kwargs)

    def chat(self, messages, fmt=None, **kwargs):
        """Generator of the next answer's text pieces for ``[{"role", "content"}, ...]``, encoded with the
        tokenizer's chat template if it has one, else Mistral's format (text/chat.py); keywords as ``generate``."""
        return generate_chat(self, messages, fmt=fmt, **kwargs)

    def __repr__(self):
        c = self.config
        return (f"Model({c.model_type}, L={c.num_hidden_layers}, D={c.hidden_size}, H={c.num_attention_heads}, "
                f"K={c.num_key_value_heads}, W={c.sliding_window}, dtype={self.dtype}, source={self.source!r})")


def load_model(path, dtype=np.float32) -> Model:
    """Load a checkpoint for inference in ``dtype`` (float32, or float64 for golden values)."""
    dtype = _compute_dtype(dtype)
    ckpt = open_checkpoint(path)
    params = load_params(ckpt, dtype)
    return Model(ckpt.config, params, dtype=dtype, tokenizer=tokenizer_from_source(ckpt.tokenizer),
                 source=ckpt.path)


def tokenizer_from_source(source: TokenizerSource | None) -> Tokenizer | None:
    """A checkpoint's tokenizer: a GGUF file's vocabulary, or a folder's tokenizer files; None if there is none."""
    if source is None:
        return None
    if source.kind == "gguf":
        from .text.gguf_vocab import tokenizer_from_metadata
        return tokenizer_from_metadata(source.metadata, source.path)
    from .text.tokenizer import load_tokenizer as load_folder_tokenizer
    return load_folder_tokenizer(source.path) if has_tokenizer(source.path) else None


def _is_gguf(path: str) -> bool:
    """A .gguf name, or a file that starts with GGUF's magic (b"GGUF")."""
    if path.endswith(".gguf"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer of anything ``load_model`` accepts (a .gguf file, a checkpoint folder), or of a
    tokenizer file (tokenizer.json, tokenizer.model[.vN], tekken.json) or a folder holding one.

    GGUF: the vocabulary in its ``tokenizer.ggml.*`` metadata (text/gguf_vocab.py), the same object
    ``load_model(path).tokenizer`` is; a folder: tekken.json, then tokenizer.json, then a sentencepiece model
    (text/tokenizer.py ``load_tokenizer``)."""
    from .checkpoints import resolve_model_path
    from .text.tokenizer import load_tokenizer as load_file_tokenizer
    path = resolve_model_path(path)
    if os.path.isfile(path) and _is_gguf(path):
        from .checkpoints.gguf import open_gguf, read_metadata
        tok = tokenizer_from_source(TokenizerSource("gguf", path, read_metadata(open_gguf(path))))
        if tok is None:
            raise TokenizerError(f"{path}: this GGUF file carries no tokenizer (no tokenizer.ggml.* metadata)")
        return tok
    return load_file_tokenizer(path)
