"""The corpus: which files INPUT holds, their fingerprint, and reading any run of records back.

INPUT is a JSON-lines file (``.jsonl``, ``.ndjson``: one object per line, blank lines skipped), a Parquet file
(``.parquet``), or a folder of them, searched recursively; hidden files and other extensions are ignored. The
records are numbered in one global order, which every run and every engine shares:

    files sorted by their path under INPUT, records in file order        global index g = 0, 1, 2, ...

Worked example: a folder with ``a.jsonl`` (3 records) and ``b.parquet`` (4 rows) has records 0-2 in a.jsonl
and 3-6 in b.parquet; with shards of 5 records, shard 0 is a.jsonl 0-2 + b.parquet 0-1 and shard 1 is
b.parquet 2-3 (scan.py makes that plan).

A file is described by an entry (a dict, stored in the manifest): its ``name`` under INPUT ("" when INPUT is
the file itself, so moving or renaming a single-file corpus keeps its fingerprint), ``format``, ``size``,
``mtime_ns``, ``sha256``, and, once scanned, ``records`` and the byte ``offsets`` at which shards start in a
JSON-lines file. The input's fingerprint is the SHA-256 of every (name, sha256) pair: the content and the
order of the records, not where the folder lives. A file is re-hashed only when its size or modification
time differs from the entry the manifest remembers (as make and rsync decide), so a restart does not read a
large corpus twice.

tests/test_corpus.py checks it on a folder of a JSON-lines file (with blank lines, and a file of another
extension beside it) and a Parquet file of two row groups, so that shards straddle files and row groups, and
that a changed input is refused on resume by its fingerprint.

next: scan.py.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..errors import InvalidArgumentError
from ..files import require_path, sha256_of
from .deps import require_pyarrow

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def list_input_files(path: str, exclude: str | None = None) -> list[tuple[str, str, str]]:
    """INPUT -> sorted [(name under INPUT, absolute path, format)]; a file alone has the name "".

    ``exclude``: a folder left out of the search (OUTPUT, when it lies inside INPUT)."""
    path = os.path.abspath(require_path(path, hint="INPUT is a .jsonl or .parquet file, or a folder of them"))
    if os.path.isfile(path):
        fmt = FORMATS.get(os.path.splitext(path)[1].lower())
        if fmt is None:
            raise InvalidArgumentError(f"{path}: INPUT must be a {', '.join(FORMATS)} file or a folder of them")
        return [("", path, fmt)]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.join(folder, d) != exclude]
        for f in files:
            fmt = FORMATS.get(os.path.splitext(f)[1].lower())
            if fmt and not f.startswith("."):
                full = os.path.join(folder, f)
                found.append((os.path.relpath(full, path).replace(os.sep, "/"), full, fmt))
    if not found:
        raise InvalidArgumentError(f"{path}: no {', '.join(FORMATS)} files in this folder")
    return sorted(found)


def file_entries(listing, known: dict[str, dict] | None = None) -> list[dict]:
    """One entry per listed file; an entry of ``known`` (by name) is reused when the file's size and mtime, or
    failing that its SHA-256, are unchanged."""
    known = known or {}
    out = []
    for name, full, fmt in listing:
        st = os.stat(full)
        entry = {"name": name, "format": fmt, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        old = known.get(name)
        if old and old.get("format") == fmt and (old.get("size"), old.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            out.append({**old, **entry})
            continue
        entry["sha256"] = sha256_of(full)
        out.append({**old, **entry} if old and old.get("sha256") == entry["sha256"] else entry)
    return out


def fingerprint(entries: list[dict]) -> str:
    """SHA-256 over the files' names and contents, in order."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e['name']}\0{e['sha256']}\n".encode("utf-8"))
    return h.hexdigest()


def model_fingerprint(path: str, known: list[dict] | None = None) -> tuple[str, list[dict]]:
    """(SHA-256 of a checkpoint, its file entries): a file's content, or every file of a folder (recursively;
    hidden files and ``*.md`` left out: they change no weight), with the same size/mtime shortcut."""
    path = os.path.abspath(require_path(path, hint="weights/README.md says where to get each checkpoint"))
    if os.path.isfile(path):
        listing = [("", path, "model")]
    else:
        listing = []
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            listing += [(os.path.relpath(os.path.join(folder, f), path).replace(os.sep, "/"), os.path.join(folder, f),
                         "model") for f in files if not f.startswith(".") and not f.endswith(".md")]
    entries = file_entries(sorted(listing), {e["name"]: e for e in known or []})
    return fingerprint(entries), entries


# ------------------------------------------------------------------------------------------------- reading
def read_segment(full: str, fmt: str, start: int, count: int, offset: int, id_field: str, text_field: str):
    """Records ``start .. start+count-1`` of one file -> (ids, texts). ``offset`` is the byte at which record
    ``start`` begins in a JSON-lines file (0 for record 0); Parquet files are read by row groups."""
    if fmt == "jsonl":
        return _read_jsonl(full, count, offset, id_field, text_field)
    return _read_parquet(full, start, count, id_field, text_field)


def _read_jsonl(full, count, offset, id_field, text_field):
    ids, texts = [], []
    with open(full, "rb") as f:
        f.seek(offset)
        for line in f:
            if len(ids) == count:
                break
            if line.strip():
                obj = json.loads(line)
                ids.append(obj[id_field])
                texts.append(obj[text_field])
    if len(ids) != count:
        raise InvalidArgumentError(f"{full}: ended before its expected record {count} at byte {offset}: "
                                   "the input changed while the job ran")
    return ids, texts


def _read_parquet(full, start, count, id_field, text_field):
    _, pq = require_pyarrow()
    pf = pq.ParquetFile(full)
    groups, first_row, row = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if row + n > start and row < start + count:
            groups.append(g)
            first_row = row if first_row is None else first_row
        row += n
    if count == 0:
        return [], []
    table = pf.read_row_groups(groups, columns=[id_field, text_field]).slice(start - first_row, count)
    ids, texts = table.column(id_field).to_pylist(), table.column(text_field).to_pylist()
    if len(ids) != count:
        raise InvalidArgumentError(f"{full}: fewer rows than expected: the input changed while the job ran")
    return ids, texts


def read_shard(files: list[tuple[str, str]], segments, id_field: str, text_field: str, shard: int) -> dict:
    """One shard's records as a batch: ``shard``, ``row`` (0 .. n-1), ``id``, ``text`` (dict of NumPy arrays).

    ``files`` are (absolute path, format) in global order, ``segments`` the shard's plan (scan.py:plan)."""
    ids, texts = [], []
    for f, start, count, offset in segments:
        i, t = read_segment(files[f][0], files[f][1], start, count, offset, id_field, text_field)
        ids += i
        texts += t
    if ids and isinstance(ids[0], int):                     # ids are all integers or all strings (scan.py)
        id_column = np.array(ids, dtype=np.int64)
    else:
        id_column = np.empty(len(ids), dtype=object)
        id_column[:] = ids
    text_column = np.empty(len(texts), dtype=object)
    text_column[:] = texts
    return {"shard": np.full(len(ids), shard, dtype=np.int64), "row": np.arange(len(ids), dtype=np.int64),
            "id": id_column, "text": text_column}


def read_shard_batch(batch: dict, files, id_field: str, text_field: str) -> dict:
    """``read_shard`` as a Ray Data ``map_batches`` function over rows ``{"shard": k, "segments": json}``."""
    parts = [read_shard(files, json.loads(seg), id_field, text_field, int(k))
             for k, seg in zip(batch["shard"], batch["segments"])]
    return {key: np.concatenate([p[key] for p in parts]) for key in ("shard", "row", "id", "text")}
