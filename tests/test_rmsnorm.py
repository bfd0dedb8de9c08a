"""RMSNorm (model/rmsnorm.py): a hand-computed vector and scale invariance."""

import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from mistral_np.model.rmsnorm import rms_norm

SET = settings(deadline=None, max_examples=40)


def rng(seed):
    return np.random.default_rng(seed)


def test_rms_norm_hand_computed():
    x = np.array([[3.0, 4.0]], dtype=np.float64)          # mean(x^2) = 12.5
    w = np.array([1.0, 2.0])
    y = rms_norm(x, w, eps=0.0)
    np.testing.assert_allclose(y, [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-15)


@SET
@given(st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3), st.integers(1, 9), st.integers(2, 64))
def test_rms_norm_scale_invariant(seed, c, T, D):
    r = rng(seed)
    x, w = r.standard_normal((T, D)), r.standard_normal(D)
    assert_close("rms_norm(c x)", rms_norm(c * x, w, 0.0), rms_norm(x, w, 0.0), rel=1e-12)
