"""mistral_np: a from-scratch NumPy reference implementation of Mistral-7B and its embedders.

Public API (everything else is an implementation detail a reader may study but should not import):

    load_model(path, dtype=np.float32) -> Model     HF folder, consolidated folder, .gguf, quantized folder
    model.config, model.forward(ids, trace=False), model.tokenizer (None if the folder has none)
    load_tokenizer(path) -> Tokenizer                tokenizer.json, or Mistral's tokenizer.model
    MistralConfig, PRESETS

Read the code in the order the data flows: config.py, params.py, model.py, block.py, attention.py
(rope.py, masks.py), mlp.py, rmsnorm.py, ops.py. docs/architecture.md maps each box to a function.
"""

from __future__ import annotations

import os

import numpy as np

from .config import PRESETS, ConfigError, MistralConfig
from .embed import Embedder, load_embedder
from .model import Model
from .safetensors_io import WeightsError
from .tokenizer import Tokenizer, TokenizerError, has_tokenizer, load_tokenizer

__all__ = ["load_model", "load_tokenizer", "Model", "Tokenizer", "MistralConfig", "PRESETS", "ConfigError",
           "WeightsError", "TokenizerError", "load_embedder", "Embedder"]
__version__ = "0.1.0"


def load_model(path: str, dtype=np.float32) -> Model:
    """Load a checkpoint folder for inference in ``dtype`` (float32, or float64 for golden values)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"compute dtype must be float32 or float64, got {dtype}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if os.path.isfile(path) and path.endswith(".gguf"):
        from .gguf import load_gguf
        cfg, params, tokenizer = load_gguf(path, dtype)
        return Model(cfg, params, dtype=dtype, tokenizer=tokenizer, source=path)
    if not os.path.isdir(path):
        raise WeightsError(f"{path}: not a checkpoint (expected a .gguf file, or a folder with config.json or "
                           "params.json)")
    from .quantize import is_quantized_folder, load_quantized
    if is_quantized_folder(path):
        cfg, params = load_quantized(path, dtype)
    else:
        from .checkpoint import load_params
        cfg, params = load_params(path, dtype)
    return Model(cfg, params, dtype=dtype, tokenizer=_folder_tokenizer(path), source=path)


def _folder_tokenizer(folder: str):
    """The folder's tokenizer, or None when it has no tokenizer file (a bad one is still an error)."""
    return load_tokenizer(folder) if has_tokenizer(folder) else None
