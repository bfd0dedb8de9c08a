"""Prompts with int8 activations, rows as lanes: the AVX-512 VNNI micro-kernel.

gemm.py's micro-kernels keep the decode layout's picture, a lane per *block* of one weight row: every
``vpdpbusd`` needs its own activation vector, and the 8 block lanes of a (row, token) pair meet in a
horizontal sum at the end. Here a 512-bit vector holds **16 weight rows** side by side, 4 bytes of one
block each, and the token's 4 matching activation bytes are *broadcast* to all 16 lanes (an embedded
``{1to16}`` memory operand of the ``vpdpbusd``: no separate load). One block of 16 rows is 4 such vectors
of nibble bytes, 8 after splitting the low and high nibbles; for each token they make 8 ``vpdpbusd`` into
one accumulator whose lane i is row i's exact integer block sum:

    tile (per 16 rows, per block b):   word g of block b of row i  ->  wt[b, g, i]   (g = 0..3: bytes 4g..4g+3)
    lane i of  vpdpbusd(acc, lo(wt[b, g]), bcast(xq[t, b, 4g:4g+4]))        elements 4g..4g+3 of row i
               vpdpbusd(acc, hi(wt[b, g]), bcast(xq[t, b, 16+4g:20+4g]))     elements 16+4g..19+4g
    acc starts at -offset * sum xq[t, b]   (Q4_0: 8, Q8_0: 128; Q4_1: 0)
    y[t, rows] = fma(float(acc), d[rows, b] * dx[t, b], y[t, rows])      [+ m[rows, b] * dx sum xq]
    (Q8_0's centred blocks, quant/activations.py: [+ (d sum q)[rows, b] * c[t, b]] in the same place)

Lanes are rows, so y[t, r0:r0 + 16] is stored as it is: no horizontal sums, no tail group (a row of
18 blocks is 18 steps), and each (row, token) sums its blocks in order 0..nb-1, the same float operations
whatever T, the thread count or the chunking (a chunk continues from the stored partial sum). The result
differs from gemm.py's in the float32 order of the sum over blocks only, within the same bound
(quant/activations.py:int8_sum_bound; tests/test_quant_kernels.py runs every GEMM test on both).

This is the layout of llama.cpp's repacked prompt kernels (ggml-cpu repack.cpp, ``block_q4_0x8``: blocks of
8 rows interleaved); we keep the decode layout in memory (the file's size, once) and build the 16-row
tile per chunk of CHUNK_BLOCKS blocks on the fly, in a small buffer of the work item: 16 rows x 8 blocks of
4-byte words (and their fp16 scales) transposed in registers (simd512.py:tile_group16, scales_group16), or
ggml's 34-byte Q8_0 blocks a block at a time (tile_q8_0_block16, as q + 128, unsigned). Then 8 tokens at a
time pass over the chunk: 8 weight vectors and 8 float accumulators in registers, 64 ``vpdpbusd`` a block.
Work items are runs of whole tiles, split evenly between the threads (static, as gemm.py's).

The activations are gemm.py's (``prepare_rows_int8`` with tokens=TOKENS, 256-bit order): the 4 bytes of block
b facing word g's low nibbles sit at c*256 + 64 g + 4 (b mod 8), c = b // 8, the high ones 32 bytes further.

Chosen where the CPU has AVX-512 VNNI (kernels.py:gemm_lanes); elsewhere it compiles to plain exact IR
(the tests run it on every CPU).

next: gemm_lanes256.py (the same on 256 bits).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .layout import TILE_BLOCKS, TILE_ROWS, V, block_at, tile_base, tile_blocks
from .simd512 import (bcast_f32x16, bcast_i8x64, bcast_i32x16, cvt_i32x16, dpbusd512, fma_f32x16, load_f32x16,
                      load_i8x64, mul_f32x16, nib_hi64, nib_lo64, scales_group16, store_f32x16, tile_group16,
                      tile_q8_0_block16, zero_f32x16)

LANES = 16  # weight rows per tile: one int32 lane each
TOKENS = 8  # tokens per pass over a tile chunk; prompts are padded with zero rows to a multiple of 8
_ONES = np.ones(4, dtype=np.int8)  # the signed bytes a weight sum is dotted with
_MINUS_4096 = np.array([-32 * 128], dtype=np.int32)  # sum (q + 128) over a block, less 32 * 128: sum q
CHUNK_BLOCKS = 128  # blocks per chunk: the tile buffer is 128 * 256 bytes = 32 KiB (Q8_0: 64 KiB), in L1/L2
assert TILE_BLOCKS % CHUNK_BLOCKS == 0 and TILE_ROWS % LANES == 0  # a chunk and a tile inside one of the layout's


# ---------------------------------------------------------------- tiles


@njit(cache=True)
def _tile_nibbles(qs32, d, m, has_m, lut, r0, r1, b0, b1, nv8, wt32, dt, mt):
    """Rows r0..r1 (at most 16), blocks b0..b1 of a decode-layout weight (qs32: its bytes as uint32 words,
    flat, rows of ``row_words``) -> the tile: wt32[(b - b0) * 64 + g * 16 + i] = word g of block b of row
    r0 + i; dt, mt the float32 scales and minimums, 16 per block. Whole groups of 16 rows are transposed
    in registers (simd512.py:tile_group16, scales_group16); the tail blocks and a partial tile word by word,
    with zeros for the missing rows (their lanes are computed and dropped)."""
    n = r1 - r0
    out_dim, nb = d.shape
    df, mf = d.reshape(-1), m.reshape(-1)
    if n < LANES:
        wt32[:] = 0
        dt[:] = 0
        mt[:] = 0
    for b in range(b0, b1):
        if n == LANES and b < nv8:  # b0 is a multiple of 8: the chunk holds the group whole
            if b % V == 0:  # r0: a multiple of 16, the layout's chunk (layout.py): its rows tile_blocks apart
                at, stride = block_at(r0, b, out_dim, nb), tile_blocks(b, nb)
                tile_group16(qs32, at * 4, stride * 4, wt32, (b - b0) * 64)
                scales_group16(df, at, stride, dt, (b - b0) * LANES)
                if has_m:
                    scales_group16(mf, at, stride, mt, (b - b0) * LANES)
            continue
        if b < nv8:
            src, step = (b // V) * 32 + b % V, 8  # group c: word c*32 + g*8 + b mod 8 (layout.py)
        else:
            src, step = nv8 * 4 + (b - nv8) * 4, 1  # the tail keeps ggml's order
        o, so = (b - b0) * 64, (b - b0) * LANES
        for i in range(n):
            tb = tile_base(r0 + i, b, out_dim, nb)  # row r0 + i's piece of the tile (layout.py), less b's tile start
            w = tb * 4 + src
            wt32[o + i] = qs32[w]
            wt32[o + 16 + i] = qs32[w + step]
            wt32[o + 32 + i] = qs32[w + 2 * step]
            wt32[o + 48 + i] = qs32[w + 3 * step]
            dt[so + i] = lut[df[tb + b]]
            if has_m:
                mt[so + i] = lut[mf[tb + b]]


@njit(cache=True)
def _tile_q8_0(blocks, lut, r0, r1, b0, b1, wt, dt, mt, centred):
    """Rows r0..r1, blocks b0..b1 of ggml Q8_0 bytes (out, nb*34) -> wt[(b - b0) * 512 + j * 64 + 4 i + k] = q + 128
    of element 4 j + k of block b of row r0 + i (unsigned bytes), dt the float32 scales, and if ``centred`` mt
    the blocks' d * sum q (as gemm.py:q8_0_block_sum, in vectors). A whole tile is transposed in registers
    (simd512.py:tile_q8_0_block16), a partial one byte by byte, with zeros for the missing rows."""
    n = r1 - r0
    row_bytes = blocks.shape[1]
    flat = blocks.reshape(-1)
    if n < LANES:
        wt[:] = 0
        dt[:] = 0
        mt[:] = 0
    for b in range(b0, b1):
        o = (b - b0) * 512
        src = b * Q8_0_BYTES
        if n == LANES:
            tile_q8_0_block16(flat, r0 * row_bytes + src + 2, row_bytes, wt, o)
        else:
            for i in range(n):
                row = blocks[r0 + i]
                for j in range(8):
                    for k in range(4):
                        wt[o + j * 64 + 4 * i + k] = row[src + 2 + 4 * j + k] ^ np.uint8(0x80)
        for i in range(n):
            row = blocks[r0 + i]
            dt[(b - b0) * LANES + i] = lut[np.uint16(row[src]) | (np.uint16(row[src + 1]) << 8)]
        if centred:  # d * sum q, 16 rows at once: sum (q + 128) by vpdpbusd against ones, from -32 * 128
            acc = bcast_i32x16(_MINUS_4096, 0)
            for j in range(8):
                acc = dpbusd512(acc, load_i8x64(wt, o + 64 * j), bcast_i8x64(_ONES, 0))
            store_f32x16(mt, (b - b0) * LANES, mul_f32x16(cvt_i32x16(acc), load_f32x16(dt, (b - b0) * LANES)))


# ---------------------------------------------------------------- one block, 16 rows, 8 tokens


@njit(cache=True)
def _dot8(acc, u, xf, xo):
    """acc + the 8 vpdpbusd of one block: u the 8 weight vectors (lo0, hi0, lo1, hi1, ...), the activation
    bytes of vector j at xo + 32 j (broadcast)."""
    acc = dpbusd512(acc, u[0], bcast_i8x64(xf, xo))
    acc = dpbusd512(acc, u[1], bcast_i8x64(xf, xo + 32))
    acc = dpbusd512(acc, u[2], bcast_i8x64(xf, xo + 64))
    acc = dpbusd512(acc, u[3], bcast_i8x64(xf, xo + 96))
    acc = dpbusd512(acc, u[4], bcast_i8x64(xf, xo + 128))
    acc = dpbusd512(acc, u[5], bcast_i8x64(xf, xo + 160))
    acc = dpbusd512(acc, u[6], bcast_i8x64(xf, xo + 192))
    return dpbusd512(acc, u[7], bcast_i8x64(xf, xo + 224))


@njit(cache=True)
def _token(y, u, d16, xf, xo, nsf, dxf, so):
    """y (16 rows of one token) + this block: the exact integer sums (from -offset sum xq = nsf[so]), to
    float32, times d * dx (dxf[so])."""
    return fma_f32x16(cvt_i32x16(_dot8(bcast_i32x16(nsf, so), u, xf, xo)), mul_f32x16(d16, bcast_f32x16(dxf, so)), y)


@njit(cache=True)
def _nibble_vectors(wt, o):
    """The 8 vectors of a nibble tile's block at byte o: low and high nibbles of its 4 words."""
    w0, w1, w2, w3 = load_i8x64(wt, o), load_i8x64(wt, o + 64), load_i8x64(wt, o + 128), load_i8x64(wt, o + 192)
    return (nib_lo64(w0), nib_hi64(w0), nib_lo64(w1), nib_hi64(w1), nib_lo64(w2), nib_hi64(w2), nib_lo64(w3),
            nib_hi64(w3))


@njit(cache=True)
def _byte_vectors(wt, o):
    """The 8 vectors of a Q8_0 tile's block at byte o (word j at o + 64 j), ordered as _dot8 reads the
    activations: words 0, 4, 1, 5, 2, 6, 3, 7 (elements 4g.. face piece 2g, elements 16 + 4g.. piece 2g + 1)."""
    return (load_i8x64(wt, o), load_i8x64(wt, o + 256), load_i8x64(wt, o + 64), load_i8x64(wt, o + 320),
            load_i8x64(wt, o + 128), load_i8x64(wt, o + 384), load_i8x64(wt, o + 192), load_i8x64(wt, o + 448))


@njit(cache=True)
def _tile_tokens(wt, dt, mt, has_m, nibbles, b0, b1, xf, xrow, nsf, dxf, dxsf, srow, yf, ystride, r0, t0, first):
    """y[t0:t0+8, r0:r0+16] (+)= the tile's blocks b0..b1 times tokens t0..t0+7 (from 0 if ``first``, else
    continuing the stored partial sums): each block's 8 weight vectors serve 8 tokens. Q4_1 adds m * dx sum xq
    after each block's product."""
    if first:
        y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = zero_f32x16()
    else:
        y0, y1 = load_f32x16(yf, t0 * ystride + r0), load_f32x16(yf, (t0 + 1) * ystride + r0)
        y2, y3 = load_f32x16(yf, (t0 + 2) * ystride + r0), load_f32x16(yf, (t0 + 3) * ystride + r0)
        y4, y5 = load_f32x16(yf, (t0 + 4) * ystride + r0), load_f32x16(yf, (t0 + 5) * ystride + r0)
        y6, y7 = load_f32x16(yf, (t0 + 6) * ystride + r0), load_f32x16(yf, (t0 + 7) * ystride + r0)
    for b in range(b0, b1):
        lb = b - b0
        u = _nibble_vectors(wt, lb * 256) if nibbles else _byte_vectors(wt, lb * 512)
        d16 = load_f32x16(dt, lb * LANES)
        xo = t0 * xrow + (b // V) * 256 + (b % V) * 4
        s0 = t0 * srow + b
        y0 = _token(y0, u, d16, xf, xo, nsf, dxf, s0)
        y1 = _token(y1, u, d16, xf, xo + xrow, nsf, dxf, s0 + srow)
        y2 = _token(y2, u, d16, xf, xo + 2 * xrow, nsf, dxf, s0 + 2 * srow)
        y3 = _token(y3, u, d16, xf, xo + 3 * xrow, nsf, dxf, s0 + 3 * srow)
        y4 = _token(y4, u, d16, xf, xo + 4 * xrow, nsf, dxf, s0 + 4 * srow)
        y5 = _token(y5, u, d16, xf, xo + 5 * xrow, nsf, dxf, s0 + 5 * srow)
        y6 = _token(y6, u, d16, xf, xo + 6 * xrow, nsf, dxf, s0 + 6 * srow)
        y7 = _token(y7, u, d16, xf, xo + 7 * xrow, nsf, dxf, s0 + 7 * srow)
        if has_m:
            m16 = load_f32x16(mt, lb * LANES)
            y0 = fma_f32x16(m16, bcast_f32x16(dxsf, s0), y0)
            y1 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + srow), y1)
            y2 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 2 * srow), y2)
            y3 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 3 * srow), y3)
            y4 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 4 * srow), y4)
            y5 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 5 * srow), y5)
            y6 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 6 * srow), y6)
            y7 = fma_f32x16(m16, bcast_f32x16(dxsf, s0 + 7 * srow), y7)
    store_f32x16(yf, t0 * ystride + r0, y0)
    store_f32x16(yf, (t0 + 1) * ystride + r0, y1)
    store_f32x16(yf, (t0 + 2) * ystride + r0, y2)
    store_f32x16(yf, (t0 + 3) * ystride + r0, y3)
    store_f32x16(yf, (t0 + 4) * ystride + r0, y4)
    store_f32x16(yf, (t0 + 5) * ystride + r0, y5)
    store_f32x16(yf, (t0 + 6) * ystride + r0, y6)
    store_f32x16(yf, (t0 + 7) * ystride + r0, y7)


# ---------------------------------------------------------------- the GEMMs


@njit(parallel=True, cache=True, nogil=True)
def _gemm(xr, ss, es, ms, qs32, d, m, has_m, blocks, lut, nibbles, n_groups):
    """y (T8, out rounded up to 16) for a nibble weight (qs32, d, m; ``nibbles``) or Q8_0 bytes (``blocks``); the
    activations prepared with tokens=TOKENS."""
    t8 = xr.shape[0]
    if nibbles:
        out_dim, nb = d.shape
    else:
        out_dim, nb = blocks.shape[0], blocks.shape[1] // Q8_0_BYTES
    nv8 = nb // V * V
    ntiles = (out_dim + LANES - 1) // LANES
    ystride = ntiles * LANES
    y = np.empty((t8, ystride), dtype=np.float32)
    yf, xf, nsf, dxf, dxsf = y.reshape(-1), xr.reshape(-1), ss.reshape(-1), es.reshape(-1), ms.reshape(-1)
    xrow, srow = xr.shape[1], ss.shape[1]
    kb = min(nb, CHUNK_BLOCKS)
    groups = min(n_groups, ntiles)
    for grp in prange(groups):
        lo, hi = grp * ntiles // groups, (grp + 1) * ntiles // groups
        wt = np.empty(kb * (256 if nibbles else 512), dtype=np.uint8)
        dt, mt = np.empty(kb * LANES, dtype=np.float32), np.empty(kb * LANES, dtype=np.float32)
        wt32 = wt.view(np.uint32)
        for b0 in range(0, nb, kb):
            b1 = min(nb, b0 + kb)
            for tile in range(lo, hi):
                r0 = tile * LANES
                r1 = min(out_dim, r0 + LANES)
                if nibbles:
                    _tile_nibbles(qs32, d, m, has_m, lut, r0, r1, b0, b1, nv8, wt32, dt, mt)
                else:
                    _tile_q8_0(blocks, lut, r0, r1, b0, b1, wt, dt, mt, has_m)
                for t0 in range(0, t8, TOKENS):  # t8: a multiple of TOKENS (prepare_rows_int8's padding)
                    _tile_tokens(wt, dt, mt, has_m, nibbles, b0, b1, xf, xrow, nsf, dxf, dxsf, srow, yf, ystride, r0,
                                 t0, b0 == 0)
    return y


_NO_QS32 = np.zeros(1, dtype=np.uint32)
_NO_U16 = np.zeros((1, 1), dtype=np.uint16)
_NO_BLOCKS = np.zeros((1, Q8_0_BYTES), dtype=np.uint8)


def _trim(y: np.ndarray, out_dim: int) -> np.ndarray:
    return y if y.shape[1] == out_dim else np.ascontiguousarray(y[:, :out_dim])


def gemm_nibbles_int8(xr, ss, es, ms, qs, d, m, has_m, lut, n_groups):
    """y (T8, out) = prepared rows (gemm.py:_arrays(a, False), tokens=TOKENS) times a decode-layout Q4_0/Q4_1
    weight."""
    y = _gemm(xr, ss, es, ms, qs.reshape(-1).view(np.uint32), d, m, has_m, _NO_BLOCKS, lut, True, n_groups)
    return _trim(y, d.shape[0])


def gemm_q8_0_int8(xr, ss, es, ms, blocks, centred, lut, n_groups):
    """y (T8, out) = prepared rows (offset 128, tokens=TOKENS) times Q8_0 bytes (out, nb*34); ``centred``: the rows
    were prepared centred, ms their centres, which multiply the blocks' d * sum q where Q4_1's m would go."""
    y = _gemm(xr, ss, es, ms, _NO_QS32, _NO_U16, _NO_U16, centred, blocks, lut, False, n_groups)
    return _trim(y, blocks.shape[0])
