"""The block-transposed layout the fast kernels read: ggml's nibbles, reordered once at load time.

In a ggml row the 16 nibble bytes of a block sit together, so a SIMD lane would have to walk along
one block. We reorder each row so that *byte j of 64 consecutive blocks* is contiguous: a vector
lane is then one block, each lane keeps its own partial sum, and nothing is summed across lanes
until the end of the row (PERF.md, "Layout LLVM can vectorize"). Scales move to their own array.

A row of nb blocks is cut into chunks of G = 64 blocks (the last chunk has g = nb mod 64 blocks if
nb is not a multiple of 64). Inside a chunk starting at block c*G, of width g::

    ggml row:        [d0 qs0[0..15]] [d1 qs1[0..15]] ... [d63 qs63[0..15]] [d64 ...
    transposed qs:   qs0[0] qs1[0] ... qs63[0]  qs0[1] qs1[1] ... qs63[1]  ...  qs0[15] ... qs63[15]
                     |------ byte 0 of g blocks -----|------ byte 1 ------|       |---- byte 15 ----|
                     position in the row: c*G*16 + j*g + b   holds   byte j of block c*G + b
    scales d:        d0 d1 ... d63 d64 ...   (fp16 kept as raw uint16 bits; Q4_1 also has m)

Example, nb = 2 blocks (in = 64), so one chunk of width g = 2: the row's 32 qs bytes become
``A[0] B[0] A[1] B[1] ... A[15] B[15]`` for blocks A and B.

The same bytes, the same fp16 scales: this costs exactly the memory of the file, and the ggml bytes
can be rebuilt from it (``unrepack``), so a tensor keeps one copy, not two.

next: kernels.py (the Numba kernels that read it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

G = 64  # blocks per chunk: one SIMD lane per block


@dataclass
class NibbleLayout:
    """A Q4_0 or Q4_1 weight in the block-transposed layout. w = d * (q - offset) [+ m]."""

    qs: np.ndarray  # (out, nb*16) uint8, transposed as drawn above
    d: np.ndarray  # (out, nb) uint16: fp16 bits of the scales
    m: np.ndarray | None  # (out, nb) uint16 fp16 bits of the minimums (Q4_1), else None
    offset: int  # 8 for Q4_0, 0 for Q4_1

    @property
    def nbytes(self) -> int:
        return self.qs.nbytes + self.d.nbytes + (0 if self.m is None else self.m.nbytes)


def transpose_chunks(qs: np.ndarray) -> np.ndarray:
    """(out, nb, 16) block bytes -> (out, nb*16) transposed layout (full chunks, then the ragged one)."""
    out_dim, nb, k = qs.shape
    full = nb // G * G
    parts = []
    if full:
        parts.append(qs[:, :full].reshape(out_dim, full // G, G, k).transpose(0, 1, 3, 2).reshape(out_dim, full * k))
    if nb > full:
        parts.append(qs[:, full:].transpose(0, 2, 1).reshape(out_dim, (nb - full) * k))
    return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])


def untranspose_chunks(qt: np.ndarray, k: int = 16) -> np.ndarray:
    """Inverse of ``transpose_chunks``.  (out, nb*k) -> (out, nb, k)"""
    out_dim = qt.shape[0]
    nb = qt.shape[1] // k
    full = nb // G * G
    parts = []
    if full:
        parts.append(qt[:, :full * k].reshape(out_dim, full // G, k, G).transpose(0, 1, 3, 2).reshape(out_dim, full, k))
    if nb > full:
        parts.append(qt[:, full * k:].reshape(out_dim, k, nb - full).transpose(0, 2, 1))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else np.ascontiguousarray(parts[0])


def repack(packed: np.ndarray, shape: tuple[int, int], qtype: str) -> NibbleLayout:
    """ggml Q4_0 / Q4_1 bytes (out, nb*18 or nb*20) -> NibbleLayout (same number of bytes)."""
    out_dim, in_dim = shape
    nb = in_dim // 32
    head = {"Q4_0": 2, "Q4_1": 4}[qtype]  # bytes before the 16 nibble bytes
    blocks = packed.reshape(out_dim, nb, head + 16)
    d = np.ascontiguousarray(np.ascontiguousarray(blocks[:, :, 0:2]).view(np.uint16)[:, :, 0])  # (out, nb)
    m = np.ascontiguousarray(np.ascontiguousarray(blocks[:, :, 2:4]).view(np.uint16)[:, :, 0]) if qtype == "Q4_1" else None
    lay = NibbleLayout(transpose_chunks(blocks[:, :, head:]), d, m, 8 if qtype == "Q4_0" else 0)
    assert lay.nbytes == packed.nbytes
    return lay


def unrepack(lay: NibbleLayout) -> np.ndarray:
    """NibbleLayout -> the ggml bytes it came from.  -> (out, nb*18 or nb*20) uint8"""
    out_dim, nb = lay.d.shape
    fields = [lay.d.view(np.uint8).reshape(out_dim, nb, 2)]
    if lay.m is not None:
        fields.append(lay.m.view(np.uint8).reshape(out_dim, nb, 2))
    fields.append(untranspose_chunks(lay.qs))
    return np.concatenate(fields, axis=2).reshape(out_dim, -1)
