"""Compiled float32 twins of two element-wise steps of the model: the softmax's exponentials and SiLU.

Why. NumPy computes exp and tanh of float32 arrays with scalar code on CPUs without AVX-512 (AMD Zen 3: 3-6
ns a value, measured with ``np.exp(x, out=y)`` on 393k values). A 512-token SmolLM2 prompt takes 53 million
exponentials in its attention and 24 million SiLUs in its MLPs: ~0.4 s of a 2.4 s prompt. Eight lanes at a
time (simd.py:exp_f32x8, Cephes' polynomial) cost ~0.8 ns a value, measured in the same session.

    exp_rows(x)        x (R, S) float32, in place: exp(x - max of its row); -> the row sums (R,) float32
    silu_mul(g, u)     g (T, F) float32, in place: silu(g) * u, silu(g) = g / (1 + exp(-g))

Where they are used. The readable model (model/) imports only NumPy: ``install()`` hands these to the
blocked attention (model/gqa_blocked.py:use_exp_rows, the long inputs' fast twin) and to the MLP
(model/mlp.py:use_silu_mul) at package import, for float32 (traced or not: recording changes no number).
model/ops.py's softmax and silu stay the float64 path and the definitions these are tested against.

Numbers. exp_f32x8 is within 2 units in the last place of the correctly rounded exp on every float32 tested
(tests/test_fastmath.py, all 2^32 bit patterns in tools/, a sample in the suite); -inf gives 0, NaN stays NaN.
The sums run in another order than NumPy's (8 lanes, then the tail), so a probability may differ from
model/gqa.py's by a few units of float32 rounding; tests/test_attention.py bounds the blocked twin with them.

next: back to model/gqa_blocked.py.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .quant.fast.simd import (add_f32x8, div_f32x8, exp_f32x8, hmax_f32x8, hsum_f32x8, load_f32x8, max_f32x8,
                              mul_f32x8, splat_f32x8, store_f32x8, sub_f32x8, zero_f32x8)


@njit(cache=True, nogil=True)
def _exp_scalar(x, tmp):
    """exp_f32x8 of one value (lane 0), tmp a float32 scratch of 8."""
    store_f32x8(tmp, 0, exp_f32x8(splat_f32x8(x)))
    return tmp[0]


@njit(cache=True, nogil=True)
def exp_into(x):
    """x (float32, contiguous) <- exp(x), in place."""
    f = x.reshape(-1)
    n, tmp = f.shape[0], np.empty(8, dtype=np.float32)
    vec = n // 8 * 8
    for i in range(0, vec, 8):
        store_f32x8(f, i, exp_f32x8(load_f32x8(f, i)))
    for i in range(vec, n):
        f[i] = _exp_scalar(f[i], tmp)


@njit(cache=True, nogil=True)
def exp_rows(x):
    """x (R, S) float32 C-contiguous, in place: x[r] <- exp(x[r] - max x[r]).  -> row sums (R,) float32

    The softmax's numerators: the caller divides by the sums (after multiplying by the values, which is
    cheaper). A row of -inf gives NaN, as NumPy's x - max does."""
    rows, n = x.shape
    f = x.reshape(-1)
    sums = np.empty(rows, dtype=np.float32)
    tmp = np.empty(8, dtype=np.float32)
    vec = n // 8 * 8
    for r in range(rows):
        o = r * n
        m = np.float32(-np.inf)
        if vec:
            mv = load_f32x8(f, o)
            for i in range(8, vec, 8):
                mv = max_f32x8(load_f32x8(f, o + i), mv)
            m = hmax_f32x8(mv)
        for i in range(vec, n):
            m = max(m, f[o + i])
        ms, acc = splat_f32x8(m), zero_f32x8()
        for i in range(0, vec, 8):
            e = exp_f32x8(sub_f32x8(load_f32x8(f, o + i), ms))
            store_f32x8(f, o + i, e)
            acc = add_f32x8(acc, e)
        total = hsum_f32x8(acc)
        for i in range(vec, n):
            f[o + i] = _exp_scalar(f[o + i] - m, tmp)
            total += f[o + i]
        sums[r] = total
    return sums


@njit(cache=True, nogil=True)
def silu_mul(g, u):
    """g <- g / (1 + exp(-g)) * u, element by element; g, u (T, F) float32 C-contiguous. For g below about -88.7,
    exp(-g) is +inf and the result -0 (the true value is below 1e-36 in magnitude)."""
    gf, uf = g.reshape(-1), u.reshape(-1)
    n, tmp = gf.shape[0], np.empty(8, dtype=np.float32)
    vec = n // 8 * 8
    one, zero = splat_f32x8(1.0), zero_f32x8()
    for i in range(0, vec, 8):
        v = load_f32x8(gf, i)
        s = add_f32x8(one, exp_f32x8(sub_f32x8(zero, v)))
        store_f32x8(gf, i, mul_f32x8(div_f32x8(v, s), load_f32x8(uf, i)))
    for i in range(vec, n):
        gf[i] = gf[i] / (np.float32(1.0) + _exp_scalar(-gf[i], tmp)) * uf[i]


def install() -> None:
    """Hand the compiled twins to the model's fast paths (see above)."""
    from .model import gqa_blocked, mlp
    gqa_blocked.use_exp_rows(exp_rows)
    mlp.use_silu_mul(silu_mul)
