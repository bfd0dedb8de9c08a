"""Component tests (tier a): each piece against an alternative formulation or a hand-computable case."""

import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from mistral_np.attention import grouped_query_attention
from mistral_np.masks import sliding_window_causal_mask
from mistral_np.ops import silu, softmax
from mistral_np.rmsnorm import rms_norm
from mistral_np.rope import (apply_rope, apply_rope_interleaved, permute_to_half_split, permute_to_interleaved,
                             rope_tables)

SET = settings(deadline=None, max_examples=40)


def rng(seed):
    return np.random.default_rng(seed)


# --- RMSNorm ---------------------------------------------------------------------------------------

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


# --- RoPE --------------------------------------------------------------------------------------------

@SET
@given(st.integers(0, 2**32 - 1), st.sampled_from([8, 16, 64, 128]), st.sampled_from([1e4, 1e6]))
def test_rope_preserves_norms(seed, dh, theta):
    r = rng(seed)
    pos = r.integers(0, 40000, 7)
    x = r.standard_normal((7, 3, dh))
    cos, sin = rope_tables(pos, dh, theta, np.float64)
    y = apply_rope(x, cos, sin)
    assert_close("norms", np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rel=1e-12)


@SET
@given(st.integers(0, 2**32 - 1), st.sampled_from([8, 32, 128]), st.integers(0, 5000), st.integers(0, 5000),
       st.integers(-3000, 3000))
def test_rope_scores_depend_only_on_position_difference(seed, dh, m, n, shift):
    """q(m)·k(n) == q(m+s)·k(n+s): RoPE encodes relative position."""
    r = rng(seed)
    q, k = r.standard_normal((1, 1, dh)), r.standard_normal((1, 1, dh))
    s = max(shift, -min(m, n))

    def dot(pq, pk):
        cq, sq = rope_tables(np.array([pq]), dh, 1e4, np.float64)
        ck, sk = rope_tables(np.array([pk]), dh, 1e4, np.float64)
        return float(np.sum(apply_rope(q, cq, sq) * apply_rope(k, ck, sk)))

    assert abs(dot(m, n) - dot(m + s, n + s)) <= 1e-9 * max(1.0, abs(dot(m, n)))


@SET
@given(st.integers(0, 2**32 - 1), st.sampled_from([8, 16, 64]), st.integers(1, 4), st.integers(1, 6))
def test_half_split_on_permuted_weights_equals_interleaved_on_original(seed, dh, n_heads, T):
    """The loader's q/k permutation (SPEC.md §3.3): interleaved RoPE with Meta-order weights gives the
    same scores as half-split RoPE with HF-order weights, and the rotated vectors are a reordering."""
    r = rng(seed)
    D = 12
    w_meta = r.standard_normal((n_heads * dh, D))
    w_hf = permute_to_half_split(w_meta, n_heads)
    x = r.standard_normal((T, D))
    pos = r.integers(0, 1000, T)
    cos, sin = rope_tables(pos, dh, 1e4, np.float64)
    a = apply_rope_interleaved((x @ w_meta.T).reshape(T, n_heads, dh), cos, sin)
    b = apply_rope((x @ w_hf.T).reshape(T, n_heads, dh), cos, sin)
    order = permute_to_half_split(np.arange(n_heads * dh)[:, None], n_heads)[:, 0].reshape(n_heads, dh)[0]
    assert_close("reordered", b, a[..., order], rel=1e-12)
    assert_close("scores", np.einsum("thd,shd->hts", b, b), np.einsum("thd,shd->hts", a, a), rel=1e-12)


def test_permutation_worked_example_and_inverse():
    w = np.arange(8, dtype=np.float64)[:, None]         # one head, Dh = 8
    assert permute_to_half_split(w, 1)[:, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    w = np.random.default_rng(0).standard_normal((3 * 16, 5))
    np.testing.assert_array_equal(permute_to_interleaved(permute_to_half_split(w, 3), 3), w)
    assert not np.array_equal(permute_to_interleaved(w, 3), permute_to_half_split(w, 3))  # Dh >= 8: not self-inverse


# --- masks ---------------------------------------------------------------------------------------------

def test_mask_worked_example_w3():
    m = sliding_window_causal_mask(np.arange(5), np.arange(5), 3).astype(int)
    assert m.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]


@SET
@given(st.integers(1, 40), st.integers(1, 120))
def test_mask_rows_hold_min_i_plus_1_W_keys(W, T):
    m = sliding_window_causal_mask(np.arange(T), np.arange(T), W)
    assert m.sum(axis=1).tolist() == [min(i + 1, W) for i in range(T)]
    full = sliding_window_causal_mask(np.arange(T), np.arange(T), None)
    assert full.sum(axis=1).tolist() == [i + 1 for i in range(T)]


def test_mask_uses_positions_not_slots():
    """A rolling buffer's slots hold positions out of order; empty slots (-1) never pass."""
    k_pos = np.array([6, 7, 4, 5, -1])
    m = sliding_window_causal_mask(np.array([7]), k_pos, 3)
    assert m.tolist() == [[True, True, False, True, False]]


# --- attention --------------------------------------------------------------------------------------

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


def test_gqa_query_blocks_do_not_change_results(monkeypatch):
    import mistral_np.attention as att
    r = rng(3)
    q, k, v = r.standard_normal((40, 4, 8)), r.standard_normal((40, 2, 8)), r.standard_normal((40, 2, 8))
    pos = np.arange(40)
    whole = att.grouped_query_attention(q, k, v, pos, pos, 7)
    monkeypatch.setattr(att, "QUERY_BLOCK", 3)
    assert_close("blocked", att.grouped_query_attention(q, k, v, pos, pos, 7), whole, rel=1e-14)


# --- small ops ----------------------------------------------------------------------------------------

def test_silu_and_softmax():
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    np.testing.assert_allclose(silu(x), x / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-14, atol=1e-300)
    p = softmax(np.array([[0.0, np.log(3.0), -np.inf]]))
    np.testing.assert_allclose(p, [[0.25, 0.75, 0.0]], rtol=1e-15)
    assert silu(np.float32([2.0])).dtype == np.float32
