"""Reader for Mistral's own "consolidated" folders: ``params.json`` + ``consolidated.safetensors``.

What differs from an HF folder (docs/references.md#checkpoint-names):

* the config is ``params.json`` (config_files.from_params_dict);
* tensor names are Meta-style and mapped to HF names by one table, ``CONSOLIDATED_NAMES``
  (``w1`` = gate, ``w2`` = down, ``w3`` = up; ``attention_norm`` / ``ffn_norm`` are the two RMSNorms);
* q and k rows are in the interleaved RoPE order (``rope_layout="interleaved"``): the pipeline permutes them
  to the half-split order the model computes with (model/rope.py, ``permute_to_half_split``).

Mistral also publishes ``consolidated.00.pth`` (pickled torch): not read here, and said so.

tests/test_checkpoint.py writes a consolidated folder by hand, with Mistral's names and q/k rows permuted by
llama.cpp's converter formula (not this file's table or model/rope.py), and checks that it loads to logits
bit-identical to the HF folder's.

next: gguf.py.
"""

from __future__ import annotations

import glob
import os
import re

from ..errors import CheckpointError
from .config_files import from_params_dict, read_json
from .hf import stored_tensors
from .source import Checkpoint, TokenizerSource

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


def hf_name(key: str) -> str | None:
    """``layers.3.feed_forward.w1.weight`` -> ``model.layers.3.mlp.gate_proj.weight`` (None if unknown)."""
    for pattern, hf in CONSOLIDATED_NAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, hf, key)
    return None


def original_name(hf: str) -> str:
    """The inverse of ``hf_name``, for messages: ``model.layers.3.mlp.gate_proj.weight`` -> ``layers.3.feed_forward.w1.weight``."""
    layer = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf)
    for pattern, target in CONSOLIDATED_NAMES:
        if layer and target == r"model.layers.\1." + layer.group(2):
            return pattern.replace(r"(\d+)", layer.group(1)).replace("\\", "")
        if target == hf:
            return pattern.replace("\\", "")
    return hf


def read_consolidated_folder(folder: str) -> Checkpoint:
    params_path = os.path.join(folder, "params.json")
    cfg = from_params_dict(read_json(params_path), source=params_path)
    files = sorted(glob.glob(os.path.join(folder, "consolidated*.safetensors")))
    if not files:
        if glob.glob(os.path.join(folder, "consolidated*.pth")):
            raise CheckpointError(f"{folder}: only consolidated .pth files; mistral_np reads "
                                  "consolidated.safetensors (Mistral publishes both)")
        raise CheckpointError(f"{folder}: params.json but no consolidated.safetensors")
    tensors = {}
    for key, t in stored_tensors(files).items():
        name = hf_name(key)
        if name is None:
            raise CheckpointError(f"{t.file}: unexpected tensor {key!r} in a consolidated checkpoint")
        tensors[name] = t
    return Checkpoint(format="mistral-consolidated", path=folder, config=cfg, tensors=tensors,
                      rope_layout="interleaved", tokenizer=TokenizerSource("folder", folder), spell=original_name)
