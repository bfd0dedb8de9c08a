"""``mistral-np quantize SRC DST``: write a quantized folder (quantized.py describes it), streaming.

Which type each tensor gets (``choose_type``): with ``--type q4_0`` every matrix is Q4_0 except the
LM head (the embedding table when the head is tied to it), which is Q8_0 because 4 bits on the output
projection cost the most quality (llama.cpp also keeps its output tensor at higher precision); norms
stay float32. ``--type q8_0`` makes every matrix Q8_0. Every source tensor is read through the loading
pipeline, so a consolidated source's q/k rows arrive in the half-split order.

The conversion streams: one source tensor is read from the memory map, converted to float32, quantized
and written before the next is touched, so peak memory is about one float32 matrix. The whole output is
built in a temporary folder beside DST and renamed into place at the end (files.atomic_folder); an
interrupted run leaves only ``.DST.partial-*``, which nothing reads. ``quality_report`` measures what the
quantization cost on a text (KL divergence, top-1 agreement, perplexity).

Checked against gguf-py and transformers in tests/test_quantize.py (a quantized model's intermediates
agree with transformers' run on the same matrices quantized and dequantized by gguf-py), which also
checks that an interrupted run leaves nothing loadable and the command with its quality report.

next: mistral_np/quant/ (the block formats and their kernels).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from ..errors import CheckpointError, InvalidArgumentError
from ..files import atomic_file, atomic_folder, sha256_of
from ..quant.common import Q
from ..model.ops import log_softmax
from .detect import open_checkpoint
from .pipeline import check_tensors, read_float
from .quantized import FORMAT, FORMAT_VERSION, MANIFEST, TYPES, WEIGHTS, packed_shape
from .safetensors import write_streaming
from .source import Checkpoint

_SKIP_COPY = (".safetensors", ".bin", ".pth", ".gguf", ".pt", ".index.json")


def choose_type(name: str, shape: tuple, qtype: str, tied: bool = False) -> str:
    """f32 for vectors; the output projection (lm_head, or embed_tokens when tied) stays at Q8_0."""
    if len(shape) == 1:
        return "f32"
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    if name == head and qtype == "q4_0":
        return "q8_0"
    return qtype


def quantize_checkpoint(src: str, dst: str, qtype: str = "q4_0", progress: bool | None = None,
                        force: bool = False) -> dict:
    """Quantize an HF or consolidated folder ``src`` into a new folder ``dst``; returns the manifest."""
    from ..quant.fast.quantize import quantize_q4_0, quantize_q8_0
    if qtype not in TYPES:
        raise InvalidArgumentError(f"unknown quantization type {qtype!r}; choose q4_0 or q8_0")
    if os.path.exists(dst) and not force:
        raise InvalidArgumentError(f"{dst} already exists (pass --force to replace it)")
    ckpt = open_checkpoint(src)
    if ckpt.format not in ("hf-safetensors", "mistral-consolidated"):
        raise InvalidArgumentError(f"{src}: quantize reads HF or consolidated checkpoint folders, not a "
                                   f"{ckpt.format} checkpoint")
    check_tensors(ckpt)
    cfg = ckpt.config
    for name, t in ckpt.tensors.items():
        if len(t.shape) == 2 and t.shape[1] % Q:
            raise CheckpointError(f"{t.file}: tensor {t.key!r} has {t.shape[1]} columns, not a multiple of the "
                                  f"{Q}-element quantization block")
    quantizer = {"q4_0": quantize_q4_0, "q8_0": quantize_q8_0}
    t0 = time.time()
    with atomic_folder(dst, replace=force) as tmp:
        _copy_side_files(ckpt, tmp)
        types = {n: choose_type(n, t.shape, qtype, cfg.tie_word_embeddings) for n, t in ckpt.tensors.items()}
        entries = [(n, "U8" if types[n] != "f32" else "F32", packed_shape(t.shape, types[n]))
                   for n, t in ckpt.tensors.items()]

        def produce(name):
            w = np.ascontiguousarray(read_float(ckpt, name, np.float32))
            if types[name] == "f32":
                return w
            t = ckpt.tensors[name]
            return quantizer[types[name]](w, name=f"{t.file}:{t.key}")

        bar = _progress(len(entries), progress)
        write_streaming(os.path.join(tmp, WEIGHTS), entries, produce,
                        metadata={"format": FORMAT, "format_version": FORMAT_VERSION},
                        on_tensor=lambda _: bar.update(1))
        bar.close()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "qtype": qtype,
            "tensors": {n: {"type": types[n], "shape": list(t.shape)} for n, t in ckpt.tensors.items()},
            "float_tensors": sorted(n for n in ckpt.tensors if types[n] == "f32"),
            "head_optional": ckpt.head_optional,
            "source": {"format": ckpt.format, "files": {os.path.basename(p): sha256_of(p) for p in ckpt.files}},
            "seconds": round(time.time() - t0, 1),
        }
        with atomic_file(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
    return manifest


def _copy_side_files(ckpt: Checkpoint, dst: str) -> None:
    """Tokenizer and sentence-transformers files next to the weights; config.json in HF form."""
    for entry in os.listdir(ckpt.path):
        s = os.path.join(ckpt.path, entry)
        if entry in (MANIFEST, "params.json") or entry.endswith(_SKIP_COPY) or entry.startswith("."):
            continue
        if os.path.isdir(s):
            if all(f.endswith(".json") for f in os.listdir(s)):  # sentence-transformers module configs
                shutil.copytree(s, os.path.join(dst, entry))
        else:
            shutil.copy2(s, os.path.join(dst, entry))
    if ckpt.format != "hf-safetensors":  # a consolidated source: write the equivalent HF config.json
        with atomic_file(os.path.join(dst, "config.json"), "w") as f:
            json.dump(ckpt.config.to_hf_dict(), f, indent=1)


def _progress(total: int, show):
    import sys
    from tqdm import tqdm
    disable = (not sys.stderr.isatty()) if show is None else not show
    return tqdm(total=total, unit="tensor", desc="quantizing", disable=disable, file=sys.stderr)


def quality_report(reference, quantized, ids: np.ndarray) -> dict:
    """How far a quantized model's next-token distributions are from the float model's on ``ids``.

    KL(p_float || p_quant) per position (nats; mean and max), top-1 agreement, and the perplexity of
    ``ids`` under each model (each position predicting the next token)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size < 2:
        raise InvalidArgumentError("the quality report needs a text of at least 2 tokens")
    lp = log_softmax(reference.forward(ids).astype(np.float64))       # (T, V)
    lq = log_softmax(quantized.forward(ids).astype(np.float64))
    kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)                       # (T,)
    nxt = ids[1:]
    ppl_p = float(np.exp(-np.mean(lp[np.arange(len(nxt)), nxt])))
    ppl_q = float(np.exp(-np.mean(lq[np.arange(len(nxt)), nxt])))
    return {"tokens": int(ids.size), "kl_mean": float(kl.mean()), "kl_max": float(kl.max()),
            "top1_agreement": float(np.mean(lp.argmax(-1) == lq.argmax(-1))),
            "ppl_float": ppl_p, "ppl_quantized": ppl_q, "ppl_change": ppl_q / ppl_p - 1.0}
