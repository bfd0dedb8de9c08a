"""Loading checkpoints from disk into ``ModelParams``, strictly.

Understood layouts (weights/README.md says where to get each):

* HF folder: ``config.json`` + ``model.safetensors`` or ``model.safetensors.index.json`` with its
  shards. Keys with the ``model.`` prefix (``MistralForCausalLM``) or without it (an embedding model
  saved as ``MistralModel``, which also has no ``lm_head``).
* Mistral's consolidated folder: ``params.json`` + ``consolidated.safetensors``. Names are mapped to
  HF names (``CONSOLIDATED_NAMES``) and wq/wk are permuted from the interleaved RoPE layout to the
  half-split one (rope.py, SPEC.md §3.3).

Every expected tensor must be present with its expected shape and no tensor may be left over; the
error names the tensor, the file and both shapes. Files are memory-mapped. A tensor whose stored dtype
is the compute dtype is used in place (no copy); others (BF16, F16) are converted to the compute dtype
at load when the converted model fits comfortably in memory, and otherwise wrapped in a ``LazyWeight``
that converts one matrix per use, so a 7B BF16 checkpoint never needs 29 GB of float32 at once.

next: the model files; or __init__.py's ``load_model``, which dispatches to this module.
"""

from __future__ import annotations

import glob
import os
import re
import warnings

import numpy as np

from .config import ConfigError, MistralConfig, from_hf_dict, from_params_dict, read_json
from .params import ModelParams, build_params, expected_shapes
from .rope import permute_to_half_split
from .safetensors_io import SafetensorsFile, WeightsError, to_dtype


class LazyWeight:
    """A weight kept in its stored dtype (BF16/F16 memmap) and converted to the compute dtype on use."""

    def __init__(self, raw: np.ndarray, st_dtype: str, dtype, name: str):
        self.raw, self.st_dtype, self.dtype, self.name = raw, st_dtype, np.dtype(dtype), name
        self.shape = tuple(raw.shape)

    def materialize(self) -> np.ndarray:
        return to_dtype(self.raw, self.st_dtype, self.dtype)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        return x @ self.materialize().T                       # (T, in) -> (T, out), one matrix at a time

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        return to_dtype(self.raw[ids], self.st_dtype, self.dtype)


CONSOLIDATED_NAMES = [  # Mistral original name (regex) -> HF name
    (r"tok_embeddings\.weight", "model.embed_tokens.weight"),
    (r"norm\.weight", "model.norm.weight"),
    (r"output\.weight", "lm_head.weight"),
    (r"layers\.(\d+)\.attention_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"layers\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"layers\.(\d+)\.attention\.wq\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"layers\.(\d+)\.attention\.wk\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"layers\.(\d+)\.attention\.wv\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"layers\.(\d+)\.attention\.wo\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"layers\.(\d+)\.feed_forward\.w1\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"layers\.(\d+)\.feed_forward\.w2\.weight", r"model.layers.\1.mlp.down_proj.weight"),
    (r"layers\.(\d+)\.feed_forward\.w3\.weight", r"model.layers.\1.mlp.up_proj.weight"),
]
_IGNORED_TENSORS = re.compile(r".*\.rotary_emb\.inv_freq$")  # a buffer old transformers versions saved


def _hf_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            weight_map = read_json(index)["weight_map"]
        except (KeyError, TypeError):
            raise WeightsError(f"{index}: no 'weight_map' object") from None
        files = sorted(set(weight_map.values()))
        for f in files:
            if not os.path.exists(os.path.join(folder, f)):
                raise WeightsError(f"{index}: lists shard {f}, which is missing from {folder}")
        return [os.path.join(folder, f) for f in files]
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return [single]
    found = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not found:
        raise WeightsError(f"{folder}: no model.safetensors, model.safetensors.index.json or *.safetensors file")
    return found


def _collect(files: list[str]) -> dict[str, tuple[SafetensorsFile, str]]:
    """tensor name -> (file, name in file), refusing a name that two files both hold."""
    where = {}
    for path in files:
        st = SafetensorsFile(path)
        for name in st.keys():
            if name in where:
                raise WeightsError(f"tensor {name!r} appears in both {where[name][0].path} and {path}")
            where[name] = (st, name)
    return where


def _hf_names(where: dict, cfg_dict: dict) -> tuple[dict, bool]:
    """Give every tensor its ``model.``-prefixed HF name. Returns (mapping, lm_head_optional)."""
    bare = not any(n.startswith("model.") for n in where)
    out = {}
    for name, v in where.items():
        if _IGNORED_TENSORS.match(name):
            continue
        out[name if (not bare or name == "lm_head.weight") else "model." + name] = v
    arch = cfg_dict.get("architectures") or []
    headless = bare or any(not a.endswith("ForCausalLM") for a in arch)
    return out, headless


def _consolidated_names(where: dict, cfg: MistralConfig) -> dict:
    out = {}
    for name, v in where.items():
        for pattern, hf in CONSOLIDATED_NAMES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, hf, name)] = v
                break
        else:
            raise WeightsError(f"{v[0].path}: unexpected tensor {name!r} in a consolidated checkpoint")
    return out


def _check_names_and_shapes(named: dict, cfg: MistralConfig, headless: bool) -> None:
    want = expected_shapes(cfg)
    if cfg.tie_word_embeddings:
        named.pop("lm_head.weight", None)   # some tied checkpoints still store a copy; the tie wins
    missing = [n for n in want if n not in named and not (headless and n == "lm_head.weight")]
    if missing:
        files = sorted({st.path for st, _ in named.values()})
        raise WeightsError(f"missing tensor {missing[0]!r} (expected shape {list(want[missing[0]])}) "
                           f"in {', '.join(files)}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, (st, key) in named.items():
        if name not in want:
            raise WeightsError(f"{st.path}: unexpected tensor {key!r} for this config")
        if st.shape(key) != want[name]:
            raise WeightsError(f"{st.path}: tensor {key!r} has shape {list(st.shape(key))}, "
                               f"expected {list(want[name])} from the config")
        if st.dtype(key) not in ("F32", "F16", "BF16", "F64"):
            raise WeightsError(f"{st.path}: tensor {key!r} has dtype {st.dtype(key)}; expected F32, F16 or BF16")


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _materialize(named: dict, cfg: MistralConfig, dtype, permute: bool) -> dict:
    dtype = np.dtype(dtype)
    total = sum(int(np.prod(st.shape(k))) for st, k in named.values()) * dtype.itemsize
    eager = total <= _available_bytes() // 2
    if not eager:
        warnings.warn(f"the weights in {np.dtype(dtype).name} would take {total / 1e9:.1f} GB, more than half the "
                      "memory available: each matrix is converted when used (slow). For speed, quantize the "
                      "checkpoint: mistral-np quantize SRC DST", stacklevel=3)
    out = {}
    for name, (st, key) in named.items():
        raw, sd = st.raw(key), st.dtype(key)
        if permute and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_attention_heads if name.endswith("q_proj.weight") else cfg.num_key_value_heads
            raw = permute_to_half_split(np.asarray(raw), heads)
        if raw.ndim == 1 or eager or np.dtype(raw.dtype) == dtype and sd != "BF16":
            out[name] = to_dtype(raw, sd, dtype)
        else:
            out[name] = LazyWeight(raw, sd, dtype, name)
    return out


def open_checkpoint(folder: str) -> tuple[str, MistralConfig, dict, bool, bool]:
    """Read a folder's config and tensor index, strictly, without loading weights.

    Returns (format, config, {HF name: (SafetensorsFile, name in file)}, headless, permute)."""
    hf_cfg, params_json = os.path.join(folder, "config.json"), os.path.join(folder, "params.json")
    if os.path.exists(hf_cfg):
        d = read_json(hf_cfg)
        cfg = from_hf_dict(d, source=hf_cfg)
        named, headless = _hf_names(_collect(_hf_files(folder)), d)
        permute = False
    elif os.path.exists(params_json):
        cfg = from_params_dict(read_json(params_json), source=params_json)
        files = sorted(glob.glob(os.path.join(folder, "consolidated*.safetensors")))
        if not files:
            if glob.glob(os.path.join(folder, "consolidated*.pth")):
                raise WeightsError(f"{folder}: only consolidated .pth files; mistral_np reads "
                                   "consolidated.safetensors (Mistral publishes both)")
            raise WeightsError(f"{folder}: params.json but no consolidated.safetensors")
        named, headless, permute = _consolidated_names(_collect(files), cfg), False, True
    else:
        raise ConfigError(f"{folder}: not a checkpoint folder (no config.json or params.json)")
    _check_names_and_shapes(named, cfg, headless)
    return ("hf-safetensors" if not permute else "mistral-consolidated"), cfg, named, headless, permute


def load_params(folder: str, dtype=np.float32) -> tuple[MistralConfig, ModelParams]:
    """Read an HF or consolidated folder -> (config, params), strictly."""
    _, cfg, named, headless, permute = open_checkpoint(folder)
    tensors = _materialize(named, cfg, dtype, permute)
    return cfg, build_params(cfg, tensors, allow_missing_head=headless)


def first_non_finite(raw: np.ndarray, st_dtype: str, rows_per_step: int = 4096) -> tuple | None:
    """Index of the first NaN/Inf in a stored tensor, converting a few rows at a time (low memory)."""
    rows = raw if raw.ndim > 1 else raw[None]
    for r0 in range(0, rows.shape[0], rows_per_step):
        bad = np.argwhere(~np.isfinite(to_dtype(rows[r0:r0 + rows_per_step], st_dtype, np.float32)))
        if bad.size:
            idx = bad[0].copy()
            idx[0] += r0
            return tuple(int(i) for i in (idx if raw.ndim > 1 else idx[1:]))
    return None
