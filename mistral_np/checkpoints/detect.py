"""Which format a path holds, and the reader for it: ``open_checkpoint(path) -> Checkpoint``.

A ``.gguf`` file is a GGUF checkpoint; a folder with ``quantization.json`` is a mistral_np quantized folder,
with ``config.json`` an HF folder, with ``params.json`` a Mistral consolidated folder; a folder holding none
of these but exactly one ``.gguf`` file means that file.

tests/test_checkpoint.py, tests/test_gguf.py and tests/test_quantize.py open each format through it, and
tests/test_first_hour.py checks that a folder holding one .gguf file is that model and that a missing path
points at weights/README.md.

next: source.py (what the readers return).
"""

from __future__ import annotations

import glob
import os

from ..errors import CheckpointError, PathNotFoundError
from .consolidated import read_consolidated_folder
from .gguf import read_gguf
from .hf import read_hf_folder
from .quantized import is_quantized_folder, read_quantized_folder
from .source import Checkpoint

WEIGHTS_HINT = "weights/README.md says where to get each checkpoint"


def resolve_model_path(path) -> str:
    """The model a path names: the file or folder itself, or the single ``.gguf`` inside a folder that holds
    nothing else a reader could use."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PathNotFoundError(f"{path}: no such file or folder ({WEIGHTS_HINT})")
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f))
                                       for f in ("config.json", "params.json")):
        ggufs = sorted(glob.glob(os.path.join(path, "*.gguf")))
        if len(ggufs) == 1:
            return ggufs[0]
    return path


def open_checkpoint(path) -> Checkpoint:
    """Describe the checkpoint at ``path``: a .gguf file, or an HF, consolidated or quantized folder."""
    path = resolve_model_path(path)
    if os.path.isfile(path):
        if path.endswith(".gguf") or _starts_with(path, b"GGUF"):
            return read_gguf(path)
        raise CheckpointError(f"{path}: not a checkpoint (expected a .gguf file, or a folder with config.json or "
                              f"params.json; {WEIGHTS_HINT})")
    if is_quantized_folder(path):
        return read_quantized_folder(path)
    if os.path.exists(os.path.join(path, "config.json")):
        return read_hf_folder(path)
    if os.path.exists(os.path.join(path, "params.json")):
        return read_consolidated_folder(path)
    ggufs = glob.glob(os.path.join(path, "*.gguf"))
    hint = f"it holds {len(ggufs)} .gguf files: name one" if ggufs else WEIGHTS_HINT
    raise CheckpointError(f"{path}: not a checkpoint folder (no config.json or params.json; {hint})")


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False
