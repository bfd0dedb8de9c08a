"""The output shards: one Parquet file per shard of the plan, written whole or not at all.

    OUTPUT/shard-00000.parquet    id: int64 or string, embedding: fixed_size_list<float32>[K], truncated: bool
    OUTPUT/shard-00001.parquet    ... rows in input order; shard i holds records i*S .. i*S+S-1 (scan.py)
    OUTPUT/_manifest.json         manifest.py

``ShardWriter`` receives embedded rows in any order and from any engine (a batch is a dict of arrays with
``shard``, ``row`` (position in the shard), ``id``, ``embedding``, ``n_tokens``, ``truncated``), keeps each
shard's rows until the shard is complete, then writes it through files.py:atomic_file (a temporary name,
fsync, rename) and only then records it in the manifest. A run killed at any moment therefore leaves complete
shards, at most one temporary file per shard in flight, and a manifest that lists only shards whose file is
complete; the next run deletes the temporaries (``remove_temporaries``) and recomputes what the manifest
does not list, which gives the same rows, because a vector depends on its text alone (embedder.py).

``read_embeddings(OUTPUT)`` reads the shards back, in order, as (ids, (N, K) float32).

tests/test_corpus.py reads the shards back with pyarrow's own reader (schema, ids, truncated flags), and kills
a run inside a shard's atomic write to check that the next run removes the temporary and writes the same
bytes.

next: batches.py.
"""

from __future__ import annotations

import os
import re

import numpy as np

from ..errors import InvalidArgumentError
from ..files import atomic_file, sha256_of
from . import manifest as manifest_file
from .deps import require_pyarrow

TEMPORARY = re.compile(r"^\.(shard-\d+\.parquet|_manifest\.json)\.tmp-\d+-\d+$")


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:0{max(5, len(str(max(n_shards - 1, 0))))}d}.parquet"


def remove_temporaries(output: str) -> int:
    """Delete the temporary files a killed run left in OUTPUT (ours only, by their name); returns how many."""
    gone = 0
    for f in os.listdir(output):
        if TEMPORARY.match(f):
            os.remove(os.path.join(output, f))
            gone += 1
    return gone


def write_shard(path: str, ids: list, vectors: np.ndarray, truncated: np.ndarray, id_kind: str) -> None:
    pa, pq = require_pyarrow()
    n, width = vectors.shape
    table = pa.table({
        "id": pa.array(ids, type=pa.int64() if id_kind == "int" else pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1)),
                                                       width),
        "truncated": pa.array(np.asarray(truncated, dtype=bool)),
    })
    with atomic_file(path) as f:
        pq.write_table(table, f)


class ShardWriter:
    """Collects embedded rows per shard; writes a shard and records it in the manifest once it is complete.

    ``on_shard(index, entry)`` hears each shard written (the progress bar and the summary use it)."""

    def __init__(self, output: str, manifest: dict, plan: list, on_shard=None):
        self.output, self.manifest, self.plan = output, manifest, plan
        self.sizes = [sum(seg[2] for seg in shard) for shard in plan]
        self.pending: dict[int, list[dict]] = {}
        self.on_shard = on_shard or (lambda index, entry: None)

    def add(self, batch: dict) -> None:
        shards = np.asarray(batch["shard"])
        for s in np.unique(shards):
            take = np.flatnonzero(shards == s)
            part = {k: (np.asarray(v)[take] if k != "id" else [batch["id"][i] for i in take]) for k, v in batch.items()}
            self.pending.setdefault(int(s), []).append(part)
            if sum(len(p["row"]) for p in self.pending[int(s)]) == self.sizes[int(s)]:
                self._write(int(s), self.pending.pop(int(s)))

    def _write(self, index: int, parts: list[dict]) -> None:
        rows = np.concatenate([p["row"] for p in parts])
        order = np.argsort(rows, kind="stable")
        if not np.array_equal(rows[order], np.arange(self.sizes[index])):
            raise AssertionError(f"shard {index}: the engine returned rows {sorted(rows.tolist())[:8]}...; "
                                 "each row must come back exactly once")
        ids = [i for p in parts for i in p["id"]]
        ids = [ids[i] for i in order]
        vectors = np.concatenate([p["embedding"] for p in parts])[order]
        truncated = np.concatenate([p["truncated"] for p in parts])[order]
        tokens = int(np.concatenate([p["n_tokens"] for p in parts]).sum())
        name = shard_name(index, len(self.plan))
        path = os.path.join(self.output, name)
        write_shard(path, ids, vectors, truncated, self.manifest["identity"]["input"]["id_kind"])
        entry = {"file": name, "records": len(ids), "tokens": tokens, "truncated": int(truncated.sum()),
                 "bytes": os.path.getsize(path), "sha256": sha256_of(path)}
        self.manifest["shards_done"][str(index)] = entry
        self.manifest["complete"] = len(self.manifest["shards_done"]) == len(self.plan)
        manifest_file.save(self.output, self.manifest)
        self.on_shard(index, entry)

    def unfinished(self) -> list[int]:
        return sorted(self.pending)


def done_shards(output: str, manifest: dict) -> set[int]:
    """Shards the manifest lists whose file is still there with the recorded size."""
    done = set()
    for key, entry in manifest["shards_done"].items():
        path = os.path.join(output, entry["file"])
        if os.path.isfile(path) and os.path.getsize(path) == entry["bytes"]:
            done.add(int(key))
    return done


def read_embeddings(output: str) -> tuple[list, np.ndarray]:
    """(ids, float32 (N, K) vectors) of a complete OUTPUT, shard by shard in input order."""
    _, pq = require_pyarrow()
    m = manifest_file.load(output)
    if m is None or not m.get("complete"):
        raise InvalidArgumentError(f"{output}: not a complete embed-corpus output (run the job to the end first)")
    ids, vectors = [], []
    width = m["identity"]["recipe"]["width"]
    for index in range(m["shards"]):
        table = pq.read_table(os.path.join(output, m["shards_done"][str(index)]["file"]))
        ids += table.column("id").to_pylist()
        vectors.append(table.column("embedding").combine_chunks().values.to_numpy().reshape(-1, width))
    return ids, (np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32))
