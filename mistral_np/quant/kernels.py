"""Numba twins of the reference functions: same names without ``_ref``, same signatures, same numbers.

    q4_0.py  dequantize_q4_0_ref / matmul_q4_0_ref   <->   here  dequantize_q4_0 / matmul_q4_0
    q4_1.py  dequantize_q4_1_ref / matmul_q4_1_ref   <->         dequantize_q4_1 / matmul_q4_1
    q8_0.py  dequantize_q8_0_ref / matmul_q8_0_ref   <->         dequantize_q8_0 / matmul_q8_0

The twins taking ggml bytes repack on every call (fine for tests and one-off use). The tensor
classes (tensor.py) repack once and call the layout-level functions ``matmul_nibbles`` /
``dequantize_nibbles`` / ``matmul_q8_0_blocks`` directly. Two regimes (PERF.md):

* T == 1, decode: a matrix-vector product is memory-bound. It reads the block-transposed layout
  (layout.py), one SIMD lane per block, in two split loops: block dot products, then scales.
  ``activations="float"`` (the default, the parity path) multiplies float32 activations;
  ``"int8"`` first quantizes x to Q8_0 blocks and uses 16-bit integer dot products as llama.cpp
  does, faster, with an extra error bounded in docs/quantization.md.
* T > 1, prefill: compute-bound. Tiles of rows are dequantized into a float32 scratch buffer
  (never the whole weight) and multiplied by BLAS sgemm. Always float activations.

fp16 scales stay fp16 in memory (so the layout costs exactly the file's bytes) and are converted
by a 65536-entry table, exact for every half value including subnormals, inf and NaN.

Every loop that LLVM should vectorize runs over blocks ``b`` innermost with no cross-lane sum.
Set ``OMP_WAIT_POLICY=PASSIVE`` in the environment (not here) when BLAS and Numba share the CPU.

next: tensor.py.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .common import Q, check_activations, check_packed
from .layout import G, NibbleLayout, repack

F16_TO_F32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # fp16 bits -> float32
ROW_TILE = 256  # rows per dequantized prefill tile: 256 x 4096 float32 = 4 MiB of scratch per thread
_NO_M = np.zeros((1, 1), dtype=np.uint16)  # placeholder for Q4_0's absent minimums


# ---------------------------------------------------------------- activations, reordered like the weights


@njit(cache=True)
def _transpose_x(x, nb):
    """x (in,) -> the order of the transposed weights: xt[c*G*32 + k*g + b] = x[(c*G + b)*32 + k]."""
    xt = np.empty(nb * Q, dtype=x.dtype)
    for c0 in range(0, nb, G):
        g = min(G, nb - c0)
        for b in range(g):
            for k in range(Q):
                xt[c0 * Q + k * g + b] = x[(c0 + b) * Q + k]
    return xt


@njit(cache=True)
def _quantize_x_q8_0(x, nb):
    """x (in,) float32 -> Q8_0 blocks as ggml's quantize_row_q8_0_ref (roundf): xq int16 (in,), dx (nb,)."""
    xq = np.empty(nb * Q, dtype=np.int16)
    dx = np.empty(nb, dtype=np.float32)
    for blk in range(nb):
        amax = np.float32(0.0)
        for k in range(Q):
            amax = max(amax, abs(x[blk * Q + k]))
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        dx[blk] = d
        for k in range(Q):
            v = x[blk * Q + k] * inv
            a = abs(v)
            r = np.floor(a) + np.floor(2 * (a - np.floor(a)))  # round half away from zero
            xq[blk * Q + k] = np.int16(r if v >= 0 else -r)
    return xq, dx


# ---------------------------------------------------------------- decode: T == 1, block-transposed nibbles


@njit(inline="always", fastmath={"contract"})
def _chunk_dot4_float(q0, q1, q2, q3, xt, qb, xb, g, offset, a0, a1, a2, a3):
    """Loop 1 for four rows: a_k[b] += sum_j (q_j - offset) x_j over one chunk, lane b = block b.

    Called with g = G (a compile-time constant: LLVM unrolls and vectorizes fully) or the ragged g.
    The nibble arithmetic stays in int8 so LLVM converts 8 lanes at a time; four rows share each
    load of x. `contract` lets LLVM fuse multiply and add (one rounding instead of two).
    """
    for j in range(16):
        r0, r1 = q0[qb + j * g:qb + j * g + g], q1[qb + j * g:qb + j * g + g]
        r2, r3 = q2[qb + j * g:qb + j * g + g], q3[qb + j * g:qb + j * g + g]
        xl, xh = xt[xb + j * g:xb + j * g + g], xt[xb + (16 + j) * g:xb + (16 + j) * g + g]
        for b in range(g):
            x0, x1 = xl[b], xh[b]
            a0[b] += np.float32(np.int8(np.int8(r0[b] & 15) - offset)) * x0
            a0[b] += np.float32(np.int8(np.int8(r0[b] >> 4) - offset)) * x1
            a1[b] += np.float32(np.int8(np.int8(r1[b] & 15) - offset)) * x0
            a1[b] += np.float32(np.int8(np.int8(r1[b] >> 4) - offset)) * x1
            a2[b] += np.float32(np.int8(np.int8(r2[b] & 15) - offset)) * x0
            a2[b] += np.float32(np.int8(np.int8(r2[b] >> 4) - offset)) * x1
            a3[b] += np.float32(np.int8(np.int8(r3[b] & 15) - offset)) * x0
            a3[b] += np.float32(np.int8(np.int8(r3[b] >> 4) - offset)) * x1


@njit(cache=True, fastmath={"contract"})
def _rows_float(xt, xsum, qs, d, m, has_m, offset, lut, lo_r, hi_r, y):
    """y[r] = sum_blocks d * sum_j (q_j - offset) x_j (+ m * sum_j x_j), rows lo_r..hi_r, 4 at a time."""
    nb = d.shape[1]
    acc = np.empty((4, G), dtype=np.float32)  # one partial dot product per row and block of the chunk
    tot = np.empty((4, G), dtype=np.float32)  # scaled partial sums, lane by lane (no cross-lane sums)
    for r in range(lo_r, hi_r, 4):
        rows = (r, min(r + 1, hi_r - 1), min(r + 2, hi_r - 1), min(r + 3, hi_r - 1))  # a short tail repeats a row
        tot[:] = 0
        for c0 in range(0, nb, G):
            g = min(G, nb - c0)
            acc[:] = 0
            qb, xb = c0 * 16, c0 * Q
            if g == G:
                _chunk_dot4_float(qs[rows[0]], qs[rows[1]], qs[rows[2]], qs[rows[3]], xt, qb, xb, G, offset,
                                  acc[0], acc[1], acc[2], acc[3])
            else:
                _chunk_dot4_float(qs[rows[0]], qs[rows[1]], qs[rows[2]], qs[rows[3]], xt, qb, xb, g, offset,
                                  acc[0], acc[1], acc[2], acc[3])
            for k in range(4):  # loop 2: scales (and Q4_1 minimums)
                dk, ak, tk = d[rows[k], c0:c0 + g], acc[k], tot[k]
                for b in range(g):
                    tk[b] += ak[b] * lut[dk[b]]
                if has_m:
                    mk, xs = m[rows[k], c0:c0 + g], xsum[c0:c0 + g]
                    for b in range(g):
                        tk[b] += lut[mk[b]] * xs[b]
        for k in range(4):
            y[rows[k]] = np.sum(tot[k])


@njit(inline="always")
def _chunk_dot_int8(q, xq, qb, xb, g, a):
    """Loop 1, integer: a[b] += sum_j q_j * xq_j in wrapping int16 lanes (16 per AVX2 multiply)."""
    for j in range(16):
        r = q[qb + j * g:qb + j * g + g]
        xl, xh = xq[xb + j * g:xb + j * g + g], xq[xb + (16 + j) * g:xb + (16 + j) * g + g]
        for b in range(g):
            a[b] = np.int16(a[b] + np.int16(r[b] & 15) * xl[b] + np.int16(r[b] >> 4) * xh[b])


@njit(cache=True)
def _rows_int8(xq, xsq, dx, qs, d, m, has_m, lut, lo_r, hi_r, y):
    """As _rows_float with Q8_0 activations x ~= dx * xq: exact int16 block dots, then float scales.

    Per block, c = sum_j (q_j - 8) * xq_j is computed as sum_j q_j xq_j - 8 sum_j xq_j in wrapping
    int16 arithmetic: the partial sums may overflow, but |c| <= 32 * 8 * 127 = 32512 fits, so the
    wrapped result is exact (PERF.md). Q4_1 then adds back 8 sum xq in int32, and m * dx * sum xq.
    """
    nb = d.shape[1]
    acc = np.empty(G, dtype=np.int16)
    tot = np.empty(G, dtype=np.float32)
    for r in range(lo_r, hi_r):
        tot[:] = 0
        for c0 in range(0, nb, G):
            g = min(G, nb - c0)
            acc[:] = 0
            if g == G:
                _chunk_dot_int8(qs[r], xq, c0 * 16, c0 * Q, G, acc)
            else:
                _chunk_dot_int8(qs[r], xq, c0 * 16, c0 * Q, g, acc)
            dr, sx, dxx = d[r, c0:c0 + g], xsq[c0:c0 + g], dx[c0:c0 + g]
            if has_m:
                mr = m[r, c0:c0 + g]
                for b in range(g):
                    c = np.int32(np.int16(acc[b] - 8 * sx[b])) + 8 * np.int32(sx[b])  # exact sum_j q_j xq_j
                    tot[b] += np.float32(c) * (lut[dr[b]] * dxx[b]) + lut[mr[b]] * (dxx[b] * np.float32(sx[b]))
            else:
                for b in range(g):
                    tot[b] += np.float32(np.int16(acc[b] - 8 * sx[b])) * (lut[dr[b]] * dxx[b])
        y[r] = np.sum(tot)


@njit(parallel=True, cache=True)
def _gemv_nibbles_float(xt, xsum, qs, d, m, has_m, offset, lut, n_groups):
    """Decode, float activations: row groups in parallel.  xt (in,) transposed -> (out,)"""
    out_dim = d.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):  # several groups per thread, so a thread slowed by a neighbour is helped
        _rows_float(xt, xsum, qs, d, m, has_m, offset, lut, grp * out_dim // n_groups,
                    (grp + 1) * out_dim // n_groups, y)
    return y


@njit(parallel=True, cache=True)
def _gemv_nibbles_int8(xq, xsq, dx, qs, d, m, has_m, lut, n_groups):
    """Decode, int8 activations: row groups in parallel.  xq (in,) transposed int16 -> (out,)"""
    out_dim = d.shape[0]
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        _rows_int8(xq, xsq, dx, qs, d, m, has_m, lut, grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups, y)
    return y


# ---------------------------------------------------------------- dequantizing rows (tiles, embeddings)


@njit(cache=True)
def _dequant_nibble_rows(qs, d, m, has_m, offset, lut, rows, out):
    """out[i] = dequantized row rows[i]: d * (q - offset) [+ m], the same float32 roundings as the ref."""
    nb = d.shape[1]
    off = np.float32(offset)
    for i in range(len(rows)):
        r = rows[i]
        for c0 in range(0, nb, G):
            g = min(G, nb - c0)
            for b in range(g):
                blk = c0 + b
                scale = lut[d[r, blk]]
                mn = lut[m[r, blk]] if has_m else np.float32(0.0)
                for j in range(16):
                    byte = qs[r, c0 * 16 + j * g + b]
                    lo = (np.float32(byte & 15) - off) * scale
                    hi = (np.float32(byte >> 4) - off) * scale
                    if has_m:
                        lo += mn
                        hi += mn
                    out[i, blk * Q + j] = lo
                    out[i, blk * Q + 16 + j] = hi


@njit(parallel=True, cache=True)
def _dequant_nibble_rows_par(qs, d, m, has_m, offset, lut, rows, out, n_groups):
    n = len(rows)
    for grp in prange(n_groups):
        lo, hi = grp * n // n_groups, (grp + 1) * n // n_groups
        _dequant_nibble_rows(qs, d, m, has_m, offset, lut, rows[lo:hi], out[lo:hi])


@njit(parallel=True, cache=True)
def _gemm_nibble_tiles(x, qs, d, m, has_m, offset, lut, tile):
    """Prefill: y = x @ w.T, tiles of rows dequantized per thread, each multiplied by BLAS.  -> (T, out)"""
    out_dim, nb = d.shape
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    n_tiles = (out_dim + tile - 1) // tile
    for t in prange(n_tiles):
        r0 = t * tile
        n = min(tile, out_dim - r0)
        scratch = np.empty((n, nb * Q), dtype=np.float32)  # (tile, in): the only float copy, one tile
        _dequant_nibble_rows(qs, d, m, has_m, offset, lut, np.arange(r0, r0 + n), scratch)
        y[:, r0:r0 + n] = np.dot(x, scratch.T)  # (T, in) @ (in, tile)
    return y


# ---------------------------------------------------------------- Q8_0, read in ggml's own layout


@njit(cache=True)
def _dequant_q8_0_rows(blocks, lut, rows, out):
    """blocks (out, nb*34) uint8 -> out[i] = d * qs for row rows[i]."""
    nb = blocks.shape[1] // 34
    for i in range(len(rows)):
        r = rows[i]
        for blk in range(nb):
            o = blk * 34
            scale = lut[np.uint16(blocks[r, o]) | (np.uint16(blocks[r, o + 1]) << 8)]
            for k in range(Q):
                v = np.int8(blocks[r, o + 2 + k])  # the byte is two's-complement int8
                out[i, blk * Q + k] = np.float32(v) * scale


@njit(parallel=True, cache=True)
def _dequant_q8_0_rows_par(blocks, lut, rows, out, n_groups):
    n = len(rows)
    for grp in prange(n_groups):
        lo, hi = grp * n // n_groups, (grp + 1) * n // n_groups
        _dequant_q8_0_rows(blocks, lut, rows[lo:hi], out[lo:hi])


@njit(parallel=True, cache=True)
def _gemv_q8_0(x, blocks, lut, n_groups):
    """y[r] = sum_blocks d * sum_k qs_k x_k, on ggml's bytes (int8 values sit contiguously).  -> (out,)"""
    out_dim = blocks.shape[0]
    nb = blocks.shape[1] // 34
    y = np.empty(out_dim, dtype=np.float32)
    for grp in prange(n_groups):
        for r in range(grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups):
            total = np.float32(0.0)
            for blk in range(nb):
                o = blk * 34
                s = np.float32(0.0)
                for k in range(Q):
                    s += np.float32(np.int8(blocks[r, o + 2 + k])) * x[blk * Q + k]
                total += s * lut[np.uint16(blocks[r, o]) | (np.uint16(blocks[r, o + 1]) << 8)]
            y[r] = total
    return y


@njit(parallel=True, cache=True)
def _gemm_q8_0_tiles(x, blocks, lut, tile):
    out_dim = blocks.shape[0]
    nb = blocks.shape[1] // 34
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    n_tiles = (out_dim + tile - 1) // tile
    for t in prange(n_tiles):
        r0 = t * tile
        n = min(tile, out_dim - r0)
        scratch = np.empty((n, nb * Q), dtype=np.float32)
        _dequant_q8_0_rows(blocks, lut, np.arange(r0, r0 + n), scratch)
        y[:, r0:r0 + n] = np.dot(x, scratch.T)
    return y


# ---------------------------------------------------------------- layout-level entry points (used by tensor.py)


def _n_groups(n_rows: int) -> int:
    """Row groups for prange: several per thread, so a thread slowed by a noisy neighbour is helped."""
    return max(1, min(n_rows, 8 * numba.get_num_threads()))


def _blas_one_thread():
    """BLAS limited to one thread while Numba's threads each run their own tile."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def matmul_nibbles(x: np.ndarray, lay: NibbleLayout, activations: str = "float") -> np.ndarray:
    """y = x @ w.T for a Q4_0/Q4_1 weight in the block-transposed layout.  (T, in) -> (T, out)"""
    out_dim, nb = lay.d.shape
    x = check_activations(x, nb * Q)
    has_m = lay.m is not None
    m = lay.m if has_m else _NO_M
    if activations not in ("float", "int8"):
        raise ValueError(f"activations must be 'float' or 'int8', got {activations!r}")
    if x.shape[0] > 1:  # prefill: float tiles and BLAS, whatever `activations` says
        with _blas_one_thread():
            return _gemm_nibble_tiles(x, lay.qs, lay.d, m, has_m, lay.offset, F16_TO_F32, ROW_TILE)
    if activations == "float":
        xsum = x[0].reshape(nb, Q).sum(axis=1, dtype=np.float32) if has_m else np.zeros(1, dtype=np.float32)
        y = _gemv_nibbles_float(_transpose_x(x[0], nb), xsum, lay.qs, lay.d, m, has_m, np.int8(lay.offset), F16_TO_F32,
                                _n_groups(out_dim))
    else:
        if lay.offset not in (0, 8):
            raise ValueError("int8 activations assume a Q4_0 (offset 8) or Q4_1 (offset 0) layout")
        xq, dx = _quantize_x_q8_0(x[0], nb)
        xsq = xq.reshape(nb, Q).sum(axis=1).astype(np.int16)  # |sum| <= 32 * 127 fits int16
        y = _gemv_nibbles_int8(_transpose_x(xq, nb), xsq, dx, lay.qs, lay.d, m, has_m, F16_TO_F32, _n_groups(out_dim))
    return y[None, :]  # (out,) -> (1, out)


def dequantize_nibbles(lay: NibbleLayout, rows: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows of a transposed-layout weight (all rows if ``rows`` is None).  -> (len(rows), in)"""
    out_dim, nb = lay.d.shape
    rows = np.arange(out_dim) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.empty((len(rows), nb * Q), dtype=np.float32)
    has_m = lay.m is not None
    _dequant_nibble_rows_par(lay.qs, lay.d, lay.m if has_m else _NO_M, has_m, lay.offset, F16_TO_F32, rows, out,
                             _n_groups(len(rows)))
    return out


def matmul_q8_0_blocks(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """y = x @ w.T for Q8_0 bytes rows (out, nb*34).  (T, in) -> (T, out)"""
    x = check_activations(x, rows.shape[1] // 34 * Q)
    if x.shape[0] > 1:
        with _blas_one_thread():
            return _gemm_q8_0_tiles(x, rows, F16_TO_F32, ROW_TILE)
    return _gemv_q8_0(x[0], rows, F16_TO_F32, _n_groups(rows.shape[0]))[None, :]


def dequantize_q8_0_blocks(rows: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows of Q8_0 bytes (out, nb*34).  -> (len(ids), in)"""
    ids = np.arange(rows.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    out = np.empty((len(ids), rows.shape[1] // 34 * Q), dtype=np.float32)
    _dequant_q8_0_rows_par(rows, F16_TO_F32, ids, out, _n_groups(len(ids)))
    return out


# ---------------------------------------------------------------- the twins of the reference functions


def dequantize_q4_0(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_nibbles(repack(check_packed(packed, shape, 18, name), shape, "Q4_0"))


def matmul_q4_0(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None,
                activations: str = "float") -> np.ndarray:
    return matmul_nibbles(x, repack(check_packed(packed, shape, 18, name), shape, "Q4_0"), activations)


def dequantize_q4_1(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_nibbles(repack(check_packed(packed, shape, 20, name), shape, "Q4_1"))


def matmul_q4_1(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None,
                activations: str = "float") -> np.ndarray:
    return matmul_nibbles(x, repack(check_packed(packed, shape, 20, name), shape, "Q4_1"), activations)


def dequantize_q8_0(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return dequantize_q8_0_blocks(check_packed(packed, shape, 34, name))


def matmul_q8_0(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    return matmul_q8_0_blocks(x, check_packed(packed, shape, 34, name))
