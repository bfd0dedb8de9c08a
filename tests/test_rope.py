"""RoPE (model/rope.py): norms kept, relative positions only, and the q/k permutation between layouts."""

import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import assert_close
from mistral_np.model.rope import (apply_rope, apply_rope_interleaved, permute_to_half_split, permute_to_interleaved,
                                   rope_tables)

SET = settings(deadline=None, max_examples=40)


def rng(seed):
    return np.random.default_rng(seed)


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
    """The loader's q/k permutation (docs/references.md#rope): interleaved RoPE with Meta-order weights gives the
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
