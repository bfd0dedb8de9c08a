"""Reading (and atomically writing) safetensors files with NumPy memory maps.

The format (docs/references.md#safetensors)::

    [ u64 little-endian N ][ N bytes of UTF-8 JSON header ][ data ... ]
    header = {"__metadata__": {str: str},                          (optional)
              "<name>": {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [start, end]}, ...}
    offsets are relative to the first byte after the header; tensors are little-endian, C order.

We read the header ourselves (instead of ``safetensors.numpy``) because NumPy has no bfloat16: a
BF16 tensor is mapped as ``uint16`` and widened by ``bf16_to_f32`` when it is used. The header comes from
a file we did not write, so it is checked before anything is mapped, and every refusal names the file and
the tensor: a truncated file, an entry that is not a dtype/shape/offsets triple, a shape whose byte size
does not match its offsets (or does not fit in 64 bits), byte ranges that overlap or run past the data.

Checked against the safetensors library both ways: tests/test_checkpoint.py reads files its ``save_file``
wrote (and checks ``bf16_to_f32`` and ``f32_to_bf16`` against torch's bfloat16), tests/test_quantize.py
and tests/test_golden.py read what this file writes with its ``load_file``; tests/test_hardening.py and
tests/test_fuzz.py give it corrupt headers.

next: hf.py (folders of these files).
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..errors import CheckpointError, FileAccessError, PathNotFoundError
from ..files import atomic_file
from .config_files import parse_json

# safetensors dtype -> numpy storage dtype (BF16 is kept as its uint16 bits)
_STORAGE = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_MAX_HEADER = 100 * 1024 * 1024


def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bits -> float32: a bf16 is the top half of a float32, so shift it back up 16 bits."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even (as torch does). Used to write test files."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


class SafetensorsFile:
    """One .safetensors file: its checked header, and memory-mapped arrays on demand."""

    def __init__(self, path: str):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header length)")
                (n,) = struct.unpack("<Q", head)
                if n > _MAX_HEADER or 8 + n > size:
                    raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, "
                                          f"file of {size} bytes)")
                raw = f.read(n)
        except FileNotFoundError:
            raise PathNotFoundError(f"{path}: no such file") from None
        except OSError as e:
            raise FileAccessError(f"{path}: cannot read ({e.strerror})") from None
        header = parse_json(raw, f"{path}: safetensors header", _MAX_HEADER, CheckpointError)
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ is not an object)")
        self.metadata = meta
        self.data_start = 8 + n
        self.data_size = size - self.data_start
        self.tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            self.tensors[name] = self._check(name, info)
        # As the safetensors library requires: the tensors tile the data section, in some order, with neither
        # gaps nor overlaps, and cover it to its end. Overlaps first: they name the entry that moved (a moved
        # entry also leaves a gap, which could only name its neighbour).
        spans = sorted((s, e, n) for n, (_, _, s, e) in self.tensors.items())
        covered, before = 0, None
        for start, end, name in spans:
            if start < covered:
                raise CheckpointError(f"{path}: tensor {name!r} (bytes {start}..{end} of the data) overlaps tensor "
                                      f"{before!r}, which ends at {covered}")
            covered, before = end, name
        covered, before = 0, None
        for start, end, name in spans:
            if start > covered:
                after = f" after tensor {before!r}" if before else ""
                raise CheckpointError(f"{path}: tensor {name!r} starts at byte {start} of the data, leaving bytes "
                                      f"{covered}..{start}{after} unaccounted for (corrupt data_offsets)")
            covered, before = end, name
        if covered != self.data_size:
            after = f" after tensor {before!r}" if before else ""   # the last tensor: a dropped entry's neighbour
            raise CheckpointError(f"{path}: the tensors cover {covered} bytes of a {self.data_size}-byte data section, "
                                  f"leaving bytes {covered}..{self.data_size}{after} unaccounted for (corrupt "
                                  "data_offsets, or bytes appended to the file)")

    def _check(self, name, info):
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise CheckpointError(f"{where}: malformed header entry (needs dtype, shape, data_offsets)")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _STORAGE:
            raise CheckpointError(f"{where}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 8:
            raise CheckpointError(f"{where}: malformed shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise CheckpointError(f"{where}: malformed data_offsets {offsets!r}")
        nbytes = _STORAGE[dtype].itemsize
        for s in shape:
            nbytes *= s                                  # Python ints: no overflow while checking
        start, end = offsets
        if start < 0 or end - start != nbytes:
            raise CheckpointError(f"{where}: data_offsets {start}..{end} do not hold {dtype}{list(shape)} "
                                  f"({nbytes} bytes)")
        if end > self.data_size:
            raise CheckpointError(f"{self.path}: truncated: tensor {name!r} ends at byte {end} of the data section, "
                                  f"which holds only {self.data_size} bytes")
        return dtype, tuple(shape), start, end

    def keys(self):
        return self.tensors.keys()

    def dtype(self, name: str) -> str:
        return self.tensors[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name][1]

    def nbytes(self, name: str) -> int:
        _, _, start, end = self.tensors[name]
        return end - start

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored (BF16 as uint16), memory-mapped read-only: no bytes are read yet."""
        dtype, shape, start, end = self.tensors[name]
        if end == start:
            return np.zeros(shape, dtype=_STORAGE[dtype])
        return np.memmap(self.path, dtype=_STORAGE[dtype], mode="r", offset=self.data_start + start, shape=shape)


def to_dtype(raw: np.ndarray, st_dtype: str, dtype) -> np.ndarray:
    """A stored float tensor converted to a float compute dtype (a copy unless it already is one)."""
    if st_dtype == "BF16":
        return bf16_to_f32(raw).astype(dtype, copy=False)
    if st_dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"cannot use a {st_dtype} tensor as float weights")
    return np.asarray(raw).astype(dtype, copy=False)


def write_streaming(path: str, entries: list[tuple[str, str, tuple]], produce, metadata: dict | None = None,
                    on_tensor=None) -> None:
    """Write a safetensors file tensor by tensor, atomically (files.atomic_file).

    ``entries`` lists (name, safetensors dtype, shape) in file order; the header follows from the shapes
    alone, so ``produce(name)`` is called once per tensor, just before its bytes are written, and only
    one tensor needs to exist in memory at a time. BF16 tensors are produced as uint16 bits."""
    header, offset = {}, 0
    for name, st_dtype, shape in entries:
        n = int(np.prod(shape, dtype=np.int64)) * _STORAGE[st_dtype].itemsize
        header[name] = {"dtype": st_dtype, "shape": [int(s) for s in shape], "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with atomic_file(path) as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, st_dtype, shape in entries:
            arr = np.ascontiguousarray(produce(name))
            start, end = header[name]["data_offsets"]
            if tuple(arr.shape) != tuple(shape) or arr.nbytes != end - start or \
                    arr.dtype.itemsize != _STORAGE[st_dtype].itemsize:
                raise CheckpointError(f"{path}: tensor {name!r} produced {arr.dtype}{list(arr.shape)}, "
                                 f"expected {st_dtype}{list(shape)}")
            f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
            if on_tensor is not None:
                on_tensor(name)


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None,
              dtypes: dict[str, str] | None = None) -> None:
    """Write in-memory arrays as a safetensors file (``dtypes`` may say "BF16" for uint16 bits)."""
    names = {np.dtype(v).str: k for k, v in _STORAGE.items() if k not in ("BF16", "U16")}
    names[np.dtype("<u2").str] = "U16"
    entries = []
    for n, a in tensors.items():
        a = np.asarray(a)
        key = a.dtype.newbyteorder("<").str if a.dtype.itemsize > 1 else a.dtype.str
        entries.append((n, (dtypes or {}).get(n) or names[key], a.shape))
    write_streaming(path, entries, lambda n: tensors[n], metadata)
