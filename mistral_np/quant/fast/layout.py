"""The interleaved layout the decode kernels read: ggml's nibbles, reordered once at load time.

The x86 dot-product instruction the int8 kernel uses (``vpdpbusd``, simd.py) sums *4 adjacent bytes*
into one int32 lane. So we reorder each row so that a 32-byte vector holds 4 consecutive nibble bytes
of 8 consecutive blocks: lane b is block b, with its own scale, and nothing is summed across lanes
until the end of the row. Scales move to their own arrays (fp16 bits, unchanged).

A row of nb blocks is cut into groups of V = 8 blocks; the nb mod 8 blocks left at the end (the
"tail") keep ggml's order. Inside the group starting at block 8c, byte j = 4g + k of block 8c + b is at

    position c*128 + g*32 + b*4 + k        (g = 0..3: which 4 bytes, b = 0..7: block, k = 0..3)

    ggml row:   [d0 A0 A1 ... A15] [d1 B0 ... B15] ... [d7 H0 ... H15] [d8 ...
    qs row:     A0 A1 A2 A3 B0 B1 B2 B3 ... H0 H1 H2 H3 | A4..A7 B4..B7 ... | ... | A12..A15 ... H15 | next
                |------------ g = 0: 32 bytes --------| g = 1             |     | g = 3
    tail:       byte j of tail block t at nb8*16 + t*16 + j   (nb8 = nb - nb mod 8)
    scales d:   d0 d1 ... (fp16 kept as raw uint16 bits; Q4_1 also has m)

Byte j holds element j (low nibble) and element j + 16 (high nibble), as in ggml. The same bytes,
the same fp16 scales: the layout costs exactly the file's memory, and ``unrepack`` rebuilds the ggml
bytes, so a tensor keeps one copy, not two. Activations are reordered to match (decode.py).

**Tiles, for wide rows.** A row of more than TILE_BLOCKS = 128 blocks (4096 inputs: the 14336-wide down
projection of Mistral-7B) is stored in tiles: rows in chunks of TILE_ROWS = 16, columns in tiles of 128
blocks (the last tile takes what is left, tail blocks included), and within a chunk the rows' pieces of one
tile sit one after another, tile after tile. Counting in blocks (16 nibble bytes, or one scale), block b
of row r sits at

    block_at(r, b) = r0*nb + b0*nr + (r - r0)*nbt + (b - b0)
        r0 = r - r mod 16, nr = rows in that chunk (16 but in the last),
        b0 = b - b mod 128, nbt = blocks in that tile (128 but in the last)

    rows 0-15, nb = 448:  [r0 b0..127][r1 b0..127]...[r15 b0..127] [r0 b128..255]...[r15 b384..447] [r16 b0..127]...

so its nibble bytes start at byte 16 * block_at(r, b) of qs (flat) and its scale is d (flat) at
block_at(r, b): nibbles, scales and minimums share one order. Within a tile each row's piece is the
interleaved order drawn above. A row of at most 128 blocks is one tile: block_at(r, b) = r*nb + b, the
plain row order. Why: a few activation rows of 14336 int8 values do not fit in L1 together, so the
several-row decode kernel goes through such a weight tile by tile (decode.py); in row order it read 16
rows' 2 KiB pieces 7 KiB apart, which streamed from memory at ~2/3 of the speed of reading one stream
(AMD Zen 4, 2 threads, 4 rows of a 4096 x 14336 Q4_0 weight: 1.69-1.90 ms row-major, 1.37-1.52 ms in tiles,
the same bits; a kernel fixed at 4 rows on the tiles 1.20-1.24; docs/performance.md, thirteenth session). Every kernel that reads the layout addresses
blocks through ``block_at`` (or a tile's first block and the tile's row length), so none of them needs the
rows whole.

tests/test_quant_kernels.py checks that ``repack`` then ``unrepack`` gives the ggml bytes back, that the
repacked copy costs exactly the file's bytes, and the pictures above (the group order, the tail, the tiles).

next: simd.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

V = 8  # blocks per vector group: one int32 lane per block in a 256-bit vector
TILE_ROWS = 16  # rows per chunk of a tiled weight: the prompt GEMM's 16-row lane tiles and the decode ROW_CHUNK
TILE_BLOCKS = 128  # blocks per column tile (16 groups, 4096 inputs): 4 activation rows of it are 16 KiB of int8
TILE_GROUPS = TILE_BLOCKS // V


@njit(cache=True, inline="always")
def block_at(r, b, out_dim, nb):
    """Where block b of row r sits (in blocks: 16 nibble bytes, one scale) in a weight of out_dim rows of nb
    blocks, drawn above. A row of at most TILE_BLOCKS blocks: r * nb + b."""
    r0 = r - r % TILE_ROWS
    b0 = b - b % TILE_BLOCKS
    return r0 * nb + b0 * min(TILE_ROWS, out_dim - r0) + (r - r0) * min(TILE_BLOCKS, nb - b0) + (b - b0)


@njit(cache=True, inline="always")
def tile_base(r, b, out_dim, nb):
    """block_at(r, b) - b for the tile holding block b: block b' of row r in the same tile is at tile_base + b'.
    (A kernel going through a tile adds the block index, as it would to r * nb in row order.)"""
    b0 = b - b % TILE_BLOCKS
    return block_at(r, b0, out_dim, nb) - b0


@njit(cache=True, inline="always")
def tile_blocks(b, nb):
    """How many blocks the tile holding block b has: its rows' stride (in blocks) within a chunk."""
    b0 = b - b % TILE_BLOCKS
    return min(TILE_BLOCKS, nb - b0)


def _tile_pieces(t: np.ndarray, a: np.ndarray):
    """Views of the same blocks in the tiled array t and the row-order array a (both (out, nb, unit...)), a tile
    at a time: (t's pieces of the tile, one row of (chunks, nr * nbt) per chunk; a[r0:r1, b0:b1]). The whole
    chunks of 16 rows go together (one strided copy a tile), then the last, shorter chunk."""
    out_dim, nb, unit = a.shape[0], a.shape[1], a.shape[2:]
    flat = t.reshape(out_dim * nb, *unit)
    full = out_dim - out_dim % TILE_ROWS
    for r0, r1 in ((0, full), (full, out_dim)):
        if r1 == r0:
            continue
        nr = min(TILE_ROWS, r1 - r0)
        chunks = flat[r0 * nb:r1 * nb].reshape((r1 - r0) // nr, nr * nb, *unit)
        for b0 in range(0, nb, TILE_BLOCKS):
            b1 = min(b0 + TILE_BLOCKS, nb)
            start = b0 * nr                              # block_at(r0, b0) - r0 * nb: the chunk's piece of the tile
            yield chunks[:, start:start + nr * (b1 - b0)], a[r0:r1, b0:b1]


def to_tiles(a: np.ndarray) -> np.ndarray:
    """(out, nb, unit) in row order -> the same blocks in the tiled order, (out, nb, unit) (a copy; the rows are
    one tile, nb <= TILE_BLOCKS: the row order itself)."""
    if a.shape[1] <= TILE_BLOCKS:
        return np.ascontiguousarray(a)
    t = np.empty_like(a)
    for tiled, rows in _tile_pieces(t, a):
        tiled[...] = rows.reshape(tiled.shape)
    return t


def from_tiles(t: np.ndarray) -> np.ndarray:
    """Inverse of ``to_tiles``."""
    if t.shape[1] <= TILE_BLOCKS:
        return t
    a = np.empty_like(t)
    for tiled, rows in _tile_pieces(t, a):
        rows[...] = tiled.reshape(rows.shape)
    return a


@dataclass
class NibbleLayout:
    """A Q4_0 or Q4_1 weight in the interleaved layout. w = d * (q - offset) [+ m]."""

    qs: np.ndarray  # (out, nb*16) uint8, interleaved as drawn above; rows of more than 128 blocks in tiles
    d: np.ndarray  # (out, nb) uint16: fp16 bits of the scales, in the order of qs (block_at)
    m: np.ndarray | None  # (out, nb) uint16 fp16 bits of the minimums (Q4_1) in that order, else None
    offset: int  # 8 for Q4_0, 0 for Q4_1

    @property
    def nbytes(self) -> int:
        return self.qs.nbytes + self.d.nbytes + (0 if self.m is None else self.m.nbytes)


def interleave(qs: np.ndarray) -> np.ndarray:
    """(out, nb, 16) ggml block bytes -> (out, nb*16) interleaved layout (groups of V blocks, then the tail)."""
    out_dim, nb, _ = qs.shape
    nv = nb // V * V
    groups = qs[:, :nv].reshape(out_dim, nv // V, V, 4, 4).transpose(0, 1, 3, 2, 4).reshape(out_dim, nv * 16)
    return np.ascontiguousarray(np.concatenate([groups, qs[:, nv:].reshape(out_dim, (nb - nv) * 16)], axis=1))


def deinterleave(qt: np.ndarray) -> np.ndarray:
    """Inverse of ``interleave``.  (out, nb*16) -> (out, nb, 16)"""
    out_dim, nb = qt.shape[0], qt.shape[1] // 16
    nv = nb // V * V
    groups = qt[:, :nv * 16].reshape(out_dim, nv // V, 4, V, 4).transpose(0, 1, 3, 2, 4).reshape(out_dim, nv, 16)
    return np.concatenate([groups, qt[:, nv * 16:].reshape(out_dim, nb - nv, 16)], axis=1)


def repack(packed: np.ndarray, shape: tuple[int, int], qtype: str) -> NibbleLayout:
    """ggml Q4_0 / Q4_1 bytes (out, nb*18 or nb*20) -> NibbleLayout (same number of bytes)."""
    out_dim, in_dim = shape
    nb = in_dim // 32
    head = {"Q4_0": 2, "Q4_1": 4}[qtype]  # bytes before the 16 nibble bytes
    blocks = packed.reshape(out_dim, nb, head + 16)
    d = np.ascontiguousarray(np.ascontiguousarray(blocks[:, :, 0:2]).view(np.uint16)[:, :, 0])  # (out, nb)
    m = np.ascontiguousarray(np.ascontiguousarray(blocks[:, :, 2:4]).view(np.uint16)[:, :, 0]) if qtype == "Q4_1" else None
    qs = interleave(blocks[:, :, head:])
    if nb > TILE_BLOCKS:  # wide rows: the tiles drawn above (nibbles, scales, minimums in one order)
        qs = to_tiles(qs.reshape(out_dim, nb, 16)).reshape(out_dim, nb * 16)
        d = to_tiles(d)
        m = None if m is None else to_tiles(m)
    lay = NibbleLayout(qs, d, m, 8 if qtype == "Q4_0" else 0)
    assert lay.nbytes == packed.nbytes
    return lay


def unrepack(lay: NibbleLayout) -> np.ndarray:
    """NibbleLayout -> the ggml bytes it came from.  -> (out, nb*18 or nb*20) uint8"""
    out_dim, nb = lay.d.shape
    d, m, qs = lay.d, lay.m, lay.qs
    if nb > TILE_BLOCKS:  # back to row order
        d, m = from_tiles(d), None if m is None else from_tiles(m)
        qs = from_tiles(qs.reshape(out_dim, nb, 16)).reshape(out_dim, nb * 16)
    fields = [d.view(np.uint8).reshape(out_dim, nb, 2)]
    if m is not None:
        fields.append(m.view(np.uint8).reshape(out_dim, nb, 2))
    fields.append(deinterleave(qs))
    return np.concatenate(fields, axis=2).reshape(out_dim, -1)
