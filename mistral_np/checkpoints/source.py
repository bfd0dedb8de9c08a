"""What every checkpoint reader yields: a ``Checkpoint`` of named, not-yet-read ``StoredTensor``s.

The four formats (HF safetensors folders, Mistral's consolidated folders, GGUF files, mistral_np's quantized
folders) differ in names, containers and layouts; the readers (hf.py, consolidated.py, gguf.py,
quantized.py) translate each into the same description, and pipeline.py turns any of them into model
parameters with the same checks. A reader reads headers only: no tensor data is touched until the pipeline
asks for it (``StoredTensor.read()`` returns a memory map).

    Checkpoint(format="gguf", path="m.gguf", config=MistralConfig(...),
               tensors={"model.layers.0.self_attn.q_proj.weight": StoredTensor(key="blk.0.attn_q.weight",
                        shape=(576, 576), dtype="Q4_1", ...), ...},
               rope_layout="interleaved", head_optional=False, tokenizer=TokenizerSource("gguf", ...))

No test reads these classes directly: they are checked through the readers, whose checkpoints
tests/test_checkpoint.py (HF and consolidated folders), tests/test_gguf.py (GGUF files) and
tests/test_quantize.py (quantized folders) load into models checked against transformers.

next: pipeline.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CheckpointError
from ..model.config import MistralConfig

FLOAT_KINDS = ("F32", "F16", "BF16", "F64")
BLOCK_KINDS = ("Q4_0", "Q4_1", "Q8_0")


@dataclass
class StoredTensor:
    """One tensor as a file stores it.

    ``read()`` returns the stored data without converting it: a float tensor in its stored dtype with the
    logical ``shape`` (BF16 as uint16 bits), or for a block-quantized tensor the ggml bytes as a uint8
    array of shape (out, in / 32 * bytes per block)."""
    file: str                        # the file that holds it
    key: str                         # its name in that file (for messages)
    shape: tuple[int, ...]           # logical shape, [out, in] for matrices
    dtype: str                       # FLOAT_KINDS or BLOCK_KINDS
    nbytes: int                      # bytes in the file
    read: Callable[[], np.ndarray]


@dataclass
class TokenizerSource:
    """Where a checkpoint's tokenizer is: a folder of tokenizer files, or the metadata of a GGUF file."""
    kind: str                        # "folder" | "gguf"
    path: str
    metadata: dict | None = None     # GGUF key/values (kind "gguf")


@dataclass
class Checkpoint:
    format: str                      # "hf-safetensors" | "mistral-consolidated" | "gguf" | "mistral_np-quantized"
    path: str                        # the folder or file the user named
    config: MistralConfig
    tensors: dict[str, StoredTensor]  # under their HF names
    rope_layout: str = "half-split"  # "interleaved": q/k rows are in Meta's order and must be permuted
    head_optional: bool = False      # an embedding-only checkpoint (MistralModel) may lack lm_head.weight
    tokenizer: TokenizerSource | None = None
    metadata: dict = field(default_factory=dict)   # format-specific extras (e.g. the quantized manifest)
    spell: Callable[[str], str] = lambda hf_name: hf_name   # an HF name as this format spells it
    error: type = CheckpointError    # the error class for this format's problems (GGUFError for GGUF)

    @property
    def files(self) -> list[str]:
        return sorted({t.file for t in self.tensors.values()})
