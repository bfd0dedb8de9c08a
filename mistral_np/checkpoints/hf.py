"""Reader for Hugging Face checkpoint folders: ``config.json`` + safetensors files.

    folder/config.json
    folder/model.safetensors                      one file, or
    folder/model.safetensors.index.json           {"weight_map": {tensor name: shard file}} + the shards
    folder/*.safetensors                          any other safetensors files (read all)

Tensor names carry the ``model.`` prefix (``MistralForCausalLM``), or none at all (an embedding model
saved as ``MistralModel``, which also has no ``lm_head``): both end up under the prefixed HF names.
A checkpoint is allowed to lack ``lm_head.weight`` (``head_optional``) only when it is such an embedding
model: bare names, or ``architectures`` that are not a ``...ForCausalLM``. ``rotary_emb.inv_freq``
buffers that old transformers versions saved are skipped (they are recomputed, not weights).

Checked against transformers: tests/test_model.py loads folders that transformers' ``save_pretrained``
wrote and compares every intermediate with transformers', and tests/test_checkpoint.py checks that a
sharded folder with an index and a prefix-less one without ``lm_head`` load as the single file does.

next: consolidated.py.
"""

from __future__ import annotations

import glob
import os
import re

from ..errors import CheckpointError
from .config_files import from_hf_dict, read_json
from .safetensors import SafetensorsFile
from .source import Checkpoint, StoredTensor, TokenizerSource

_IGNORED_TENSORS = re.compile(r".*\.rotary_emb\.inv_freq$")


def safetensors_files(folder: str) -> list[str]:
    """The safetensors files of an HF folder: the index's shards, else model.safetensors, else all."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        index_json = read_json(index, error=CheckpointError)
        weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: no 'weight_map' object of tensor name -> file name")
        files = sorted(set(weight_map.values()))
        for f in files:
            if os.path.basename(f) != f or not os.path.exists(os.path.join(folder, f)):
                raise CheckpointError(f"{index}: lists shard {f!r}, which is missing from {folder}")
        return [os.path.join(folder, f) for f in files]
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return [single]
    found = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not found:
        raise CheckpointError(f"{folder}: no model.safetensors, model.safetensors.index.json or *.safetensors file")
    return found


def stored_tensors(files: list[str]) -> dict[str, StoredTensor]:
    """Every tensor of these safetensors files under its name in the file, refusing a name found twice."""
    out: dict[str, StoredTensor] = {}
    for path in files:
        st = SafetensorsFile(path)
        for key in st.keys():
            if key in out:
                raise CheckpointError(f"tensor {key!r} appears in both {out[key].file} and {path}")
            out[key] = StoredTensor(file=path, key=key, shape=st.shape(key), dtype=st.dtype(key),
                                    nbytes=st.nbytes(key), read=lambda st=st, key=key: st.raw(key))
    return out


def read_hf_folder(folder: str) -> Checkpoint:
    cfg_path = os.path.join(folder, "config.json")
    d = read_json(cfg_path)
    cfg = from_hf_dict(d, source=cfg_path)
    stored = stored_tensors(safetensors_files(folder))
    bare = not any(n.startswith("model.") for n in stored)
    tensors = {}
    for key, t in stored.items():
        if _IGNORED_TENSORS.match(key):
            continue
        tensors[key if (not bare or key == "lm_head.weight") else "model." + key] = t
    arch = d.get("architectures") or []
    headless = bare or any(not a.endswith("ForCausalLM") for a in arch)
    return Checkpoint(format="hf-safetensors", path=folder, config=cfg, tensors=tensors, head_optional=headless,
                      tokenizer=TokenizerSource("folder", folder))
