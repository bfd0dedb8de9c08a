"""The compiled float32 exp and SiLU (mistral_np/fastmath.py, quant/fast/simd.py:exp_f32x8) against NumPy.

Bound. exp_f32x8 is Cephes' expf: the reduction x = n ln 2 + r is exact (ln 2 in two parts, the first with 9
significant bits), the polynomial's relative error on |r| <= ln 2 / 2 is ~1.2e-7 (1 unit in the last place),
and the evaluation in float32 adds about one more rounding; the scaling by 2^n is exact for normal results. So
2 units in the last place of the correctly rounded exp (the float64 exp rounded to float32); every float32 of
the range, all 2^32 bit patterns, measured 1.26 with tools/check_exp.py; the suite checks 4 million of them
spread over the range. Below 2^-126 the result is subnormal and the last multiplication rounds it: within one
spacing of the subnormals (2^-149). NumPy's own float32 exp measured 2.37 units on the same values.
"""

import numpy as np
import pytest

import mistral_np  # noqa: F401  (installs the compiled twins)
from mistral_np import fastmath
from mistral_np.model import gqa_blocked, mlp
from mistral_np.model.ops import silu

ULP_BOUND = 2.0
TINY = np.float32(2.0 ** -126)


def exact_exp32(x):
    """The float64 exp of float32 inputs, and its float32 rounding (inf where it overflows)."""
    with np.errstate(over="ignore"):
        e64 = np.exp(x.astype(np.float64))
        return e64, e64.astype(np.float32)


def spread(n):
    """n float32s evenly spaced in bit pattern over [-104, 89] (both signs' patterns), plus the edges."""
    lo, hi = np.float32(-104.0).view(np.int32), np.float32(89.0).view(np.int32)
    neg = np.linspace(np.int32(np.float32(-0.0).view(np.int32)), lo, n // 2, dtype=np.int64)  # -0 .. -104
    pos = np.linspace(0, hi, n // 2, dtype=np.int64)                                      # 0 .. 89
    pats = np.concatenate([neg, pos]).astype(np.uint32).view(np.float32)
    edges = np.float32([88.72283, 88.72284, 88.7229, -87.33654, -87.3366, -103.97207, -103.9721, -1e-30, 1e-30])
    return np.concatenate([pats, edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(0))])


def test_exp_is_within_two_units_in_the_last_place():
    x = spread(4_000_000)
    y = x.copy()
    fastmath.exp_into(y)
    e64, e32 = exact_exp32(x)
    normal = np.isfinite(e32) & (e32 >= TINY)
    ulps = np.abs(y[normal].astype(np.float64) - e64[normal]) / np.spacing(e32[normal]).astype(np.float64)
    assert ulps.max() <= ULP_BOUND, (x[normal][np.argmax(ulps)], ulps.max())
    sub = (e32 < TINY)
    assert np.all(np.abs(y[sub].astype(np.float64) - e64[sub]) <= 2.0 ** -149)
    assert np.array_equal(np.isinf(y), np.isinf(e32))          # overflow exactly where float32's exp overflows


def test_exp_special_values():
    x = np.float32([-np.inf, np.inf, np.nan, 0.0, -0.0, -200.0, 200.0, -104.0])
    fastmath.exp_into(x)
    assert x[0] == 0 and x[1] == np.inf and np.isnan(x[2]) and x[3] == 1 and x[4] == 1
    assert x[5] == 0 and x[6] == np.inf and x[7] == 0


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 333])
def test_exp_rows_is_the_softmax_numerator(n):
    """exp(x - row max) in place and the row sums, against NumPy's twin (gqa_blocked.exp_rows) within the exp
    bound; masked entries (-inf) give exactly 0; tails shorter than 8 lanes take the same function."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((5, n)) * 4).astype(np.float32)
    x[1, ::3] = -np.inf
    x[1, 0] = 0.5                                              # a row keeps one visible entry at least
    ref = x.copy()
    ref_sums = gqa_blocked.exp_rows(ref)
    got = x.copy()
    sums = fastmath.exp_rows(got)
    assert sums.dtype == np.float32 and sums.shape == (5,)
    assert np.all(got[np.isneginf(x)] == 0)
    np.testing.assert_allclose(got, ref, rtol=ULP_BOUND * 2.0 ** -23 * 2, atol=0)
    # a sum of n positive terms in float32: n roundings of at most 2^-24 each, relative to the sum, plus the exp's
    np.testing.assert_allclose(sums, ref_sums, rtol=(n + 2 * ULP_BOUND) * 2.0 ** -24 * 2)


def test_silu_mul_against_numpy():
    """g / (1 + exp(-g)) * u against ops.py's tanh form: both within a few float32 roundings of silu; the
    extremes: -1000 -> -0 (exp(1000) is inf), +1000 -> 1000 u, NaN stays NaN."""
    rng = np.random.default_rng(1)
    g = (rng.standard_normal((3, 101)) * 6).astype(np.float32)
    g[0, :5] = [-1000.0, 1000.0, np.nan, 0.0, -88.0]
    u = rng.standard_normal((3, 101)).astype(np.float32)
    ref = silu(g.astype(np.float64)) * u.astype(np.float64)
    got = g.copy()
    fastmath.silu_mul(got, u)
    assert np.isnan(got[0, 2]) and got[0, 0] == 0 and got[0, 1] == np.float32(1000.0) * u[0, 1]
    ok = ~np.isnan(ref)
    # |d silu| <= 1.1 |g| relative error in the sigmoid; 2 ulps of exp, the add, divide and multiply: ~6 roundings
    np.testing.assert_allclose(got[ok], ref[ok], rtol=8 * 2.0 ** -24, atol=1e-30)


def test_the_model_uses_the_twins_for_float32_and_numpy_for_float64():
    """The fast paths are installed at import; float32 SwiGLU is silu_mul's, float64 ops.py's silu, bit for bit."""
    assert gqa_blocked._compiled["exp_rows"] is fastmath.exp_rows and mlp._compiled["silu_mul"] is fastmath.silu_mul
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    gate, up, down = (rng.standard_normal(s).astype(np.float32) for s in ((24, 16), (24, 16), (16, 24)))
    x64, gate64, up64, down64 = (a.astype(np.float64) for a in (x, gate, up, down))
    assert np.array_equal(mlp.swiglu_mlp(x64, gate64, up64, down64), (silu(x64 @ gate64.T) * (x64 @ up64.T)) @ down64.T)
    g, u = x @ gate.T, x @ up.T
    fastmath.silu_mul(g, u)
    assert np.array_equal(mlp.swiglu_mlp(x, gate, up, down), g @ down.T)
