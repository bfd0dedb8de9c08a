"""Prompts (T > 1) with int8 activations: a block-quantized GEMM on integer dot products.

A prompt of T tokens multiplies every weight by a (T, in) matrix. ``activations="int8"`` quantizes each
row of x to Q8_0 blocks (xq int8, one float32 scale dx per block, as decode.py does for one row) and
computes, for weight row r and token t,

    y[t, r] = sum_b d[r,b] dx[t,b] (sum_j q[r,b,j] xq[t,b,j] - offset sum_j xq[t,b,j])  [+ m[r,b] dx[t,b] sum_j xq[t,b,j]]
                                    \\___________ int32, exact: the accumulator starts at -offset sum xq ___/

the numbers of the NumPy twin ``matmul_int8_ref`` (quant/activations.py) up to the float32 rounding of
the sum over blocks (tests/test_quant_kernels.py, with the bound derived there).

The work is cut like a small BLAS. The micro-kernel takes 1 weight row and 4 tokens over a chunk of
the row. Per group of 8 blocks (layout.py) it unpacks the row's bytes once into nibble vectors, dots
them against each token's activation vectors, converts the 8 block sums to float32 and adds them with
one fma per token, scaled by d * dx. Two widths of the same kernel:

* 256 bits (every x86-64 CPU with AVX2; simd.py): ``dot8_nibbles``: 8 ``vpdpbusd``, or on AVX2 8
  ``vpmaddubsw`` summed in int16 lanes then one ``vpmaddwd``;
* 512 bits (AVX-512 VNNI; simd512.py): a 64-byte load holds two 32-byte pieces of a group, so 4
  ``vpdpbusd`` on zmm registers do the group; int32 lanes i and i + 8 are two halves of block i's sum,
  which is why the scales are loaded twice and -offset sum xq once (the "16-lane" activation arrays).
  The activations are laid out to match: pieces reordered by WIDE_ORDER.

Rows are split into work items, the same number per thread (static: Numba's dynamic schedule ran
these loops 6-13x slower); inside an item the row is cut into chunks of GROUPS_PER_CHUNK groups, then
tokens go 4 at a time past every row of the item, so 4 tokens' chunk (16 KiB) stays in L1 while the
item's weights stay in L2. Variants measured (docs/quantization.md, "int8 activations"): 2 rows x 4
tokens (10 % faster with VNNI on 14336-long rows, 30-45 % slower on AVX2 whose 16 registers cannot hold
16 nibble vectors), 1 row x 8 tokens (no faster), accumulators starting at -offset sum xq instead of a
subtraction per group (10 % faster, kept).

    x (T, in) float32 --prepare_rows_int8--> Activations: xr (T4, G*256) int8 in the kernel's order, and
        per block: nsxo = -offset * sum xq (int32), dx, dxs = dx * sum xq (float32), (T4, G*8) each,
        per 16 lanes (wide kernel): nsxo16, dx16, dxs16 (T4, G*16)
        T4 = T rounded up to 4, G = nb / 8 rounded up: padding is zeros, and its results are dropped

The nb mod 8 blocks after the last whole group (SmolLM2's rows of 576 have 2) form one more, padded
group: each work item copies its rows' tail blocks into a zero-padded group (d = m = 0) that the same
micro-kernel reads. (A separate pass over them, one call per row and token, made SmolLM2's prompt
3-10x slower than 4096-wide rows per operation.)

Q8_0 weights (ggml's 34-byte blocks, kept as they are for decode) are repacked TILE_ROWS rows at a time
into the same order as the activations (tail group padded), as unsigned bytes q + 128 (the accumulator
then starts at -128 sum xq): VNNI takes any unsigned byte; AVX2 splits them into nibbles (dot8_bytes).

next: kernels.py (entry points).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..common import Q
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .layout import V
from .simd import (cvt_i32x8, dot8_bytes, dot8_nibbles, fma_f32x8, hsum_f32x8, load_f16x8, load_f32x8, load_i8x32,
                   load_i32x8, mul_f32x8, nib_hi, nib_lo, zero_f32x8)
from .simd512 import (cvt_i32x16, dpbusd512, fma_f32x16, hsum_f32x16, load_f16x8_twice, load_f32x16, load_i8x64,
                      load_i32x16, mul_f32x16, nib_hi64, nib_lo64, zero_f32x16)

TOKENS = 4  # tokens per micro-kernel
GROUPS_PER_CHUNK = 16  # vector groups per chunk of a row: 16 * 256 = 4096 values, 4 tokens = 16 KiB of int8
TILE_ROWS = 16  # Q8_0 rows repacked at a time: 16 * 4096 bytes = 64 KiB
WIDE_ORDER = (0, 2, 1, 3, 4, 6, 5, 7)  # piece j of a wide group holds decode.interleave_x's piece WIDE_ORDER[j]


class Activations(NamedTuple):
    """Rows of x quantized for the GEMM (see the module docstring)."""

    xr: np.ndarray
    nsxo: np.ndarray
    dx: np.ndarray
    dxs: np.ndarray
    nsxo16: np.ndarray
    dx16: np.ndarray
    dxs16: np.ndarray


# ---------------------------------------------------------------- activations


@njit(cache=True)
def _quantize_row(x, offset, wide, xr, nsxo, dx, dxs, nsxo16, dx16, dxs16):
    """One row of x -> Q8_0 blocks (decode.quantize_x_q8_0's numbers), written in place in the kernel's order:
    byte j = 16 h + 4 g + k of block 8c + b goes to piece 2g + h of group c (WIDE_ORDER[2g + h] if wide),
    lane b, byte k. The last group may be partly padding (zeros)."""
    nb = x.shape[0] // Q
    for blk in range(nb):
        amax = np.float32(0.0)
        for j in range(Q):
            amax = max(amax, abs(x[blk * Q + j]))
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        c, b = blk // V, blk % V
        total = 0
        for j in range(Q):
            v = x[blk * Q + j] * inv
            a = abs(v)
            r = np.floor(a) + np.floor(2 * (a - np.floor(a)))  # round half away from zero
            q = np.int8(r if v >= 0 else -r)
            total += q
            piece = 2 * ((j % 16) // 4) + j // 16
            if wide:
                piece = WIDE_ORDER[piece]
            xr[c * 256 + piece * 32 + b * 4 + j % 4] = q
        nsxo[blk] = -total * offset
        dx[blk] = d
        dxs[blk] = d * np.float32(total)
        if wide:
            nsxo16[c * 16 + b] = nsxo[blk]
            dxs16[c * 16 + b] = dxs[blk]
            dx16[c * 16 + b] = d
            dx16[c * 16 + V + b] = d


@njit(parallel=True, cache=True)
def _prepare(x, offset, wide):
    t_real, n = x.shape
    ng = (n // Q + V - 1) // V
    nw = ng * 16 if wide else 0
    t4 = (t_real + TOKENS - 1) // TOKENS * TOKENS
    xr = np.zeros((t4, ng * 256), dtype=np.int8)
    nsxo, dx, dxs = np.zeros((t4, ng * V), np.int32), np.zeros((t4, ng * V), np.float32), np.zeros((t4, ng * V), np.float32)
    nsxo16, dx16, dxs16 = np.zeros((t4, nw), np.int32), np.zeros((t4, nw), np.float32), np.zeros((t4, nw), np.float32)
    for t in prange(t_real):
        _quantize_row(x[t], offset, wide, xr[t], nsxo[t], dx[t], dxs[t], nsxo16[t], dx16[t], dxs16[t])
    return xr, nsxo, dx, dxs, nsxo16, dx16, dxs16


def prepare_rows_int8(x: np.ndarray, offset: int, wide: bool) -> Activations:
    """x (T, in) float32 -> Activations for a weight with this offset (8 Q4_0, 0 Q4_1, 128 Q8_0)."""
    return Activations(*_prepare(x, offset, wide))


@njit(cache=True)
def _views(a, t0, wide):
    """4 tokens' rows of each activation array (the micro-kernels' inputs)."""
    s, e = (a.nsxo16, a.dx16) if wide else (a.nsxo, a.dx)
    return ((a.xr[t0], a.xr[t0 + 1], a.xr[t0 + 2], a.xr[t0 + 3]), (s[t0], s[t0 + 1], s[t0 + 2], s[t0 + 3]),
            (e[t0], e[t0 + 1], e[t0 + 2], e[t0 + 3]))


# ---------------------------------------------------------------- one group, 4 tokens: 256 and 512 bits


@njit(cache=True)
def _pieces(v, c):
    """The 8 32-byte pieces of group c of a row (activations, or repacked Q8_0 bytes)."""
    o = c * 256
    return (load_i8x32(v, o), load_i8x32(v, o + 32), load_i8x32(v, o + 64), load_i8x32(v, o + 96),
            load_i8x32(v, o + 128), load_i8x32(v, o + 160), load_i8x32(v, o + 192), load_i8x32(v, o + 224))


@njit(cache=True)
def _nibbles(q, c):
    """The 8 nibble vectors of group c of a nibble-layout row, facing _pieces' order: piece 2g + h is the
    low (h = 0) or high (h = 1) nibbles of the row's 32-byte vector g."""
    v0, v1 = load_i8x32(q, c * 128), load_i8x32(q, c * 128 + 32)
    v2, v3 = load_i8x32(q, c * 128 + 64), load_i8x32(q, c * 128 + 96)
    return (nib_lo(v0), nib_hi(v0), nib_lo(v1), nib_hi(v1), nib_lo(v2), nib_hi(v2), nib_lo(v3), nib_hi(v3))


@njit(cache=True)
def _group(y, u, nibbles, sc, xs, ss, es, cx):
    """y (4 float32x8 accumulators) + group cx's block sums for 4 tokens times sc * dx (256 bits).
    u: the weight row's 8 vectors (nibbles, or Q8_0's unsigned bytes)."""
    return (_token(y[0], u, nibbles, sc, xs[0], ss[0], es[0], cx), _token(y[1], u, nibbles, sc, xs[1], ss[1], es[1], cx),
            _token(y[2], u, nibbles, sc, xs[2], ss[2], es[2], cx), _token(y[3], u, nibbles, sc, xs[3], ss[3], es[3], cx))


@njit(cache=True)
def _token(y, u, nibbles, sc, x, s, e, cx):
    """One token of _group: the integer block sums (from -offset sum xq), to float32, times d * dx."""
    o = cx * V
    acc = dot8_nibbles(load_i32x8(s, o), u, _pieces(x, cx)) if nibbles else dot8_bytes(load_i32x8(s, o), u, _pieces(x, cx))
    return fma_f32x8(cvt_i32x8(acc), mul_f32x8(sc, load_f32x8(e, o)), y)


@njit(cache=True)
def _dot_wide(u, x, c, acc):
    """acc + the 4 zmm vpdpbusd of group c: u 4 vectors of 64 unsigned bytes, x a row in the wide order."""
    o = c * 256
    acc = dpbusd512(acc, u[0], load_i8x64(x, o))
    acc = dpbusd512(acc, u[1], load_i8x64(x, o + 64))
    acc = dpbusd512(acc, u[2], load_i8x64(x, o + 128))
    return dpbusd512(acc, u[3], load_i8x64(x, o + 192))


@njit(cache=True)
def _group_wide(y, u, sc, xs, ss, es, cx):
    """_group on 512 bits: u 4 vectors of 64 bytes (a 64-byte load holds pieces 2i and 2i+1 of a nibble
    row, whose low and high nibbles face WIDE_ORDER's pieces), sc the scales loaded twice."""
    o = cx * 16
    y0 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[0], cx, load_i32x16(ss[0], o))), mul_f32x16(sc, load_f32x16(es[0], o)), y[0])
    y1 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[1], cx, load_i32x16(ss[1], o))), mul_f32x16(sc, load_f32x16(es[1], o)), y[1])
    y2 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[2], cx, load_i32x16(ss[2], o))), mul_f32x16(sc, load_f32x16(es[2], o)), y[2])
    y3 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[3], cx, load_i32x16(ss[3], o))), mul_f32x16(sc, load_f32x16(es[3], o)), y[3])
    return (y0, y1, y2, y3)


@njit(cache=True)
def _minimums_wide(y, mn, a, t0, cx):
    """_minimums on 512 bits (dxs16 is zero in lanes 8-15: each block's m term is added once)."""
    o = cx * 16
    return (fma_f32x16(mn, load_f32x16(a.dxs16[t0], o), y[0]), fma_f32x16(mn, load_f32x16(a.dxs16[t0 + 1], o), y[1]),
            fma_f32x16(mn, load_f32x16(a.dxs16[t0 + 2], o), y[2]), fma_f32x16(mn, load_f32x16(a.dxs16[t0 + 3], o), y[3]))


@njit(cache=True)
def _minimums(y, mn, a, t0, cx):
    """Q4_1: y + m * dx * sum xq for group cx (mn: the row's minimums of the group, float32 lanes)."""
    o = cx * V
    return (fma_f32x8(mn, load_f32x8(a.dxs[t0], o), y[0]), fma_f32x8(mn, load_f32x8(a.dxs[t0 + 1], o), y[1]),
            fma_f32x8(mn, load_f32x8(a.dxs[t0 + 2], o), y[2]), fma_f32x8(mn, load_f32x8(a.dxs[t0 + 3], o), y[3]))


# ---------------------------------------------------------------- Q4_0 / Q4_1


@njit(cache=True)
def _nibble_row_1x4(q, dr, mr, qt, dt, mt, has_m, a, t0, c0, c1, tail, y, r):
    """The 256-bit micro-kernel: y[t0:t0+4, r] += row r times tokens t0..t0+3 over groups c0..c1-1, then
    the padded tail group (qt, dt, mt) if ``tail``. Registers: 8 nibble vectors, 4 accumulators."""
    xs, ss, es = _views(a, t0, False)
    acc = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
    for i in range(c1 - c0 + tail):
        row, drow, mrow, cq = (q, dr, mr, c0 + i) if i < c1 - c0 else (qt, dt, mt, 0)
        acc = _group(acc, _nibbles(row, cq), True, load_f16x8(drow, cq * V), xs, ss, es, c0 + i)
        if has_m:
            acc = _minimums(acc, load_f16x8(mrow, cq * V), a, t0, c0 + i)
    for k in range(4):
        y[t0 + k, r] += hsum_f32x8(acc[k])


@njit(cache=True)
def _nibble_row_wide_1x4(q, dr, mr, qt, dt, mt, has_m, a, t0, c0, c1, tail, y, r):
    """_nibble_row_1x4 on 512 bits: two 64-byte loads per group give 4 nibble vectors."""
    xs, ss, es = _views(a, t0, True)
    acc = (zero_f32x16(), zero_f32x16(), zero_f32x16(), zero_f32x16())
    for i in range(c1 - c0 + tail):
        row, drow, mrow, cq = (q, dr, mr, c0 + i) if i < c1 - c0 else (qt, dt, mt, 0)
        v0, v1 = load_i8x64(row, cq * 128), load_i8x64(row, cq * 128 + 64)
        u = (nib_lo64(v0), nib_hi64(v0), nib_lo64(v1), nib_hi64(v1))
        acc = _group_wide(acc, u, load_f16x8_twice(drow, cq * V), xs, ss, es, c0 + i)
        if has_m:
            acc = _minimums_wide(acc, load_f16x8_twice(mrow, cq * V), a, t0, c0 + i)
    for k in range(4):
        y[t0 + k, r] += hsum_f32x16(acc[k])


@njit(cache=True)
def _tail_groups(qs, d, m, has_m, lo, hi, qt, dt, mt):
    """Rows lo..hi's tail blocks (ggml order in the layout, layout.py) -> one zero-padded interleaved group
    each: qt (rows, 128) nibble bytes, dt, mt (rows, 8) fp16 bits (0 = 0.0 for the padding)."""
    nb = d.shape[1]
    nv = nb // V
    qt[:] = 0
    dt[:] = 0
    mt[:] = 0
    for i in range(hi - lo):
        for b in range(nb - nv * V):
            dt[i, b] = d[lo + i, nv * V + b]
            if has_m:
                mt[i, b] = m[lo + i, nv * V + b]
            for g in range(4):
                for k in range(4):
                    qt[i, g * 32 + b * 4 + k] = qs[lo + i, nv * 128 + b * 16 + 4 * g + k]


@njit(parallel=True, cache=True)
def gemm_nibbles_int8(a, qs, d, m, has_m, wide, n_groups):
    """y (T4, out) = the int8-activation product of prepared rows ``a`` and a nibble-layout weight."""
    out_dim, nb = d.shape
    nv = nb // V
    tail = 1 if nb % V else 0
    t4 = a.xr.shape[0]
    y = np.zeros((t4, out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        lo, hi = grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups
        qt = np.empty((hi - lo, 128), dtype=np.uint8)
        dt, mt = np.empty((hi - lo, V), dtype=np.uint16), np.empty((hi - lo, V), dtype=np.uint16)
        if tail:
            _tail_groups(qs, d, m, has_m, lo, hi, qt, dt, mt)
        for c0 in range(0, max(nv, 1), GROUPS_PER_CHUNK):
            c1 = min(nv, c0 + GROUPS_PER_CHUNK)
            last = tail if c1 == nv else 0
            for t0 in range(0, t4, TOKENS):
                for r in range(lo, hi):
                    mr = m[r if has_m else 0]
                    if wide:
                        _nibble_row_wide_1x4(qs[r], d[r], mr, qt[r - lo], dt[r - lo], mt[r - lo], has_m, a, t0, c0, c1,
                                             last, y, r)
                    else:
                        _nibble_row_1x4(qs[r], d[r], mr, qt[r - lo], dt[r - lo], mt[r - lo], has_m, a, t0, c0, c1,
                                        last, y, r)
    return y


# ---------------------------------------------------------------- Q8_0: ggml's bytes, repacked per tile


@njit(cache=True)
def _repack_q8_0(blocks, lo, hi, wide, qs8, d8):
    """Rows lo..hi of ggml Q8_0 bytes -> qs8 (q + 128 as unsigned bytes in the activations' order, the last
    group padded with q = 0) and d8 (fp16 bits, 0 for the padding): the tile the micro-kernels read."""
    nb = blocks.shape[1] // Q8_0_BYTES
    qs8[:] = 0x80
    d8[:] = 0
    for i in range(hi - lo):
        row = blocks[lo + i]
        for blk in range(nb):
            d8[i, blk] = np.uint16(row[blk * Q8_0_BYTES]) | (np.uint16(row[blk * Q8_0_BYTES + 1]) << 8)
            c, b = blk // V, blk % V
            src = blk * Q8_0_BYTES + 2
            for j in range(Q):
                piece = 2 * ((j % 16) // 4) + j // 16
                if wide:
                    piece = WIDE_ORDER[piece]
                qs8[i, c * 256 + piece * 32 + b * 4 + j % 4] = row[src + j] ^ np.uint8(0x80)  # q + 128


@njit(cache=True)
def _q8_0_row_1x4(q, dr, a, t0, ng, wide, y, r):
    """y[t0:t0+4, r] += a repacked Q8_0 row times tokens t0..t0+3 over its ng groups."""
    xs, ss, es = _views(a, t0, wide)
    if wide:
        acc16 = (zero_f32x16(), zero_f32x16(), zero_f32x16(), zero_f32x16())
        for c in range(ng):
            u = (load_i8x64(q, c * 256), load_i8x64(q, c * 256 + 64), load_i8x64(q, c * 256 + 128),
                 load_i8x64(q, c * 256 + 192))
            acc16 = _group_wide(acc16, u, load_f16x8_twice(dr, c * V), xs, ss, es, c)
        for k in range(4):
            y[t0 + k, r] += hsum_f32x16(acc16[k])
    else:
        acc = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
        for c in range(ng):
            acc = _group(acc, _pieces(q, c), False, load_f16x8(dr, c * V), xs, ss, es, c)
        for k in range(4):
            y[t0 + k, r] += hsum_f32x8(acc[k])


@njit(parallel=True, cache=True)
def gemm_q8_0_int8(a, blocks, wide, n_groups):
    """y (T4, out) for Q8_0 bytes (out, nb*34) and rows prepared with offset 128. The whole row per
    micro-kernel call: a tile's rows are at most 16 x 14336 bytes (L2)."""
    out_dim = blocks.shape[0]
    nb = blocks.shape[1] // Q8_0_BYTES
    ng = (nb + V - 1) // V
    t4 = a.xr.shape[0]
    y = np.zeros((t4, out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        lo, hi = grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups
        qs8 = np.empty((TILE_ROWS, ng * 256), dtype=np.uint8)
        d8 = np.empty((TILE_ROWS, ng * V), dtype=np.uint16)
        for r0 in range(lo, hi, TILE_ROWS):
            r1 = min(hi, r0 + TILE_ROWS)
            _repack_q8_0(blocks, r0, r1, wide, qs8, d8)
            for t0 in range(0, t4, TOKENS):
                for r in range(r0, r1):
                    _q8_0_row_1x4(qs8[r - r0], d8[r - r0], a, t0, ng, wide, y, r)
    return y
