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

tests/test_quant_kernels.py checks that ``repack`` then ``unrepack`` gives the ggml bytes back, that the
repacked copy costs exactly the file's bytes, and the picture above (the group order and the tail).

next: simd.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

V = 8  # blocks per vector group: one int32 lane per block in a 256-bit vector


@dataclass
class NibbleLayout:
    """A Q4_0 or Q4_1 weight in the interleaved layout. w = d * (q - offset) [+ m]."""

    qs: np.ndarray  # (out, nb*16) uint8, interleaved as drawn above
    d: np.ndarray  # (out, nb) uint16: fp16 bits of the scales
    m: np.ndarray | None  # (out, nb) uint16 fp16 bits of the minimums (Q4_1), else None
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
    lay = NibbleLayout(interleave(blocks[:, :, head:]), d, m, 8 if qtype == "Q4_0" else 0)
    assert lay.nbytes == packed.nbytes
    return lay


def unrepack(lay: NibbleLayout) -> np.ndarray:
    """NibbleLayout -> the ggml bytes it came from.  -> (out, nb*18 or nb*20) uint8"""
    out_dim, nb = lay.d.shape
    fields = [lay.d.view(np.uint8).reshape(out_dim, nb, 2)]
    if lay.m is not None:
        fields.append(lay.m.view(np.uint8).reshape(out_dim, nb, 2))
    fields.append(deinterleave(lay.qs))
    return np.concatenate(fields, axis=2).reshape(out_dim, -1)
