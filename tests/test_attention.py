"""Grouped-query attention (model/gqa.py, gqa_blocked.py): against textbook multi-head attention with repeated
KV heads, the blocked twin against the equation, and the probabilities."""

import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from mistral_np.model.gqa import attention_probs, grouped_query_attention
from mistral_np.model.gqa_blocked import grouped_query_attention_blocked
from mistral_np.model.masks import sliding_window_causal_mask

SET = settings(deadline=None, max_examples=40)


def rng(seed):
    return np.random.default_rng(seed)


def mha_reference(q, k, v, allowed):
    """Plain multi-head attention, one head at a time, KV heads repeated: the textbook formula."""
    T, H, Dh = q.shape
    out = np.zeros_like(q)
    for h in range(H):
        s = q[:, h] @ k[:, h].T / np.sqrt(Dh)
        s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[:, h]
    return out


@SET
@given(st.integers(0, 2**32 - 1), st.sampled_from([(4, 4), (4, 2), (8, 2), (8, 1)]), st.integers(1, 70),
       st.one_of(st.none(), st.integers(1, 20)))
def test_gqa_equals_mha_with_repeated_kv_heads(seed, heads, T, W):
    H, K = heads
    r = rng(seed)
    q, k, v = r.standard_normal((T, H, 8)), r.standard_normal((T, K, 8)), r.standard_normal((T, K, 8))
    pos = np.arange(T)
    ours = grouped_query_attention(q, k, v, pos, pos, W)
    rep = H // K   # query head h reads KV head h // G (HF repeat_kv order)
    ref = mha_reference(q, np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1),
                        sliding_window_causal_mask(pos, pos, W))
    assert_close("gqa", ours, ref, rel=1e-12)


# The blocked twin computes the same sums in another order (BLAS on other shapes; the keys it leaves out have
# weight exactly 0). Recursive summation of n terms errs by at most (n - 1) u per sum relative to the sum of
# magnitudes (Higham 2002, 2.4); a score sums Dh = 8 products, a softmax denominator and an output at most S = 90
# terms, each bounded by the largest value here, so the difference is at most about 2 (Dh + S) u ~ 2e-14 of the
# largest value in float64 (u = 1.1e-16), 2.4e-5 in float32 (u = 6e-8). The bounds below are 5x and 0.4x those.
BLOCKED_F64_REL = 2 * (8 + 90) * 2.0 ** -53 * 5      # 1.1e-13
BLOCKED_F32_REL = 1e-5                               # measured ~1e-6; the float32 path is also cast from float64


@SET
@given(st.integers(0, 2**32 - 1), st.sampled_from([(4, 4), (4, 2), (8, 1)]), st.integers(1, 90),
       st.one_of(st.none(), st.integers(1, 20)), st.integers(1, 17))
def test_blocked_twin_equals_the_equation(seed, heads, T, W, block):
    """gqa_blocked.py (queries a block at a time, only the keys a block can see) == gqa.py, float64 and float32."""
    H, K = heads
    r = rng(seed)
    q, k, v = r.standard_normal((T, H, 8)), r.standard_normal((T, K, 8)), r.standard_normal((T, K, 8))
    pos = np.arange(T)
    whole = grouped_query_attention(q, k, v, pos, pos, W)
    assert_close("blocked f64", grouped_query_attention_blocked(q, k, v, pos, pos, W, block=block), whole,
                 rel=BLOCKED_F64_REL)
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    blocked32 = grouped_query_attention_blocked(q32, k32, v32, pos, pos, W, block=block)
    assert blocked32.dtype == np.float32
    assert_close("blocked f32", blocked32, whole, rel=BLOCKED_F32_REL)


def test_blocked_twin_over_a_rolling_buffer():
    """Keys in slot order (a wrapped rolling buffer, empty slots at -1): the block's key selection uses positions."""
    r = rng(5)
    k_pos = np.array([12, 13, 6, 7, 8, 9, 10, 11, -1])          # slots of a buffer after wrapping, one empty
    q_pos = np.arange(10, 14)
    q, k, v = r.standard_normal((4, 4, 8)), r.standard_normal((9, 2, 8)), r.standard_normal((9, 2, 8))
    whole = grouped_query_attention(q, k, v, q_pos, k_pos, 5)
    assert_close("rolling", grouped_query_attention_blocked(q, k, v, q_pos, k_pos, 5, block=3), whole,
                 rel=BLOCKED_F64_REL)


def test_attention_probabilities_rows_sum_to_one_and_respect_the_window():
    r = rng(7)
    T, W = 12, 4
    q, k = r.standard_normal((T, 4, 8)), r.standard_normal((T, 2, 8))
    pos = np.arange(T)
    p = attention_probs(q, k, pos, pos, W)                          # (H, T, S)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-13)
    allowed = sliding_window_causal_mask(pos, pos, W)
    assert np.all(p[:, ~allowed] == 0) and np.all(p[:, allowed] > 0)
