"""Quantized checkpoints: ``mistral-np quantize SRC DST`` writes them, ``load_model(DST)`` reads them.

A quantized folder holds::

    config.json                     the source's (or, for a consolidated source, the equivalent HF one)
    tokenizer files, sentence-transformers files      copied from the source
    model.quantized.safetensors     one entry per tensor: U8 (out, in/32 * bytes per block) ggml blocks
                                    for quantized matrices, F32 for the rest (norms)
    quantization.json               the manifest: format and version, each tensor's type and shape,
                                    which stayed float, SHA-256 of the source files; written last

Which type each tensor gets (``choose_type``): with ``--type q4_0`` every matrix is Q4_0 except the
LM head (the embedding table when the head is tied to it), which is Q8_0 because 4 bits on the output
projection cost the most quality (llama.cpp also keeps its output tensor at higher precision); norms
stay float32. ``--type q8_0`` makes every matrix
Q8_0. q and k rows are stored in the HF half-split order (a consolidated source is permuted first).

The conversion streams: one source tensor is read from the memory map, converted to float32,
quantized and written before the next is touched, so peak memory is about one float32 matrix. The
whole output is built in a temporary folder beside DST and renamed into place at the end; an
interrupted run leaves only ``DST.partial-*``, which ``load_model`` refuses.

next: quant/q4_0.py (the block format) and quant/kernels.py (the matmuls).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from .checkpoint import open_checkpoint
from .config import ConfigError, from_hf_dict, read_json
from .fetch import sha256_of
from .params import build_params, expected_shapes
from .rope import permute_to_half_split
from .safetensors_io import SafetensorsFile, WeightsError, to_dtype, write_streaming

FORMAT, FORMAT_VERSION = "mistral_np.quantized", 1
MANIFEST, WEIGHTS = "quantization.json", "model.quantized.safetensors"
BLOCK = {"q4_0": (32, 18), "q8_0": (32, 34)}     # elements, bytes per block (ggml)
_SKIP_COPY = (".safetensors", ".bin", ".pth", ".gguf", ".pt", ".index.json")


def choose_type(name: str, shape: tuple, qtype: str, tied: bool = False) -> str:
    """f32 for vectors; the output projection (lm_head, or embed_tokens when tied) stays at Q8_0."""
    if len(shape) == 1:
        return "f32"
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    if name == head and qtype == "q4_0":
        return "q8_0"
    return qtype


def packed_shape(shape: tuple, t: str) -> tuple:
    if t == "f32":
        return tuple(shape)
    n, nbytes = BLOCK[t]
    return (shape[0], shape[1] // n * nbytes)


def _quantizer(t: str):
    from .quant.quantize_kernels import quantize_q4_0, quantize_q8_0
    return {"q4_0": quantize_q4_0, "q8_0": quantize_q8_0}[t]


def quantize_checkpoint(src: str, dst: str, qtype: str = "q4_0", progress: bool | None = None,
                        force: bool = False) -> dict:
    """Quantize an HF or consolidated folder ``src`` into a new folder ``dst``; returns the manifest."""
    if qtype not in BLOCK:
        raise ValueError(f"unknown quantization type {qtype!r}; choose q4_0 or q8_0")
    if os.path.exists(dst) and not force:
        raise ValueError(f"{dst} already exists (pass --force to replace it)")
    fmt, cfg, named, headless, permute = open_checkpoint(src)
    for name, (st, key) in named.items():
        shape = st.shape(key)
        if len(shape) == 2 and shape[1] % 32:
            raise WeightsError(f"{st.path}: tensor {key!r} has {shape[1]} columns, not a multiple of the "
                               "32-element quantization block")
    parent = os.path.dirname(os.path.abspath(dst)) or "."
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    try:
        _copy_side_files(src, tmp, cfg, fmt)
        types = {n: choose_type(n, st.shape(k), qtype, cfg.tie_word_embeddings) for n, (st, k) in named.items()}
        entries = [(n, "U8" if types[n] != "f32" else "F32", packed_shape(named[n][0].shape(named[n][1]), types[n]))
                   for n in named]

        def produce(name):
            st, key = named[name]
            w = to_dtype(st.raw(key), st.dtype(key), np.float32)
            if permute and name.endswith(("q_proj.weight", "k_proj.weight")):
                heads = cfg.num_attention_heads if name.endswith("q_proj.weight") else cfg.num_key_value_heads
                w = permute_to_half_split(w, heads)
            if types[name] == "f32":
                return np.ascontiguousarray(w, dtype=np.float32)
            return _quantizer(types[name])(np.ascontiguousarray(w), name=f"{st.path}:{key}")

        bar = _progress(len(entries), progress)
        write_streaming(os.path.join(tmp, WEIGHTS), entries, produce,
                        metadata={"format": FORMAT, "format_version": FORMAT_VERSION}, on_tensor=lambda _: bar.update(1))
        bar.close()
        source_files = sorted({st.path for st, _ in named.values()})
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "qtype": qtype,
            "tensors": {n: {"type": types[n], "shape": list(named[n][0].shape(named[n][1]))} for n in named},
            "float_tensors": sorted(n for n in named if types[n] == "f32"),
            "source": {"format": fmt, "files": {os.path.basename(p): sha256_of(p) for p in source_files}},
            "seconds": round(time.time() - t0, 1),
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _copy_side_files(src: str, dst: str, cfg, fmt: str) -> None:
    for entry in os.listdir(src):
        s = os.path.join(src, entry)
        if entry in (MANIFEST, "params.json") or entry.endswith(_SKIP_COPY) or entry.startswith("."):
            continue
        if os.path.isdir(s):
            if all(f.endswith(".json") for f in os.listdir(s)):  # sentence-transformers module configs
                shutil.copytree(s, os.path.join(dst, entry))
        else:
            shutil.copy2(s, os.path.join(dst, entry))
    if fmt != "hf-safetensors":  # a consolidated source: write the equivalent HF config.json
        with open(os.path.join(dst, "config.json"), "w") as f:
            json.dump(cfg.to_hf_dict(), f, indent=1)


def _progress(total: int, show):
    import sys
    from tqdm import tqdm
    disable = (not sys.stderr.isatty()) if show is None else not show
    return tqdm(total=total, unit="tensor", desc="quantizing", disable=disable, file=sys.stderr)


def is_quantized_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST))


def load_quantized(folder: str, dtype=np.float32) -> tuple:
    """A quantized folder -> (config, params): quantized tensors stay quantized, memory-mapped."""
    from .quant.tensor import from_packed
    manifest_path = os.path.join(folder, MANIFEST)
    man = read_json(manifest_path)
    if man.get("format") != FORMAT or man.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{manifest_path}: not a mistral_np quantized checkpoint of format version "
                          f"{FORMAT_VERSION} (found {man.get('format')!r} v{man.get('format_version')!r})")
    cfg_path = os.path.join(folder, "config.json")
    cfg = from_hf_dict(read_json(cfg_path), source=cfg_path)
    st = SafetensorsFile(os.path.join(folder, WEIGHTS))
    want = expected_shapes(cfg)
    for name in want:
        if name not in man["tensors"] and not (name == "lm_head.weight"):
            raise WeightsError(f"{manifest_path}: missing tensor {name!r}")
    tensors = {}
    for name, info in man["tensors"].items():
        if name not in want or tuple(info["shape"]) != want[name]:
            raise WeightsError(f"{manifest_path}: tensor {name!r} {info['shape']} does not fit the config "
                               f"(expected {list(want.get(name, ())) or 'no such tensor'})")
        if name not in st.tensors:
            raise WeightsError(f"{st.path}: missing tensor {name!r} listed in {MANIFEST}")
        t, shape = info["type"], tuple(info["shape"])
        if st.shape(name) != packed_shape(shape, t):
            raise WeightsError(f"{st.path}: tensor {name!r} has shape {list(st.shape(name))}, expected "
                               f"{list(packed_shape(shape, t))} for {t} {list(shape)}")
        raw = st.raw(name)
        tensors[name] = to_dtype(raw, "F32", dtype) if t == "f32" else from_packed(t, raw, shape, name=name)
    headless = "lm_head.weight" not in tensors and not cfg.tie_word_embeddings
    return cfg, build_params(cfg, tensors, allow_missing_head=headless)


def quality_report(reference, quantized, ids: np.ndarray) -> dict:
    """How far a quantized model's next-token distributions are from the float model's on ``ids``.

    KL(p_float || p_quant) per position (nats; mean and max), top-1 agreement, and the perplexity of
    ``ids`` under each model (each position predicting the next token)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size < 2:
        raise ValueError("the quality report needs a text of at least 2 tokens")
    lp = _log_softmax(reference.forward(ids).astype(np.float64))       # (T, V)
    lq = _log_softmax(quantized.forward(ids).astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)                       # (T,)
    nxt = ids[1:]
    ppl_p = float(np.exp(-np.mean(lp[np.arange(len(nxt)), nxt])))
    ppl_q = float(np.exp(-np.mean(lq[np.arange(len(nxt)), nxt])))
    return {"tokens": int(ids.size), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agreement": float(np.mean(lp.argmax(-1) == lq.argmax(-1))),
            "ppl_float": ppl_p, "ppl_quantized": ppl_q, "ppl_change": ppl_q / ppl_p - 1.0}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
