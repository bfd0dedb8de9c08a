"""Prompts with int8 activations, rows as lanes on 256 bits: the micro-kernel for CPUs without AVX-512 VNNI.

gemm_lanes.py's picture (read it first) on AVX2's 256-bit vectors: **8 weight rows** side by side, 4 bytes of
one block each, and the token's 4 matching activation bytes broadcast to the 8 lanes (``vpbroadcastd``). With no
``vpdpbusd`` (AMD Zen 3, Intel before Ice Lake), a block's 8 vector products are ``vpmaddubsw`` summed in int16
lanes, then one ``vpmaddwd`` (simd.py:dot8_nibbles: exact, since every weight byte is a nibble, at most 15):

    tile (per 8 rows, per block b; split into nibbles when built):
        vector j = 2g + h of block b, lane i  =  nibbles h (0: low, 1: high) of word g of block b of row i
    lane i of  dot8_nibbles(-offset * sum xq[t, b],  tile[b, 0..7],  bcast(xq[t, b] bytes facing vector j))
               = row i's exact integer block sum
    y[t, rows] = fma(float(sum), d[rows, b] * dx[t, b], y[t, rows])      [+ m[rows, b] * dx sum xq]

Q8_0 weights (unsigned bytes q + 128, as in gemm_lanes.py) cannot go to ``vpmaddubsw`` whole (a pair of
255 * 127 products overflows int16), so their tile holds both nibbles of each byte as 16 vectors a block:
sum = dot8(low nibbles) + 16 * dot8(high nibbles), still exact.

Why here. gemm.py's 256-bit kernel keeps a lane per *block* of one row: a row's 8 block lanes meet in a
horizontal sum per (row, token), and a row of 18 blocks (SmolLM2's 576) is computed as 24, its tail padded
to a group. Rows as lanes have neither cost. Unlike gemm_lanes.py, the tile is built word by word from the
decode layout (no in-register transposes): it is split into nibble bytes once per chunk, so each token's
pass loads its vectors from L1 instead of splitting them again. By operation counts the copy is ~5 % of a
256-token prompt's products and more for short prompts (at T = 16 this kernel ran at 76 GOP/s on 4096 x 4096,
gemm.py's at 139): one reason it only takes narrow rows (kernels.py:LANES256_MAX_IN). The activations are gemm.py's (``prepare_rows_int8`` with tokens=TOKENS, 256-bit order).

Every (row, token) sums its blocks in order 0..nb-1 whatever T, the thread count or the chunking: a token's
row has the same bits in any prompt. The float order differs from gemm.py's and gemm_lanes.py's (the same
bound, quant/activations.py:int8_sum_bound); tests/test_quant_kernels.py runs every GEMM test on all kernels.

Chosen where the CPU has no AVX-512 VNNI (kernels.py:gemm_lanes256); with AVX-VNNI (VEX) the same code gets
256-bit ``vpdpbusd``.

next: kernels.py (entry points).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .gemm import q8_0_block_sum
from .gemm_lanes import _NO_BLOCKS, _NO_QS32, _NO_U16, _trim
from .layout import V, tile_base
from .simd import (add_i32x8, bcast_f32x8, bcast_i8x32, bcast_i32x8, cvt_i32x8, dot8_nibbles, fma_f32x8, load_f32x8,
                   load_i8x32, mul_f32x8, store_f32x8, x16_i32x8, zero_f32x8, zero_i32x8)

LANES = 8  # weight rows per tile: one int32 lane each
TOKENS = 4  # tokens per pass over a tile chunk; prompts are padded with zero rows to a multiple of 4
CHUNK_BLOCKS = 64  # blocks per chunk: 64 * 256 bytes = 16 KiB of nibble tile (Q8_0: 32 KiB), in L1 or L2
LOW = np.uint32(0x0F0F0F0F)


# ---------------------------------------------------------------- tiles


@njit(cache=True)
def _tile_nibbles(qs32, d, m, has_m, lut, r0, r1, b0, b1, nv8, wt32, dt, mt):
    """Rows r0..r1 (at most 8), blocks b0..b1 of a decode-layout weight (qs32: its bytes as uint32 words, flat)
    -> wt32[(b - b0) * 64 + (2 g + h) * 8 + i] = nibbles h of word g of block b of row r0 + i; dt, mt the float32
    scales and minimums, 8 per block. Missing rows of a partial tile are zeros (their lanes are dropped)."""
    n = r1 - r0
    out_dim, nb = d.shape
    df, mf = d.reshape(-1), m.reshape(-1)
    if n < LANES:
        wt32[:] = 0
        dt[:] = 0
        mt[:] = 0
    for b in range(b0, b1):
        if b < nv8:
            src, step = (b // V) * 32 + b % V, 8  # group c: word c*32 + g*8 + b mod 8 (layout.py)
        else:
            src, step = nv8 * 4 + (b - nv8) * 4, 1  # the tail keeps ggml's order
        o = (b - b0) * 64
        for i in range(n):
            tb = tile_base(r0 + i, b, out_dim, nb)  # row r0 + i's piece of the tile (layout.py), less b's tile start
            w = tb * 4 + src
            for g in range(4):
                word = qs32[w + g * step]
                wt32[o + 16 * g + i] = word & LOW
                wt32[o + 16 * g + 8 + i] = (word >> np.uint32(4)) & LOW
            at = tb + b
            dt[(b - b0) * LANES + i] = lut[df[at]]
            if has_m:
                mt[(b - b0) * LANES + i] = lut[mf[at]]


@njit(cache=True)
def _tile_q8_0(blocks, lut, r0, r1, b0, b1, wt32, dt, mt, centred):
    """Rows r0..r1, blocks b0..b1 of ggml Q8_0 bytes (out, nb*34) -> 16 vectors a block: wt32[(b - b0) * 128 +
    (8 h + j) * 8 + i] = nibbles h of word w_j of q + 128 (block b, row r0 + i), dt the float32 scales. The words
    go in the order w_j = 0, 4, 1, 5, 2, 6, 3, 7 (elements 4g.. face activation vector 2g, elements 16 + 4g..
    vector 2g + 1, as gemm_lanes.py:_byte_vectors); if ``centred``, mt the blocks' d * sum q."""
    n = r1 - r0
    if n < LANES:
        wt32[:] = 0
        dt[:] = 0
        mt[:] = 0
    for b in range(b0, b1):
        o = (b - b0) * 128
        for i in range(n):
            row = blocks[r0 + i]
            src = b * Q8_0_BYTES
            for j in range(8):
                k = src + 2 + 4 * ((j // 2) + 4 * (j % 2))  # word w_j
                word = (np.uint32(row[k]) | (np.uint32(row[k + 1]) << 8) | (np.uint32(row[k + 2]) << 16)
                        | (np.uint32(row[k + 3]) << 24)) ^ np.uint32(0x80808080)
                wt32[o + 8 * j + i] = word & LOW
                wt32[o + 64 + 8 * j + i] = (word >> np.uint32(4)) & LOW
            dt[(b - b0) * LANES + i] = lut[np.uint16(row[src]) | (np.uint16(row[src + 1]) << 8)]
            if centred:
                mt[(b - b0) * LANES + i] = dt[(b - b0) * LANES + i] * np.float32(q8_0_block_sum(row, src + 2))


# ---------------------------------------------------------------- one block, 8 rows, 4 tokens


@njit(cache=True)
def _vectors(wt, o):
    """The 8 tile vectors at byte o."""
    return (load_i8x32(wt, o), load_i8x32(wt, o + 32), load_i8x32(wt, o + 64), load_i8x32(wt, o + 96),
            load_i8x32(wt, o + 128), load_i8x32(wt, o + 160), load_i8x32(wt, o + 192), load_i8x32(wt, o + 224))


@njit(cache=True)
def _token(y, lo, hi, nibbles, d8, xf, xo, nsf, dxf, so):
    """y (8 rows of one token) + a block whose tile vectors are ``lo`` (and, for Q8_0, the high nibbles' ``hi``):
    the token's 4 bytes facing vector j (at xo + 32 j) broadcast to the 8 lanes, the exact integer sums (from
    -offset sum xq = nsf[so]), to float32, times d * dx (dxf[so]). The activation loads are written here, not
    in a helper taking the array: a helper's array argument costs a reference count per call in the loop."""
    s = (bcast_i8x32(xf, xo), bcast_i8x32(xf, xo + 32), bcast_i8x32(xf, xo + 64), bcast_i8x32(xf, xo + 96),
         bcast_i8x32(xf, xo + 128), bcast_i8x32(xf, xo + 160), bcast_i8x32(xf, xo + 192), bcast_i8x32(xf, xo + 224))
    acc = dot8_nibbles(bcast_i32x8(nsf, so), lo, s)
    if not nibbles:  # Q8_0: + 16 * the high nibbles' sums
        acc = add_i32x8(acc, x16_i32x8(dot8_nibbles(zero_i32x8(), hi, s)))
    return fma_f32x8(cvt_i32x8(acc), mul_f32x8(d8, bcast_f32x8(dxf, so)), y)


@njit(cache=True)
def _tile_tokens(wt, dt, mt, has_m, nibbles, b0, b1, xf, xrow, nsf, dxf, dxsf, srow, yf, ystride, r0, t0, first):
    """y[t0:t0+4, r0:r0+8] (+)= the tile's blocks b0..b1 times tokens t0..t0+3 (from 0 if ``first``, else
    continuing the stored partial sums). Q4_1 adds m * dx sum xq after each block's product.

    Four tokens a pass: a block's 8 tile vectors and 4 accumulators leave room in the 16 registers for the
    broadcasts; with 8 tokens (8 accumulators) 190 of the compiled loop's 616 instructions went to the stack
    (vectors spilled and reloaded). The same bits (each (row, token) sums its blocks in the same order); on AMD
    Zen 2 at T = 512, SmolLM2's 1536 x 576 and 576 x 1536 Q4_1 weights 5-10 % faster, 576 x 576 and Q8_0 no
    different beyond the spread (docs/performance.md, seventeenth session)."""
    if first:
        y0 = y1 = y2 = y3 = zero_f32x8()
    else:
        y0, y1 = load_f32x8(yf, t0 * ystride + r0), load_f32x8(yf, (t0 + 1) * ystride + r0)
        y2, y3 = load_f32x8(yf, (t0 + 2) * ystride + r0), load_f32x8(yf, (t0 + 3) * ystride + r0)
    bbytes = 256 if nibbles else 512
    for b in range(b0, b1):
        lb = b - b0
        lo = _vectors(wt, lb * bbytes)
        hi = lo if nibbles else _vectors(wt, lb * bbytes + 256)
        d8 = load_f32x8(dt, lb * LANES)
        xo = t0 * xrow + (b // V) * 256 + (b % V) * 4
        s0 = t0 * srow + b
        y0 = _token(y0, lo, hi, nibbles, d8, xf, xo, nsf, dxf, s0)
        y1 = _token(y1, lo, hi, nibbles, d8, xf, xo + xrow, nsf, dxf, s0 + srow)
        y2 = _token(y2, lo, hi, nibbles, d8, xf, xo + 2 * xrow, nsf, dxf, s0 + 2 * srow)
        y3 = _token(y3, lo, hi, nibbles, d8, xf, xo + 3 * xrow, nsf, dxf, s0 + 3 * srow)
        if has_m:
            m8 = load_f32x8(mt, lb * LANES)
            y0 = fma_f32x8(m8, bcast_f32x8(dxsf, s0), y0)
            y1 = fma_f32x8(m8, bcast_f32x8(dxsf, s0 + srow), y1)
            y2 = fma_f32x8(m8, bcast_f32x8(dxsf, s0 + 2 * srow), y2)
            y3 = fma_f32x8(m8, bcast_f32x8(dxsf, s0 + 3 * srow), y3)
    store_f32x8(yf, t0 * ystride + r0, y0)
    store_f32x8(yf, (t0 + 1) * ystride + r0, y1)
    store_f32x8(yf, (t0 + 2) * ystride + r0, y2)
    store_f32x8(yf, (t0 + 3) * ystride + r0, y3)


# ---------------------------------------------------------------- the GEMMs


@njit(parallel=True, cache=True, nogil=True)
def _gemm(xr, ss, es, ms, qs32, d, m, has_m, blocks, lut, nibbles, n_groups):
    """y (T4, out rounded up to 8) for a nibble weight (qs32, d, m; ``nibbles``) or Q8_0 bytes (``blocks``); the
    activations prepared with tokens=TOKENS."""
    t4 = xr.shape[0]
    if nibbles:
        out_dim, nb = d.shape
    else:
        out_dim, nb = blocks.shape[0], blocks.shape[1] // Q8_0_BYTES
    nv8 = nb // V * V
    ntiles = (out_dim + LANES - 1) // LANES
    ystride = ntiles * LANES
    y = np.empty((t4, ystride), dtype=np.float32)
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
                    _tile_q8_0(blocks, lut, r0, r1, b0, b1, wt32, dt, mt, has_m)
                for t0 in range(0, t4, TOKENS):  # t4: a multiple of TOKENS (prepare_rows_int8's padding)
                    _tile_tokens(wt, dt, mt, has_m, nibbles, b0, b1, xf, xrow, nsf, dxf, dxsf, srow, yf, ystride, r0,
                                 t0, b0 == 0)
    return y


def gemm_nibbles_int8(xr, ss, es, ms, qs, d, m, has_m, lut, n_groups):
    """y (T4, out) = prepared rows (gemm.py:_arrays(a, False), tokens=TOKENS) times a decode-layout Q4_0/Q4_1
    weight."""
    y = _gemm(xr, ss, es, ms, qs.reshape(-1).view(np.uint32), d, m, has_m, _NO_BLOCKS, lut, True, n_groups)
    return _trim(y, d.shape[0])


def gemm_q8_0_int8(xr, ss, es, ms, blocks, centred, lut, n_groups):
    """y (T4, out) = prepared rows (offset 128, tokens=TOKENS) times Q8_0 bytes (out, nb*34); ``centred`` as in
    gemm_lanes.py."""
    y = _gemm(xr, ss, es, ms, _NO_QS32, _NO_U16, _NO_U16, centred, blocks, lut, False, n_groups)
    return _trim(y, blocks.shape[0])
