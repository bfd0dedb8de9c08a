"""Loading GGUF files (llama.cpp's single-file format) into ``MistralConfig`` + ``ModelParams``.

We let gguf-py's ``GGUFReader`` parse the container (it memory-maps the file and hands back numpy
views); everything that is maths — the RoPE row permutation, block dequantization, the matmuls — stays
ours. The container (SPEC.md §4.3; docs/gguf.md)::

    "GGUF" | version u32 (3) | n_tensors u64 | n_kv u64 | n_kv x (key, type, value) |
    n_tensors x (name, n_dims, ne[0..n_dims), type, offset) | padding to general.alignment | tensor data

``ne[0]`` is the *fastest* dimension, so a ``[out, in]`` matrix is listed as ``ne = (in, out)`` and
quantization blocks run along ``in``; the reader gives the rows as ``(out, in)`` floats or, for a
quantized type, as ``(out, in/32 * block_bytes)`` uint8.

What differs from an HF checkpoint:

* names: ``blk.N.attn_q.weight`` is ``model.layers.N.self_attn.q_proj.weight`` (``GGUF_NAMES``);
  no ``output.weight`` means the head is tied to ``token_embd``;
* q/k rows are in the interleaved (Meta) RoPE order — llama.cpp's converter permuted them — and are
  permuted back with ``rope.permute_to_half_split`` (n_heads for q, n_kv_heads for k). Blocks run
  along the input dimension, so for a quantized q/k the permutation moves whole packed rows;
* F16/BF16 matrices become arrays in the compute dtype, or ``LazyWeight`` objects converted per use when
  that would take more than half the available memory (a 7B F16 file is 28 GB as float32);
* weights may be block-quantized: Q8_0 / Q4_0 / Q4_1 stay packed (``mistral_np.quant.tensor``, over
  the memory map) and are multiplied by its kernels with float activations — losslessly, Q4_1
  included (y = q*d + m). A float64 model dequantizes them at load instead (exact: the dequantized
  values are what the file means). Other types (Q5_0, K-quants, IQ*) are refused.

next: gguf_tokenizer.py (the tokenizer stored in the same file).
"""

from __future__ import annotations

import os
import re

import numpy as np

from .config import ConfigError, MistralConfig
from .params import build_params, expected_shapes
from .rope import permute_to_half_split
from .checkpoint import LazyWeight
from .safetensors_io import WeightsError, to_dtype

SUPPORTED_ARCHITECTURES = ("llama", "mistral")

GGUF_NAMES = {  # GGUF tensor name -> HF name, {n} = layer (gguf-py tensor_mapping.py, SPEC.md §4.3)
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
QUANTIZED = ("Q8_0", "Q4_0", "Q4_1")  # kept packed: mistral_np.quant.tensor.TENSOR_TYPES
FLOATS = ("F32", "F16", "BF16")


class GGUFError(WeightsError):
    """A GGUF file we refuse to load; the message names the file (and the key or tensor)."""


def open_gguf(path: str):
    """gguf-py's reader over a memory map; any parse failure becomes one GGUFError line."""
    from gguf import GGUFReader
    try:
        return GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError, IndexError, struct errors ... on damaged files
        size = os.path.getsize(path) if os.path.exists(path) else 0
        raise GGUFError(f"{path}: not a readable GGUF file ({size} bytes; truncated or corrupt: "
                        f"{type(e).__name__}: {e})") from None


def read_metadata(reader) -> dict:
    """Every key/value pair (arrays as lists); the reader's own GGUF.* bookkeeping fields dropped."""
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def config_from_metadata(meta: dict, path: str) -> MistralConfig:
    """``{arch}.*`` keys -> MistralConfig. Only llama and mistral architectures are accepted."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(f"{path}: general.architecture = {arch!r} is not supported "
                        f"(mistral_np reads {', '.join(SUPPORTED_ARCHITECTURES)})")

    def get(key, default=...):
        if f"{arch}.{key}" in meta:
            return meta[f"{arch}.{key}"]
        if default is ...:
            raise GGUFError(f"{path}: missing metadata key '{arch}.{key}'")
        return default

    if get("rope.scaling.type", "none") not in ("none", None):
        raise GGUFError(f"{path}: {arch}.rope.scaling.type = {get('rope.scaling.type')!r} is not supported "
                        "(only default RoPE)")
    n_heads, hidden = int(get("attention.head_count")), int(get("embedding_length"))
    head_dim = get("rope.dimension_count", None) or get("attention.key_length", None) or hidden // n_heads
    vocab = get("vocab_size", None) or len(meta.get("tokenizer.ggml.tokens") or []) or None
    if vocab is None:
        raise GGUFError(f"{path}: neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
    window = get("attention.sliding_window", None)
    try:
        return MistralConfig(
            vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(get("feed_forward_length")),
            num_hidden_layers=int(get("block_count")), num_attention_heads=n_heads,
            num_key_value_heads=int(get("attention.head_count_kv", n_heads)), head_dim=int(head_dim),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=float(get("rope.freq_base", 10000.0)),            # llama.cpp's default
            sliding_window=None if window is None else int(window),
            max_position_embeddings=int(get("context_length")),
            tie_word_embeddings=False,                                  # set from the tensors by load_gguf
            bos_token_id=_opt_int(meta.get("tokenizer.ggml.bos_token_id")),
            eos_token_id=_opt_int(meta.get("tokenizer.ggml.eos_token_id")),
            model_type="mistral" if arch == "mistral" or window is not None else "llama")
    except ConfigError as e:
        raise GGUFError(f"{path}: {e}") from None


def _opt_int(v):
    return None if v is None else int(v)


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


def _weight(t, shape: tuple, dtype: np.dtype, heads: int | None, lazy: bool, path: str):
    """One tensor of the reader -> an array in ``dtype`` or a packed quantized tensor, HF row order."""
    qtype = t.tensor_type.name
    data = t.data                                                # memmap view, rows = HF rows
    if qtype == "BF16":
        data = np.asarray(data).view(np.uint16)                  # (out, 2*in) u8 -> (out, in) bf16 bits
    elif qtype not in FLOATS and qtype not in QUANTIZED:
        raise GGUFError(f"{path}: tensor {t.name!r} has type {qtype}, which mistral_np does not read "
                        f"(supported: {', '.join(FLOATS + tuple(QUANTIZED))})")
    if heads is not None:                                        # interleaved -> half-split RoPE rows
        data = permute_to_half_split(np.asarray(data), heads)    # packed rows move whole, blocks intact
    if qtype in FLOATS:
        data = np.asarray(data).reshape(shape)
        if lazy and len(shape) == 2 and qtype != "F32":          # too big as float: convert per use
            return LazyWeight(data, qtype, dtype, t.name)
        return to_dtype(data, qtype, dtype)
    from .quant.tensor import TENSOR_TYPES
    packed = TENSOR_TYPES[qtype](data, shape, name=t.name)      # no copy of the memory map
    if dtype == np.float32:
        return packed
    return packed.dequantize().astype(dtype)                     # float64: exact, at load


def _fits_in_memory(nbytes: int) -> bool:
    """True if ``nbytes`` is at most half of the memory currently available."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return True
    return nbytes <= available // 2


def load_gguf(path: str, dtype=np.float32):
    """Read a GGUF file -> (MistralConfig, ModelParams, Tokenizer or None), strictly."""
    from .gguf_tokenizer import tokenizer_from_metadata
    path, dtype = os.fspath(path), np.dtype(dtype)
    reader = open_gguf(path)
    meta = read_metadata(reader)
    cfg = config_from_metadata(meta, path)
    by_name = {}
    for t in reader.tensors:
        name = hf_name(t.name, path)
        if name in by_name:
            raise GGUFError(f"{path}: tensor {t.name!r} appears twice")
        by_name[name] = t
    cfg = cfg.replace(tie_word_embeddings="lm_head.weight" not in by_name)
    want = expected_shapes(cfg)
    missing = [n for n in want if n not in by_name]
    if missing:
        raise GGUFError(f"{path}: missing tensor {gguf_name(missing[0])!r} (HF {missing[0]}, expected shape "
                        f"{list(want[missing[0]])})" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    float_bytes = sum(int(t.n_elements) * dtype.itemsize for t in by_name.values()
                      if t.tensor_type.name in ("F16", "BF16"))
    lazy = not _fits_in_memory(float_bytes)                      # e.g. a 7B F16 file in float32
    tensors = {}
    for name, t in by_name.items():
        if name not in want:
            raise GGUFError(f"{path}: unexpected tensor {t.name!r} for a model with "
                            f"{cfg.num_hidden_layers} layers")
        found = tuple(int(d) for d in reversed(t.shape))         # ne[0] is the fastest dim: reverse it
        if found != want[name]:
            raise GGUFError(f"{path}: tensor {t.name!r} has shape {list(found)}, expected {list(want[name])} "
                            "from the metadata")
        heads = (cfg.num_attention_heads if name.endswith("q_proj.weight") else
                 cfg.num_key_value_heads if name.endswith("k_proj.weight") else None)
        tensors[name] = _weight(t, found, dtype, heads, lazy, path)
    return cfg, build_params(cfg, tensors), tokenizer_from_metadata(meta, path)
