"""Checking the corpus once before any work, and cutting it into shards.

``scan`` reads every record of every file that has not been scanned before (a fresh job; a restart reuses the
manifest's entries): each must be an object with an id (a string, or an integer for every record) and a
string text; every id must be unique, because the id is what a shard row is found by. A bad record is
reported as ``file:line`` before a single text is embedded, rather than hours into the job.

``plan`` turns the files' record counts into shards of ``shard_size`` records in the global order of
inputs.py. A shard is a list of segments ``(file index, first record in the file, count, byte offset)``; the
offset is where that record starts in a JSON-lines file (so a shard is read without reading what precedes
it), 0 for Parquet. Worked example, files of 3 and 4 records, shards of 5:

    shard 0: (0, 0, 3, 0), (1, 0, 2, 0)        shard 1: (1, 2, 2, 0)

tests/test_corpus.py checks that bad corpora (a duplicate id, a record without its text, mixed or float ids,
a line that is not JSON) are refused in one line naming the file and the line before OUTPUT is created, and
the plan through shards that straddle a JSON-lines and a Parquet file.

next: manifest.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..errors import InvalidArgumentError
from .deps import require_pyarrow
from .inputs import read_segment

INT64 = (-(1 << 63), (1 << 63) - 1)


def scan(entries: list[dict], paths: list[str], id_field: str, text_field: str, shard_size: int) -> str:
    """Fill ``records``, ``offsets`` and ``id_kind`` of entries that lack them; check ids are unique across
    files and of one kind. Returns the kind: "int", "str" (or "str" for an empty corpus)."""
    keys, start, fresh = [], 0, False
    for entry, full in zip(entries, paths):
        if "records" in entry:
            keys.append(None)
        else:
            scan_file = _scan_jsonl if entry["format"] == "jsonl" else _scan_parquet
            info, k = scan_file(full, start, id_field, text_field, shard_size)
            entry.update(info)
            keys.append(k)
            fresh = True
        start += entry["records"]
    kinds = {e["id_kind"] for e in entries if e["records"]}
    if len(kinds) > 1:
        by = {k: next(e["name"] or paths[0] for e in entries if e.get("id_kind") == k) for k in kinds}
        raise InvalidArgumentError(f"ids must be all strings or all integers: {by['str']} has strings, "
                                   f"{by['int']} integers")
    kind = kinds.pop() if kinds else "str"
    if fresh:                           # entries the manifest remembers were checked when it was written
        keys = [k if k is not None else _id_keys(full, e, id_field, text_field)
                for k, e, full in zip(keys, entries, paths)]
        _check_unique(np.concatenate(keys) if keys else np.zeros(0, np.int64), entries, paths, id_field, text_field)
    return kind


def _id_kind(value, where: str) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidArgumentError(f"{where}: id {value} does not fit in 64 bits")
        return "int"
    raise InvalidArgumentError(f"{where}: the id must be a string or an integer, got {type(value).__name__}")


def _scan_jsonl(full, start, id_field, text_field, shard_size) -> tuple[dict, np.ndarray]:
    kind, n, offsets, pos, ids, keys = None, 0, [], 0, [], []
    with open(full, "rb") as f:
        for line_no, line in enumerate(f, 1):
            here, pos = pos, pos + len(line)
            if not line.strip():
                continue
            where = f"{full}:{line_no}"
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InvalidArgumentError(f"{where}: not a JSON object ({getattr(e, 'msg', e)})") from None
            if not isinstance(obj, dict) or id_field not in obj or not isinstance(obj.get(text_field), str):
                raise InvalidArgumentError(f"{where}: expected an object with an id field {id_field!r} and a string "
                                           f"text field {text_field!r} (--id-field, --text-field)")
            k = _id_kind(obj[id_field], where)
            if kind is not None and k != kind:
                raise InvalidArgumentError(f"{where}: ids must be all strings or all integers")
            kind = k
            if (start + n) % shard_size == 0:
                offsets.append([n, here])
            ids.append(obj[id_field])
            n += 1
            if len(ids) == 65536:       # keys, not ids, are kept: 8 bytes a record
                keys.append(_keys(ids, kind))
                ids = []
    keys.append(_keys(ids, kind))
    return {"records": n, "offsets": offsets, "id_kind": kind}, np.concatenate(keys)


def _scan_parquet(full, start, id_field, text_field, shard_size) -> tuple[dict, np.ndarray]:
    pa, pq = require_pyarrow()
    try:
        pf = pq.ParquetFile(full)
    except (pa.ArrowException, OSError) as e:
        raise InvalidArgumentError(f"{full}: not a readable Parquet file ({e})") from None
    schema = pf.schema_arrow
    for field in (id_field, text_field):
        if field not in schema.names:
            raise InvalidArgumentError(f"{full}: no column {field!r} (columns: {', '.join(schema.names)}; "
                                       "--id-field, --text-field)")
    id_type, text_type = schema.field(id_field).type, schema.field(text_field).type
    is_str = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)  # noqa: E731
    if not (is_str(id_type) or pa.types.is_integer(id_type)):
        raise InvalidArgumentError(f"{full}: column {id_field!r} is {id_type}; ids must be strings or integers")
    if not is_str(text_type):
        raise InvalidArgumentError(f"{full}: column {text_field!r} is {text_type}, not a string column")
    if pa.types.is_uint64(id_type):
        raise InvalidArgumentError(f"{full}: column {id_field!r} is uint64; ids must fit in int64")
    kind, keys = "str" if is_str(id_type) else "int", []
    for g in range(pf.metadata.num_row_groups):
        t = pf.read_row_group(g, columns=[id_field, text_field])
        for field in (id_field, text_field):
            if t.column(field).null_count:
                raise InvalidArgumentError(f"{full}: column {field!r} has nulls (row group {g})")
        keys.append(_keys(t.column(id_field).to_pylist(), kind))
    return ({"records": pf.metadata.num_rows, "offsets": [], "id_kind": kind},
            np.concatenate(keys) if keys else np.zeros(0, np.int64))


def _keys(ids: list, kind: str | None) -> np.ndarray:
    """(n,) int64 keys of ids: the integer itself, or 8 bytes of BLAKE2b of the string."""
    if kind == "int":
        return np.array(ids, dtype=np.int64)
    digest = b"".join(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8).digest() for i in ids)
    return np.frombuffer(digest, dtype=np.int64)


def _id_keys(full, entry, id_field, text_field) -> np.ndarray:
    """Keys of a file scanned by an earlier run (read again only when another file is new)."""
    ids, _ = (read_segment(full, entry["format"], 0, entry["records"], 0, id_field, text_field)
              if entry["records"] else ([], []))
    return _keys(ids, entry["id_kind"])


def _check_unique(keys: np.ndarray, entries, paths, id_field, text_field) -> None:
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    for s in same:                      # equal keys: compare the ids themselves (a 64-bit digest may collide)
        a, b = int(order[s]), int(order[s + 1])
        (ida, wa), (idb, wb) = (_id_at(g, entries, paths, id_field, text_field) for g in (a, b))
        if ida == idb:
            raise InvalidArgumentError(f"duplicate id {ida!r}: {wa} and {wb}; ids must be unique (they key the "
                                       "output rows)")


def _id_at(g, entries, paths, id_field, text_field):
    for entry, full in zip(entries, paths):
        if g < entry["records"]:
            offset = max((o for i, o in entry["offsets"] if i <= g), default=0)
            first = max((i for i, _ in entry["offsets"] if i <= g), default=0)
            ids, _ = read_segment(full, entry["format"], first, g - first + 1, offset, id_field, text_field)
            return ids[-1], f"record {g + 1} of {full}"
        g -= entry["records"]
    raise AssertionError("record index beyond the corpus")


# ------------------------------------------------------------------------------------------------- shards
def plan(entries: list[dict], shard_size: int) -> list[list[tuple[int, int, int, int]]]:
    """Shards of ``shard_size`` records as segment lists (see the module docstring)."""
    shards, current, room = [], [], shard_size
    for f, entry in enumerate(entries):
        offsets = dict(entry["offsets"])
        local = 0
        while local < entry["records"]:
            take = min(room, entry["records"] - local)
            current.append((f, local, take, offsets.get(local, 0) if entry["format"] == "jsonl" else 0))
            local, room = local + take, room - take
            if room == 0:
                shards.append(current)
                current, room = [], shard_size
    if current:
        shards.append(current)
    return shards
