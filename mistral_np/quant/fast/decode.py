"""Decode (T == 1) matrix-vector kernels: memory-bound, so the aim is to stream weight bytes.

Q4_0 / Q4_1 read the interleaved layout (layout.py); Q8_0 reads ggml's own bytes (its 32 int8
values already sit together). Each kind has two kernels:

* ``activations="float"`` (the parity path): float32 x, nibbles converted to float32 8 at a time,
  fused multiply-adds lane by lane (lane = one byte position of a block), scales applied per
  group of 8 blocks. Agrees with float64 within the float32 bound of docs/quantization.md.
* ``activations="int8"``: x quantized to Q8_0 blocks (xq int8, dx per block, as llama.cpp does),
  exact integer block dot products with ``dpbusd`` (4 byte products per int32 lane, simd.py),
  then one float fma per block. Q4_0's -8 offset: sum (q-8) xq = sum q xq - 8 sum xq, exact in
  int32. Q8_0's signed weights: |q| * (xq with q's sign) = q * xq (the psignb trick).

The hardware prefetcher alone left one thread at ~5 GB/s from DRAM (21 GB/s from cache), so the
loops prefetch the weight bytes AHEAD bytes in advance (running on into the next rows is intended; a
prefetch past the end of an array is harmless). ``rows_*`` compute rows lo..hi on the calling
thread; ``gemv_*`` split the rows into groups run by ``prange``, several per thread, which
kernels.py hands out one at a time (chunk size 1), so a thread slowed by another process is helped.
The vector loads are unchecked: every offset below stays inside its array by construction.

tests/test_quant_kernels.py checks both kinds of kernel on awkward shapes: float activations within
the float32 bound of the float64 product, int8 ones within the documented bound and equal to their
NumPy twin (quant/activations.py) up to the float32 rounding of the sum over blocks, and serial and
parallel runs giving the same bits.

next: kernels.py (prefill, dequantization, entry points).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common import Q
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .layout import V
from .simd import (abs_i8, add_i32x8, cvt_i32x8, dpbusd, expand4_f32x8, fma_f32x8, hsum_f32x8, i8x32_to_f32x8x4,
                   load_f16x8, load_f32x8, load_i8x32, load_i32x8, load_nibbles16, mul_f32x8, nib_hi, nib_lo, prefetch,
                   sign_i8, splat_f32x8, sub_i8, sub_i32x8, zero_f32x8, zero_i32x8)

AHEAD = 4096  # software prefetch distance in weight bytes: 1 thread streamed 4.4 GB/s without, 12-14 with


# ---------------------------------------------------------------- activations


@njit(cache=True)
def block_scale(x, blk):
    """Block blk of x (32 values) -> (d, 1/d): d = max|x| / 127 as ggml's quantize_row_q8_0_ref (0 for a zero block)."""
    amax = np.float32(0.0)
    for k in range(Q):
        amax = max(amax, abs(x[blk * Q + k]))
    d = amax / np.float32(127.0)
    return d, (np.float32(1.0) / d if d != 0 else np.float32(0.0))


@njit(cache=True)
def round_away(v):
    """v rounded half away from zero (C's roundf, which ggml uses) as int8; |v| <= 127 here."""
    a = abs(v)
    r = np.floor(a) + np.floor(2 * (a - np.floor(a)))
    return np.int8(r if v >= 0 else -r)


@njit(cache=True)
def quantize_x_q8_0(x):
    """x (in,) float32 -> Q8_0 as ggml's quantize_row_q8_0_ref (roundf).

    -> xq int8 (in,) in -127..127, dx float32 (nb,) with x ~= dx * xq, sum of xq per block int32 (nb,)
    """
    nb = x.shape[0] // Q
    xq = np.empty(nb * Q, dtype=np.int8)
    dx = np.empty(nb, dtype=np.float32)
    sx = np.empty(nb, dtype=np.int32)
    for blk in range(nb):
        d, inv = block_scale(x, blk)
        dx[blk] = d
        s = 0
        for k in range(Q):
            q = round_away(x[blk * Q + k] * inv)
            xq[blk * Q + k] = q
            s += q
        sx[blk] = s
    return xq, dx, sx


@njit(cache=True)
def interleave_x(x):
    """x (in,) -> the order of the interleaved nibbles (layout.py), float32 or int8.

        xr[c*256 + g*64 + h*32 + b*4 + k] = x[(8c + b)*32 + h*16 + 4g + k]

    so the 32 bytes at c*256 + g*64 + h*32 face the 32 nibble bytes at c*128 + g*32: h = 0 pairs
    with low nibbles (elements 0..15 of a block), h = 1 with high nibbles (16..31). The tail blocks
    (nb mod 8) keep their order.
    """
    nb = x.shape[0] // Q
    nv = nb // V
    xr = x.copy()
    for c in range(nv):
        for g in range(4):
            for h in range(2):
                for b in range(V):
                    for k in range(4):
                        xr[c * 256 + g * 64 + h * 32 + b * 4 + k] = x[(c * V + b) * Q + h * 16 + 4 * g + k]
    return xr


@njit(cache=True)
def prepare_x_int8(x, offset):
    """x (in,) float32 -> what the int8 nibble kernel reads: xr (interleaved xq), offset * sum xq (int32),
    dx and dx * sum xq (float32, for Q4_1's minimums), per block."""
    xq, dx, sx = quantize_x_q8_0(x)
    return interleave_x(xq), (sx * offset).astype(np.int32), dx, dx * sx.astype(np.float32)


# ---------------------------------------------------------------- Q4_0 / Q4_1, interleaved layout


@njit(cache=True)
def rows_nibbles_int8(xr, sxo, dx, dxs, qs, d, m, has_m, offset, lut, lo_r, hi_r, y):
    """y[r] = sum_blocks d dx (sum q xq - offset sum xq) [+ m dx sum xq], rows lo_r..hi_r.

    xr: interleave_x(xq); sxo = offset * sum xq (int32), dx, dxs = dx * sum xq per block (prepare_x_int8).
    Per group of 8 blocks: 8 dpbusd (4 low-nibble, 4 high-nibble vectors), then one fma with d * dx.
    """
    nb = d.shape[1]
    nv = nb // V
    for r in range(lo_r, hi_r):
        q, dr, mr = qs[r], d[r], m[r if has_m else 0]
        yv, tail = zero_f32x8(), np.float32(0.0)
        for c in range(nv):
            prefetch(q, c * 128 + AHEAD)  # the group's two cache lines, AHEAD bytes on
            prefetch(q, c * 128 + AHEAD + 64)
            a_lo, a_hi = zero_i32x8(), zero_i32x8()
            for g in range(4):
                v = load_i8x32(q, c * 128 + g * 32)
                a_lo = dpbusd(a_lo, nib_lo(v), load_i8x32(xr, c * 256 + g * 64))
                a_hi = dpbusd(a_hi, nib_hi(v), load_i8x32(xr, c * 256 + g * 64 + 32))
            acc = sub_i32x8(add_i32x8(a_lo, a_hi), load_i32x8(sxo, c * V))
            yv = fma_f32x8(cvt_i32x8(acc), mul_f32x8(load_f16x8(dr, c * V), load_f32x8(dx, c * V)), yv)
            if has_m:
                yv = fma_f32x8(load_f16x8(mr, c * V), load_f32x8(dxs, c * V), yv)
        for blk in range(nv * V, nb):  # tail blocks, ggml order: one block per vector
            acc = dpbusd(zero_i32x8(), load_nibbles16(q, blk * 16), load_i8x32(xr, blk * Q))
            scale = lut[dr[blk]] * dx[blk]
            yv = fma_f32x8(cvt_i32x8(acc), splat_f32x8(scale), yv)
            tail -= np.float32(sxo[blk]) * scale
            if has_m:
                tail += lut[mr[blk]] * dxs[blk]
        y[r] = hsum_f32x8(yv) + tail


@njit(cache=True, fastmath={"contract"})
def rows_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, lo_r, hi_r, y):
    """y[r] = sum_blocks d sum_j (q_j - offset) x_j [+ m sum_j x_j], float32 lanes.

    xr: interleave_x(x); xsum: x's block sums (Q4_1). Lane i of accumulator a_p holds byte position
    i of the 8-byte piece p: blocks 2p and 2p + 1, so the scales are expanded 4 times each.
    """
    nb = d.shape[1]
    nv = nb // V
    for r in range(lo_r, hi_r):
        q, dr, mr = qs[r], d[r], m[r if has_m else 0]
        yv, tail = zero_f32x8(), np.float32(0.0)
        for c in range(nv):
            prefetch(q, c * 128 + AHEAD)
            prefetch(q, c * 128 + AHEAD + 64)
            a0, a1, a2, a3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
            for g in range(4):
                v = load_i8x32(q, c * 128 + g * 32)
                xb = c * 256 + g * 64
                l0, l1, l2, l3 = i8x32_to_f32x8x4(sub_i8(nib_lo(v), offset))
                a0, a1 = fma_f32x8(l0, load_f32x8(xr, xb), a0), fma_f32x8(l1, load_f32x8(xr, xb + 8), a1)
                a2, a3 = fma_f32x8(l2, load_f32x8(xr, xb + 16), a2), fma_f32x8(l3, load_f32x8(xr, xb + 24), a3)
                h0, h1, h2, h3 = i8x32_to_f32x8x4(sub_i8(nib_hi(v), offset))
                a0, a1 = fma_f32x8(h0, load_f32x8(xr, xb + 32), a0), fma_f32x8(h1, load_f32x8(xr, xb + 40), a1)
                a2, a3 = fma_f32x8(h2, load_f32x8(xr, xb + 48), a2), fma_f32x8(h3, load_f32x8(xr, xb + 56), a3)
            e0, e1, e2, e3 = expand4_f32x8(load_f16x8(dr, c * V))
            yv = fma_f32x8(a3, e3, fma_f32x8(a2, e2, fma_f32x8(a1, e1, fma_f32x8(a0, e0, yv))))
            if has_m:
                yv = fma_f32x8(load_f16x8(mr, c * V), load_f32x8(xsum, c * V), yv)
        for blk in range(nv * V, nb):  # tail blocks, ggml order: one block per vector
            q0, q1, q2, q3 = i8x32_to_f32x8x4(sub_i8(load_nibbles16(q, blk * 16), offset))
            s = fma_f32x8(q3, load_f32x8(xr, blk * Q + 24), fma_f32x8(q2, load_f32x8(xr, blk * Q + 16),
                          fma_f32x8(q1, load_f32x8(xr, blk * Q + 8), mul_f32x8(q0, load_f32x8(xr, blk * Q)))))
            yv = fma_f32x8(s, splat_f32x8(lut[dr[blk]]), yv)
            if has_m:
                tail += lut[mr[blk]] * xsum[blk]
        y[r] = hsum_f32x8(yv) + tail


@njit(parallel=True, cache=True)
def gemv_nibbles_int8(xr, sxo, dx, dxs, qs, d, m, has_m, offset, lut, n_groups):
    out_dim = d.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        rows_nibbles_int8(xr, sxo, dx, dxs, qs, d, m, has_m, offset, lut, grp * out_dim // n_groups,
                          (grp + 1) * out_dim // n_groups, y)
    return y


@njit(parallel=True, cache=True)
def gemv_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, n_groups):
    out_dim = d.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        rows_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, grp * out_dim // n_groups,
                           (grp + 1) * out_dim // n_groups, y)
    return y


# ---------------------------------------------------------------- Q8_0, ggml's bytes (34 per block)


@njit(cache=True)
def rows_q8_0_int8(xq, dx, blocks, lut, lo_r, hi_r, y):
    """y[r] = sum_blocks d dx sum_k q_k xq_k, exact int32 block dots (|q| <= 128, |xq| <= 127)."""
    nb = blocks.shape[1] // Q8_0_BYTES
    for r in range(lo_r, hi_r):
        row = blocks[r]
        yv = zero_f32x8()
        for blk in range(nb):
            o = blk * Q8_0_BYTES
            prefetch(row, o + AHEAD)
            v = load_i8x32(row, o + 2)
            acc = dpbusd(zero_i32x8(), abs_i8(v), sign_i8(load_i8x32(xq, blk * Q), v))
            scale = lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)] * dx[blk]
            yv = fma_f32x8(cvt_i32x8(acc), splat_f32x8(scale), yv)
        y[r] = hsum_f32x8(yv)


@njit(cache=True, fastmath={"contract"})
def rows_q8_0_float(x, blocks, lut, lo_r, hi_r, y):
    """y[r] = sum_blocks d sum_k q_k x_k in float32 lanes."""
    nb = blocks.shape[1] // Q8_0_BYTES
    for r in range(lo_r, hi_r):
        row = blocks[r]
        yv = zero_f32x8()
        for blk in range(nb):
            o = blk * Q8_0_BYTES
            prefetch(row, o + AHEAD)
            q0, q1, q2, q3 = i8x32_to_f32x8x4(load_i8x32(row, o + 2))
            s = fma_f32x8(q3, load_f32x8(x, blk * Q + 24), fma_f32x8(q2, load_f32x8(x, blk * Q + 16),
                          fma_f32x8(q1, load_f32x8(x, blk * Q + 8), mul_f32x8(q0, load_f32x8(x, blk * Q)))))
            yv = fma_f32x8(s, splat_f32x8(lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)]), yv)
        y[r] = hsum_f32x8(yv)


@njit(parallel=True, cache=True)
def gemv_q8_0_int8(xq, dx, blocks, lut, n_groups):
    out_dim = blocks.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        rows_q8_0_int8(xq, dx, blocks, lut, grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups, y)
    return y


@njit(parallel=True, cache=True)
def gemv_q8_0_float(x, blocks, lut, n_groups):
    out_dim = blocks.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        rows_q8_0_float(x, blocks, lut, grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups, y)
    return y
