"""Quantized checkpoints (mistral_np's own format): the reader. quantize.py writes them.

A quantized folder holds::

    config.json                     the source's (or, for a consolidated source, the equivalent HF one)
    tokenizer files, sentence-transformers files      copied from the source
    model.quantized.safetensors     one entry per tensor: U8 (out, in/32 * bytes per block) ggml blocks
                                    for quantized matrices, F32 for the rest (norms)
    quantization.json               the manifest: format and version, each tensor's type and shape,
                                    which stayed float, whether the model has an LM head, SHA-256 of the
                                    source files

q and k rows are stored in the HF half-split order. The reader checks every manifest entry (a known type,
a well-formed shape, whole 32-element blocks) and that the weights file holds each tensor with exactly the
bytes its type and shape need, before anything is mapped.

tests/test_quantize.py checks the folder with independent readers (safetensors' ``load_file`` reads the
weights file, gguf-py dequantizes its blocks to what ours give), and tests/test_hardening.py that bad
manifest entries and a non-finite block scale are refused by name.

next: quantize.py (the writer).
"""

from __future__ import annotations

import os

from ..errors import CheckpointError, ConfigError
from ..quant.common import Q
from .config_files import from_hf_dict, read_json
from .safetensors import SafetensorsFile
from .source import Checkpoint, StoredTensor, TokenizerSource

FORMAT, FORMAT_VERSION = "mistral_np.quantized", 1
MANIFEST, WEIGHTS = "quantization.json", "model.quantized.safetensors"
TYPES = ("q4_0", "q8_0")                          # what `quantize` writes; the manifest spells them so


def _block_bytes(t: str) -> int:
    from ..quant.tensor import TENSOR_TYPES
    return TENSOR_TYPES[t.upper()].block_bytes


def packed_shape(shape: tuple, t: str) -> tuple:
    """The stored shape of a tensor of logical ``shape`` and type ``t`` ("f32", "q4_0", "q8_0")."""
    if t == "f32":
        return tuple(shape)
    return (shape[0], shape[1] // Q * _block_bytes(t))


def is_quantized_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST))


def read_quantized_folder(folder: str) -> Checkpoint:
    """A quantized folder -> Checkpoint: packed tensors (memory-mapped) under their HF names."""
    manifest_path = os.path.join(folder, MANIFEST)
    man = read_json(manifest_path)
    if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("format_version") != FORMAT_VERSION:
        found = (man.get("format"), man.get("format_version")) if isinstance(man, dict) else (None, None)
        raise ConfigError(f"{manifest_path}: not a mistral_np quantized checkpoint of format version "
                          f"{FORMAT_VERSION} (found {found[0]!r} v{found[1]!r})")
    entries = man.get("tensors")
    if not isinstance(entries, dict):
        raise CheckpointError(f"{manifest_path}: no 'tensors' object")
    cfg_path = os.path.join(folder, "config.json")
    cfg_dict = read_json(cfg_path)
    cfg = from_hf_dict(cfg_dict, source=cfg_path)
    st = SafetensorsFile(os.path.join(folder, WEIGHTS))
    tensors = {}
    for name, info in entries.items():
        where = f"{manifest_path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"type", "shape"} <= set(info):
            raise CheckpointError(f"{where}: entry needs 'type' and 'shape'")
        t, shape = info["type"], info["shape"]
        if t not in ("f32",) + TYPES:
            raise CheckpointError(f"{where}: unknown type {t!r} (expected one of f32, {', '.join(TYPES)})")
        if not (isinstance(shape, list) and len(shape) in (1, 2) and all(type(s) is int and s > 0 for s in shape)):
            raise CheckpointError(f"{where}: malformed shape {shape!r}")
        if t != "f32" and (len(shape) != 2 or shape[1] % Q):
            raise CheckpointError(f"{where}: type {t} needs a matrix whose rows are whole {Q}-element blocks, "
                                  f"got shape {shape}")
        if name not in st.tensors:
            raise CheckpointError(f"{st.path}: missing tensor {name!r} listed in {MANIFEST}")
        want = packed_shape(tuple(shape), t)
        if st.shape(name) != want or st.dtype(name) != ("F32" if t == "f32" else "U8"):
            raise CheckpointError(f"{st.path}: tensor {name!r} is {st.dtype(name)}{list(st.shape(name))}, expected "
                                  f"{'F32' if t == 'f32' else 'U8'}{list(want)} for {t} {shape}")
        tensors[name] = StoredTensor(file=st.path, key=name, shape=tuple(shape), dtype="F32" if t == "f32" else t.upper(),
                                     nbytes=st.nbytes(name), read=lambda name=name: st.raw(name))
    head_optional = man.get("head_optional")
    if head_optional is None:       # manifests written before this field: the config says
        head_optional = any(not a.endswith("ForCausalLM") for a in cfg_dict.get("architectures") or [])
    return Checkpoint(format="mistral_np-quantized", path=folder, config=cfg, tensors=tensors,
                      head_optional=bool(head_optional), tokenizer=TokenizerSource("folder", folder), metadata=man)
