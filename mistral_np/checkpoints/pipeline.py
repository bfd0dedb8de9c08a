"""The one loading pipeline: any ``Checkpoint`` (source.py) -> model parameters, strictly.

    check_tensors(ckpt)        every expected tensor present with its shape, nothing else: all problems
                               reported together, naming the file, the tensor, the expected and found shape
    read_float(ckpt, name)     one tensor as a float array in the compute dtype, q/k rows permuted from the
                               interleaved RoPE layout when the format stores them so (docs/references.md#rope)
    load_params(ckpt, dtype)   the whole ModelParams, under one memory policy:

Memory policy (``fits_in_memory``): float weights are converted to the compute dtype at load when all of
them together take at most half of the memory available now (MemAvailable); otherwise each float matrix is
kept in its stored dtype, memory-mapped, and converted when used (``LazyWeight``), so a 7B BF16 checkpoint
(29 GB as float32) still loads on a 24 GB machine, slowly; quantizing it is the fast way. A tensor already
stored in the compute dtype is used in place, never copied. Block-quantized tensors stay packed for float32
(their kernels multiply float activations, losslessly) and are dequantized at load for float64 (exact: the
dequantized values are what the file means).

tests/test_checkpoint.py checks the strictness (a missing, misshapen or unexpected tensor named with its file),
the q/k permutation (a consolidated folder permuted by llama.cpp's formula loads to bit-identical logits) and
BF16 weights converted on use when memory is short (tests/test_gguf.py: F16); tests/test_hardening.py checks
the warning for a NaN weight and the refusal of a non-finite block scale.

next: hf.py, consolidated.py, gguf.py, quantized.py (the readers).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import CheckpointError, NonFiniteWeightWarning
from ..model.params import ModelParams, build_params, expected_shapes
from ..model.rope import permute_to_half_split
from .safetensors import to_dtype
from .source import BLOCK_KINDS, FLOAT_KINDS, Checkpoint

_SHOWN = 3  # problems of each kind named in the one-line message


# The config fields behind each axis of a tensor's expected shape, and how each format's config spells them: a
# tensor whose shape disagrees with the config names them (the config may be what is wrong, not the tensor).
_D, _Q, _KV = ("hidden_size",), ("num_attention_heads", "head_dim"), ("num_key_value_heads", "head_dim")
_F, _V = ("intermediate_size",), ("vocab_size",)
_AXES = {"embed_tokens": (_V, _D), "lm_head": (_V, _D), "norm": (_D,), "q_proj": (_Q, _D), "k_proj": (_KV, _D),
         "v_proj": (_KV, _D), "o_proj": (_D, _Q), "gate_proj": (_F, _D), "up_proj": (_F, _D), "down_proj": (_D, _F)}
_SPELLING = {
    "mistral-consolidated": ("params.json", {"hidden_size": "dim", "intermediate_size": "hidden_dim",
                                             "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
                                             "num_hidden_layers": "n_layers"}),
    "gguf": ("metadata", {"hidden_size": "{a}.embedding_length", "intermediate_size": "{a}.feed_forward_length",
                          "num_attention_heads": "{a}.attention.head_count",
                          "num_key_value_heads": "{a}.attention.head_count_kv",
                          "head_dim": "{a}.rope.dimension_count", "vocab_size": "{a}.vocab_size",
                          "num_hidden_layers": "{a}.block_count"}),
}


def _config_file(ckpt: Checkpoint) -> str:
    return _SPELLING.get(ckpt.format, ("config.json", {}))[0]


def _config_field(ckpt: Checkpoint, field: str) -> str:
    """``field`` of MistralConfig as ``ckpt``'s config file spells it."""
    arch = ckpt.metadata.get("general.architecture", "llama") if ckpt.format == "gguf" else ""
    return _SPELLING.get(ckpt.format, ("config.json", {}))[1].get(field, field).format(a=arch)


def _shape_fields(ckpt: Checkpoint, name: str, shape: tuple, want: tuple) -> str:
    """' (params.json: n_kv_heads * head_dim = 4 * 16)': the config fields behind the axes that disagree."""
    leaf = name.split(".")[-2]
    axes = _AXES.get("norm" if leaf.endswith("layernorm") else leaf, ())
    parts = [" * ".join(_config_field(ckpt, f) for f in fields) + " = " +
             " * ".join(str(getattr(ckpt.config, f)) for f in fields)
             for i, fields in enumerate(axes) if len(shape) != len(want) or shape[i] != want[i]]
    return f" ({_config_file(ckpt)}: {', '.join(parts)})" if parts else ""


def check_tensors(ckpt: Checkpoint) -> None:
    """Raise one error (``ckpt``'s format's class) listing every missing, unexpected and misshapen tensor."""
    cfg, tensors = ckpt.config, ckpt.tensors
    want = expected_shapes(cfg)
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)       # some tied checkpoints still store a copy; the tie wins
    missing = [n for n in want if n not in tensors and not (n == "lm_head.weight" and ckpt.head_optional)]
    problems = []
    for n in missing[:_SHOWN]:
        spelled = ckpt.spell(n)
        hf = f"HF {n}, " if spelled != n else ""
        problems.append(f"missing tensor {spelled!r} ({hf}expected shape {list(want[n])}) in "
                        f"{', '.join(ckpt.files) or ckpt.path}")
    if len(missing) > _SHOWN:
        problems.append(f"{len(missing) - _SHOWN} more missing")
    unexpected = [n for n in tensors if n not in want]
    for n in unexpected[:_SHOWN]:
        t = tensors[n]
        problems.append(f"{t.file}: unexpected tensor {t.key!r} for this config ({_config_file(ckpt)}: "
                        f"{_config_field(ckpt, 'num_hidden_layers')} = {cfg.num_hidden_layers})")
    if len(unexpected) > _SHOWN:
        problems.append(f"{len(unexpected) - _SHOWN} more unexpected")
    misshapen = [n for n in tensors if n in want and tuple(tensors[n].shape) != want[n]]
    for n in misshapen[:_SHOWN]:
        t = tensors[n]
        problems.append(f"{t.file}: tensor {t.key!r} has shape {list(t.shape)}, expected {list(want[n])} from "
                        f"the config{_shape_fields(ckpt, n, tuple(t.shape), want[n])}")
    if len(misshapen) > _SHOWN:
        problems.append(f"{len(misshapen) - _SHOWN} more with the wrong shape")
    for n, t in tensors.items():
        if t.dtype not in FLOAT_KINDS + BLOCK_KINDS:
            problems.append(f"{t.file}: tensor {t.key!r} has type {t.dtype}, which mistral_np does not read "
                            f"(supported: {', '.join(FLOAT_KINDS + BLOCK_KINDS)})")
            break
    if problems:
        raise ckpt.error("; ".join(problems))


def _rope_heads(ckpt: Checkpoint, name: str) -> int | None:
    """Heads to permute over if ``name`` is a q/k projection stored in the interleaved layout, else None."""
    if ckpt.rope_layout != "interleaved":
        return None
    if name.endswith("self_attn.q_proj.weight"):
        return ckpt.config.num_attention_heads
    if name.endswith("self_attn.k_proj.weight"):
        return ckpt.config.num_key_value_heads
    return None


def read_stored(ckpt: Checkpoint, name: str) -> np.ndarray:
    """A tensor's stored data (floats as stored, or packed blocks), q/k rows in the half-split order."""
    raw = ckpt.tensors[name].read()
    heads = _rope_heads(ckpt, name)
    if heads is not None:                          # packed rows move whole: blocks run along the input axis
        raw = permute_to_half_split(np.asarray(raw), heads)
    return raw


def read_float(ckpt: Checkpoint, name: str, dtype=np.float32) -> np.ndarray:
    """A tensor as a float array in ``dtype`` (block-quantized tensors dequantized), half-split q/k rows."""
    t = ckpt.tensors[name]
    raw = read_stored(ckpt, name)
    if t.dtype in BLOCK_KINDS:
        from ..quant.tensor import from_packed
        return from_packed(t.dtype, raw, t.shape, name=t.key).dequantize().astype(dtype, copy=False)
    return to_dtype(raw, t.dtype, dtype)


def first_non_finite(ckpt: Checkpoint, name: str, rows_per_step: int = 4096) -> tuple | None:
    """Index of the first NaN/Inf in a tensor (block scales included), a few rows at a time (low memory)."""
    t = ckpt.tensors[name]
    raw = t.read()
    if t.dtype in BLOCK_KINDS:
        from ..quant.tensor import from_packed
        packed = from_packed(t.dtype, raw, t.shape, name=t.key)
        rows_of = lambda r0, r1: packed.take_rows(np.arange(r0, r1))          # noqa: E731
    else:
        rows = raw if raw.ndim > 1 else raw[None]
        rows_of = lambda r0, r1: to_dtype(rows[r0:r1], t.dtype, np.float32)   # noqa: E731
    n_rows = t.shape[0] if len(t.shape) > 1 else 1
    for r0 in range(0, n_rows, rows_per_step):
        bad = np.argwhere(~np.isfinite(rows_of(r0, min(n_rows, r0 + rows_per_step))))
        if bad.size:
            idx = bad[0].copy()
            idx[0] += r0
            return tuple(int(i) for i in (idx if len(t.shape) > 1 else idx[1:]))
    return None


def _block_weight(t, raw: np.ndarray, dtype):
    """A packed quantized tensor (float32) or its dequantization (float64); non-finite scales refused."""
    from ..quant.common import non_finite_scale
    from ..quant.tensor import TENSOR_TYPES, from_packed
    cls = TENSOR_TYPES[t.dtype]
    rows = np.asarray(raw).reshape(t.shape[0], -1)
    bad = non_finite_scale(rows, cls.block_bytes, cls.scale_offsets)
    if bad is not None:
        raise CheckpointError(f"{t.file}: tensor {t.key!r} ({t.dtype}): block {bad[1]} of row {bad[0]} has a "
                              "non-finite scale (NaN or Inf): the file is corrupt")
    packed = from_packed(t.dtype, raw, t.shape, name=t.key)
    return packed if dtype == np.float32 else packed.dequantize().astype(dtype)


def warn_non_finite(w: np.ndarray, t) -> None:
    """One warning naming the tensor if it holds NaN or Inf (cheap: one pass, at load)."""
    if not np.isfinite(w).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(w))[0])
        warnings.warn(f"{t.file}: tensor {t.key!r} holds a non-finite value (NaN or Inf) at index {bad}; the "
                      "model's outputs will not be finite (mistral-np info --check lists every such tensor)",
                      NonFiniteWeightWarning, stacklevel=4)


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; 8 GiB when the system does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def fits_in_memory(nbytes: int) -> bool:
    """The memory policy: True if ``nbytes`` take at most half of the memory available now."""
    return nbytes <= available_memory() // 2


class LazyWeight:
    """A float matrix kept in its stored dtype (a memory map) and converted to the compute dtype on use; its
    first use checks it for NaN/Inf (the at-load check would defeat the laziness)."""

    def __init__(self, raw: np.ndarray, st_dtype: str, dtype, name: str, file: str = "?"):
        self.raw, self.st_dtype, self.dtype, self.name, self.file = raw, st_dtype, np.dtype(dtype), name, file
        self.shape = tuple(raw.shape)
        self.nbytes = int(raw.nbytes)
        self._checked = False

    @property
    def key(self) -> str:
        return self.name

    def materialize(self) -> np.ndarray:
        w = to_dtype(self.raw, self.st_dtype, self.dtype)
        if not self._checked:
            self._checked = True
            warn_non_finite(w, self)
        return w

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return x @ self.materialize().T                       # (T, in) -> (T, out), one matrix at a time

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        return to_dtype(self.raw[ids], self.st_dtype, self.dtype)


def load_params(ckpt: Checkpoint, dtype=np.float32) -> ModelParams:
    """Check ``ckpt`` and build its parameters in the compute ``dtype`` (float32 or float64)."""
    dtype = np.dtype(dtype)
    check_tensors(ckpt)
    float_bytes = sum(int(np.prod(t.shape)) * dtype.itemsize for t in ckpt.tensors.values()
                      if t.dtype in FLOAT_KINDS)
    eager = fits_in_memory(float_bytes)
    if not eager:
        warnings.warn(f"{ckpt.path}: the weights in {dtype.name} would take {float_bytes / 1e9:.1f} GB, more than "
                      "half the memory available: each matrix is converted when used (slow). For speed, quantize "
                      "the checkpoint: mistral-np quantize SRC DST", stacklevel=3)
    weights = {}
    for name, t in ckpt.tensors.items():
        raw = read_stored(ckpt, name)
        if t.dtype in BLOCK_KINDS:
            weights[name] = _block_weight(t, raw, dtype)
        elif eager or len(t.shape) == 1 or (np.dtype(raw.dtype) == dtype and t.dtype != "BF16"):
            weights[name] = to_dtype(raw, t.dtype, dtype)
            warn_non_finite(weights[name], t)
        else:
            weights[name] = LazyWeight(raw, t.dtype, dtype, t.key, t.file)
    try:
        return build_params(ckpt.config, weights)
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
