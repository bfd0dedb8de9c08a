"""The GGUF container, parsed with every count, length and offset checked before it sizes anything.

    "GGUF" | version u32 (2 or 3) | n_tensors u64 | n_kv u64
    n_kv x  (key: string, value type: u32, value)           string = u64 length + UTF-8 bytes
    n_tensors x (name: string, n_dims: u32, ne: n_dims x u64, ggml type: u32, offset: u64)
    padding to ``general.alignment`` (32 unless the metadata says otherwise) | tensor data

    value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
                 9 array (element type u32, count u64, elements), 10 u64, 11 i64, 12 f64

(docs/references.md#gguf). The file comes from a stranger, so the reader never trusts a number before it is
checked: a count or a length must fit in the bytes that remain (an array of 2**40 strings in a 100 MB file is
refused at once, not looped over), nesting is bounded, strings must be UTF-8, a tensor's type must be known,
its first dimension a whole number of blocks, its data offset aligned, and the tensors' byte ranges must lie
in the data section without overlapping. Each refusal is one ``GGUFError`` naming the file and the key or
tensor. Tensor data is memory-mapped, never read here.

gguf-py (``gguf.GGUFReader``) reads the same container and is the tests' independent reader; only its tables
of ggml type names and block sizes are used here.

tests/test_gguf.py reads files that gguf-py's ``GGUFWriter`` wrote; tests/test_hardening.py and
tests/test_fuzz.py give it corrupt ones (misaligned offsets, absurd array counts, wrong value types, invalid
UTF-8).

next: back to gguf.py (the reader built on this container).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import GGUFError, PathNotFoundError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ARRAY_DEPTH = 2            # an array of arrays is allowed (llama.cpp writes none); deeper is refused
_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
           12: "<f8"}
_STRUCT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY, _BOOL = 8, 9, 7
_MIN_SIZE = {**{t: np.dtype(d).itemsize for t, d in _SCALAR.items()}, _STRING: 8, _ARRAY: 12}


def ggml_types() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, elements per block, bytes per block), from gguf-py's tables."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    return {t.value: (t.name, *GGML_QUANT_SIZES[t]) for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}


@dataclass
class TensorInfo:
    name: str
    ne: tuple[int, ...]           # ggml order: ne[0] is the fastest dimension
    type_name: str
    offset: int                   # from the start of the data section
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical shape, slowest dimension first: a [out, in] matrix is ne = (in, out)."""
        return tuple(reversed(self.ne))


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str):
        if n < 0 or n > self.remaining():
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF file: {what} needs {n} bytes at offset "
                            f"{self.pos}, {self.remaining()} remain")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{self.path}: {what} is not valid UTF-8 (byte {e.start})") from None

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in _SCALAR:
            v = self.unpack(_STRUCT[vtype], what)
            return bool(v) if vtype == _BOOL else v
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFError(f"{self.path}: {what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
            etype, count = self.unpack("<I", what), self.unpack("<Q", what)
            if etype not in _MIN_SIZE:
                raise GGUFError(f"{self.path}: {what} is an array of unknown value type {etype}")
            if count * _MIN_SIZE[etype] > self.remaining():
                raise GGUFError(f"{self.path}: {what} claims {count} elements, more than the {self.remaining()} bytes "
                                "left in the file can hold")
            if etype in _SCALAR:
                dt = np.dtype(_SCALAR[etype])
                arr = np.frombuffer(self.take(count * dt.itemsize, what), dtype=dt)
                return [bool(x) for x in arr] if etype == _BOOL else arr.tolist()
            return [self.value(etype, f"{what}[{i}]", depth + 1) for i in range(count)]
        raise GGUFError(f"{self.path}: {what} has unknown value type {vtype}")


@dataclass
class GGUFFile:
    path: str
    version: int
    metadata: dict
    tensors: list[TensorInfo]
    data_start: int
    alignment: int

    def data(self, t: TensorInfo) -> np.ndarray:
        """The tensor's bytes, memory-mapped: (rows, row bytes) uint8 with rows = the product of ne[1:]."""
        rows = int(np.prod(t.ne[1:], dtype=np.int64)) if len(t.ne) > 1 else 1
        if t.nbytes == 0:
            return np.zeros((rows, 0), dtype=np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.data_start + t.offset,
                         shape=(rows, t.nbytes // rows))


def read_gguf_file(path: str) -> GGUFFile:
    """Parse and check the container at ``path`` (no tensor data is read)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            buf = np.memmap(f, dtype=np.uint8, mode="r") if size else np.zeros(0, dtype=np.uint8)
    except FileNotFoundError:
        raise PathNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise GGUFError(f"{path}: cannot read ({e.strerror})") from None
    c = _Cursor(memoryview(buf), path)
    magic = bytes(c.take(4, "the magic number")) if size >= 4 else bytes(buf)
    if magic != MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected {MAGIC!r}; {size} bytes)")
    version = c.unpack("<I", "the version")
    if version not in VERSIONS:
        raise GGUFError(f"{path}: GGUF version {version} is not supported (mistral_np reads versions 2 and 3)")
    n_tensors, n_kv = c.unpack("<Q", "the tensor count"), c.unpack("<Q", "the metadata count")
    if n_kv * 12 > c.remaining() or n_tensors * 24 > c.remaining():
        raise GGUFError(f"{path}: corrupt GGUF header: {n_kv} metadata entries and {n_tensors} tensors cannot fit "
                        f"in the {c.remaining()} bytes that follow")
    metadata, key = {}, None
    for i in range(n_kv):       # a wrong value type before shifts what follows: name the key before, too
        key = c.string(f"metadata key {i}" + (f" (the one after {key!r})" if key is not None else ""))
        if key in metadata:
            raise GGUFError(f"{path}: metadata key {key!r} appears twice")
        vtype = c.unpack("<I", f"the type of metadata {key!r}")
        metadata[key] = c.value(vtype, f"metadata {key!r}")
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 20:
        raise GGUFError(f"{path}: metadata general.alignment must be a power of two, got {alignment!r}")
    types = ggml_types()
    infos, names = [], set()
    for i in range(n_tensors):
        name = c.string(f"the name of tensor {i}")
        if name in names:
            raise GGUFError(f"{path}: tensor {name!r} appears twice")
        names.add(name)
        n_dims = c.unpack("<I", f"tensor {name!r}'s dimension count")
        if not 1 <= n_dims <= 4:
            raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions (GGUF allows 1 to 4)")
        ne = tuple(c.unpack("<Q", f"tensor {name!r}'s shape") for _ in range(n_dims))
        type_id, offset = c.unpack("<I", f"tensor {name!r}'s type"), c.unpack("<Q", f"tensor {name!r}'s offset")
        if type_id not in types:
            raise GGUFError(f"{path}: tensor {name!r} has unknown ggml type id {type_id}")
        type_name, block, block_bytes = types[type_id]
        if any(d == 0 for d in ne) or ne[0] % block:
            raise GGUFError(f"{path}: tensor {name!r} of type {type_name} has shape {list(reversed(ne))}: its row "
                            f"length {ne[0]} is not a positive multiple of the {block}-element block")
        n = ne[0] // block * block_bytes
        for d in ne[1:]:
            n *= d
        if offset % alignment:
            raise GGUFError(f"{path}: tensor {name!r}'s data offset {offset} is not a multiple of the alignment "
                            f"{alignment}")
        infos.append(TensorInfo(name, ne, type_name, offset, n))
    data_start = -(-c.pos // alignment) * alignment
    data_size = size - data_start
    end, before = 0, None
    for t in sorted(infos, key=lambda t: t.offset):
        if t.offset < end:
            raise GGUFError(f"{path}: tensors {before.name!r} ({before.type_name}{list(before.shape)}, bytes "
                            f"{before.offset}..{end} of the data) and {t.name!r} (from byte {t.offset}) overlap: a type "
                            "or shape disagrees with the layout")
        end, before = t.offset + t.nbytes, t
        if end > data_size:
            raise GGUFError(f"{path}: truncated GGUF file: tensor {t.name!r} ({t.type_name}{list(t.shape)}, {t.nbytes} bytes at "
                            f"{t.offset}) ends past the {data_size} bytes of the data section")
    return GGUFFile(path, version, metadata, infos, data_start, alignment)
