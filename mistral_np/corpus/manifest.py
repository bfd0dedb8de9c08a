"""OUTPUT/_manifest.json: what made the shards beside it, and which shards are done.

    {"format": "mistral-np-corpus/1",
     "identity": {                                   everything that changes a vector or which row is where
        "library": {"name": "mistral_np", "version": "0.1.0"},
        "model": {"sha256": ...},                     inputs.model_fingerprint
        "recipe": {"name", "pooling", "normalize", "max_length", "instruction", "prompt_name", "prompt",
                   "include_prompt", "prefix_ids", "suffix_ids", "dimensions", "width", "activations"},
        "input": {"fingerprint", "id_field", "text_field", "id_kind", "records"},
        "shard_size": 1000},
     "model": {"path", "files": [...]},  "input": {"path", "files": [...]}      where they were, for the next run
     "shards": 12, "shards_done": {"0": {"file", "records", "tokens", "truncated", "sha256", "bytes"}, ...},
     "complete": false}

A restart compares its own identity with the manifest's and refuses, naming every difference, before it
writes, renames or deletes anything in OUTPUT: resuming with another model, recipe, input, shard size or
library version would mix two kinds of vector in one index. The engine, the thread count, ``--batch-tokens``
and the Ray address are not part of the identity: they change no vector.

The file is rewritten whole, atomically (files.py:atomic_file), after each shard. Its name starts with "_" so
that Parquet readers given the folder (``pyarrow.parquet.read_table(OUTPUT)``, ``ray.data.read_parquet``)
skip it, as they skip Spark's ``_SUCCESS``.

tests/test_corpus.py checks what it records after a run, that a run killed between a shard's rename and the
manifest's update resumes to the same output, and that another recipe, model, input or shard size is refused
naming the difference, with nothing in OUTPUT changed (names, bytes, modification times).

next: shards.py.
"""

from __future__ import annotations

import json
import os

from ..errors import FileAccessError, InvalidArgumentError
from ..files import atomic_file

MANIFEST = "_manifest.json"
FORMAT = "mistral-np-corpus/1"


class OutputMismatchError(InvalidArgumentError):
    """OUTPUT holds shards made by another model, recipe or input; nothing in it was touched."""


def load(output: str) -> dict | None:
    """The manifest in OUTPUT, or None when OUTPUT does not exist or is an empty folder.

    A folder with other content and no manifest is refused: it is not an embed-corpus output."""
    if not os.path.exists(output):
        return None
    if not os.path.isdir(output):
        raise FileAccessError(f"{output}: OUTPUT exists and is not a folder")
    path = os.path.join(output, MANIFEST)
    if not os.path.exists(path):
        if os.listdir(output):
            raise OutputMismatchError(f"{output}: OUTPUT is not empty and has no {MANIFEST}: not an embed-corpus "
                                      "output; refusing to write into it (choose an empty or new folder)")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise OutputMismatchError(f"{path}: cannot read the manifest ({e}); refusing to touch OUTPUT") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OutputMismatchError(f"{path}: not a {FORMAT} manifest; refusing to touch OUTPUT")
    return manifest


def new(identity: dict, model: dict, input_: dict, n_shards: int) -> dict:
    return {"format": FORMAT, "identity": identity, "model": model, "input": input_, "shards": n_shards,
            "shards_done": {}, "complete": n_shards == 0}


def check_identity(output: str, manifest: dict, identity: dict) -> None:
    """Raise OutputMismatchError naming each difference between the manifest's identity and ours."""
    old, new_ = _flatten(manifest.get("identity", {})), _flatten(identity)
    diffs = [f"{k}: {_short(old.get(k))} in OUTPUT, {_short(new_.get(k))} now"
             for k in sorted(set(old) | set(new_)) if old.get(k) != new_.get(k)]
    if diffs:
        raise OutputMismatchError(
            f"{output} was made with another model, recipe or input; refusing to resume into it (nothing was "
            f"changed). Differences: {'; '.join(diffs)}. Resume with the original arguments, or choose a new OUTPUT.")


def save(output: str, manifest: dict) -> None:
    with atomic_file(os.path.join(output, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:37] + "..." + text[-37:]
