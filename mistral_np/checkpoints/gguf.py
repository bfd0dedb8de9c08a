"""Reader for GGUF files (llama.cpp's single-file format).

gguf_file.py parses the container, checking every count and offset (a GGUF comes from strangers); gguf-py's
reader is the tests' independent one. The container (docs/references.md#gguf; docs/gguf.md)::

    "GGUF" | version u32 (3) | n_tensors u64 | n_kv u64 | n_kv x (key, type, value) |
    n_tensors x (name, n_dims, ne[0..n_dims), type, offset) | padding to general.alignment | tensor data

``ne[0]`` is the *fastest* dimension, so a ``[out, in]`` matrix is listed as ``ne = (in, out)`` and
quantization blocks run along ``in``; the reader gives the rows as ``(out, in)`` floats or, for a block
type, as ``(out, in/32 * block_bytes)`` uint8.

What differs from an HF checkpoint:

* names: ``blk.N.attn_q.weight`` is ``model.layers.N.self_attn.q_proj.weight`` (``GGUF_NAMES``); no
  ``output.weight`` means the head is tied to ``token_embd``;
* q/k rows are in the interleaved (Meta) RoPE order, because llama.cpp's converter permuted them: the
  pipeline permutes them back (``rope_layout="interleaved"``);
* the config comes from ``{arch}.*`` metadata (``config_from_metadata``), the tokenizer from
  ``tokenizer.ggml.*`` (text/gguf_vocab.py);
* weights may be block-quantized: Q8_0 / Q4_0 / Q4_1 are read; other types (Q5_0, K-quants, IQ*) are refused.

Checked against gguf-py and transformers in tests/test_gguf.py (files gguf-py's ``GGUFWriter`` wrote from
tiny random transformers models give transformers' numbers on the weights gguf-py dequantized, and those of
transformers' own GGUF loader) and tests/test_smollm2.py (SmolLM2's real file); tests/test_hardening.py and
tests/test_fuzz.py give it corrupt files.

next: quantized.py.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import ConfigError, GGUFError
from .config_files import MAX_DIM, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, build, check_heads
from .source import BLOCK_KINDS, Checkpoint, StoredTensor, TokenizerSource

SUPPORTED_ARCHITECTURES = ("llama", "mistral")

GGUF_NAMES = {  # GGUF tensor name -> HF name, {n} = layer (gguf-py tensor_mapping.py; docs/references.md#checkpoint-names)
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{n}.attn_norm.weight": "model.layers.{n}.input_layernorm.weight",
    "blk.{n}.attn_q.weight": "model.layers.{n}.self_attn.q_proj.weight",
    "blk.{n}.attn_k.weight": "model.layers.{n}.self_attn.k_proj.weight",
    "blk.{n}.attn_v.weight": "model.layers.{n}.self_attn.v_proj.weight",
    "blk.{n}.attn_output.weight": "model.layers.{n}.self_attn.o_proj.weight",
    "blk.{n}.ffn_norm.weight": "model.layers.{n}.post_attention_layernorm.weight",
    "blk.{n}.ffn_gate.weight": "model.layers.{n}.mlp.gate_proj.weight",
    "blk.{n}.ffn_up.weight": "model.layers.{n}.mlp.up_proj.weight",
    "blk.{n}.ffn_down.weight": "model.layers.{n}.mlp.down_proj.weight",
}
_HF_TO_GGUF = {hf: g for g, hf in GGUF_NAMES.items()}
FLOATS = ("F32", "F16", "BF16")


def open_gguf(path: str):
    """The parsed, checked container (gguf_file.read_gguf_file)."""
    from .gguf_file import read_gguf_file
    return read_gguf_file(os.fspath(path))


def read_metadata(gguf) -> dict:
    """Every metadata key/value pair (arrays as lists)."""
    return gguf.metadata


def config_from_metadata(meta: dict, path: str):
    """``{arch}.*`` keys -> MistralConfig. Only llama and mistral architectures are accepted."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(f"{path}: general.architecture = {arch!r} is not supported "
                        f"(mistral_np reads {', '.join(SUPPORTED_ARCHITECTURES)})")

    def get(key, default=..., kind=int, high=MAX_DIM):
        full = f"{arch}.{key}"
        if full not in meta:
            if default is ...:
                raise GGUFError(f"{path}: missing metadata key {full!r}")
            return default
        v = meta[full]
        if kind is int and not (type(v) is int and 1 <= v <= high):
            raise GGUFError(f"{path}: metadata {full} must be an integer in [1, {high}], got {v!r}")
        if kind is float and not (type(v) in (int, float) and 0 < v < float("inf")):
            raise GGUFError(f"{path}: metadata {full} must be a finite positive number, got {v!r}")
        if kind is str and not isinstance(v, str):
            raise GGUFError(f"{path}: metadata {full} must be a string, got {v!r}")
        return v

    if get("rope.scaling.type", "none", kind=str) != "none":
        raise GGUFError(f"{path}: {arch}.rope.scaling.type = {get('rope.scaling.type', kind=str)!r} is not "
                        "supported (only default RoPE)")
    n_heads, hidden = get("attention.head_count"), get("embedding_length")
    n_kv = get("attention.head_count_kv", n_heads)
    head_dim = get("rope.dimension_count", None) or get("attention.key_length", None)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size", None, high=MAX_VOCAB) or (len(tokens) if isinstance(tokens, list) else None)
    if not vocab:
        raise GGUFError(f"{path}: neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
    window = get("attention.sliding_window", None, high=MAX_POSITIONS)
    source = f"{path}: metadata"
    try:
        head_dim = check_heads(source, hidden, n_heads, n_kv, head_dim,
                               tuple(f"{arch}.{k}" for k in ("embedding_length", "attention.head_count",
                                                            "attention.head_count_kv", "rope.dimension_count")))
        return build(
            source, vocab_size=vocab, hidden_size=hidden, intermediate_size=get("feed_forward_length"),
            num_hidden_layers=get("block_count", high=MAX_LAYERS), num_attention_heads=n_heads,
            num_key_value_heads=n_kv, head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", kind=float)),
            rope_theta=float(get("rope.freq_base", 10000.0, kind=float)),            # llama.cpp's default
            sliding_window=window, max_position_embeddings=get("context_length", high=MAX_POSITIONS),
            tie_word_embeddings=False,                                  # set from the tensors by read_gguf
            bos_token_id=_token_id(meta, "bos", vocab), eos_token_id=_token_id(meta, "eos", vocab),
            model_type="mistral" if arch == "mistral" or window is not None else "llama")
    except ConfigError as e:
        raise GGUFError(str(e)) from None


def _token_id(meta: dict, which: str, vocab: int):
    v = meta.get(f"tokenizer.ggml.{which}_token_id")
    return v if type(v) is int and 0 <= v < vocab else None


def _rename(name: str, table: dict, layer_prefix: str) -> str | None:
    """Look ``name`` up in a name table whose per-layer entries are spelled with ``{n}``."""
    m = re.fullmatch(re.escape(layer_prefix) + r"(\d+)\.(.+)", name)
    key = f"{layer_prefix}{{n}}.{m.group(2)}" if m else name
    found = table.get(key)
    return None if found is None else found.format(n=m.group(1) if m else "")


def hf_name(gguf_name: str, path: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    hf = _rename(gguf_name, GGUF_NAMES, "blk.")
    if hf is None:
        raise GGUFError(f"{path}: unexpected tensor {gguf_name!r} (not part of a llama/mistral model "
                        "that mistral_np reads)")
    return hf


def gguf_name(hf: str) -> str:
    """The inverse of ``hf_name`` (for messages)."""
    return _rename(hf, _HF_TO_GGUF, "model.layers.") or hf


_FLOAT_STORAGE = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}   # BF16 as its bits


def _stored(gguf, t) -> StoredTensor:
    shape = t.shape                                              # ne[0] is the fastest dim: reversed
    if t.type_name in _FLOAT_STORAGE:
        read = lambda t=t, shape=shape: gguf.data(t).view(_FLOAT_STORAGE[t.type_name]).reshape(shape)
    else:
        read = lambda t=t: gguf.data(t)                          # (rows, row bytes) uint8 ggml blocks
    return StoredTensor(file=gguf.path, key=t.name, shape=shape, dtype=t.type_name, nbytes=t.nbytes, read=read)


def read_gguf(path: str) -> Checkpoint:
    """A GGUF file -> Checkpoint (config from the metadata, tensors by HF name, tokenizer metadata)."""
    path = os.fspath(path)
    gguf = open_gguf(path)
    meta = gguf.metadata
    cfg = config_from_metadata(meta, path)
    tensors = {}
    for t in gguf.tensors:
        name = hf_name(t.name, path)
        tensors[name] = _stored(gguf, t)
        if tensors[name].dtype in BLOCK_KINDS and len(tensors[name].shape) != 2:
            raise GGUFError(f"{path}: tensor {t.name!r} is {tensors[name].dtype} but has "
                            f"{len(tensors[name].shape)} dimensions (block types need a matrix)")
    cfg = cfg.replace(tie_word_embeddings="lm_head.weight" not in tensors)
    has_vocab = meta.get("tokenizer.ggml.model") is not None and "tokenizer.ggml.tokens" in meta
    return Checkpoint(format="gguf", path=path, config=cfg, tensors=tensors, rope_layout="interleaved",
                      tokenizer=TokenizerSource("gguf", path, meta) if has_vocab else None,
                      metadata=meta, spell=gguf_name, error=GGUFError)
