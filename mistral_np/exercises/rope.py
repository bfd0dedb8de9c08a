"""Exercise ``rope``: rotary position embeddings in the half-split layout (HF's, this project's).

Solution: mistral_np/model/rope.py:apply_rope. The learner gets the cos/sin tables (model/rope.py:rope_tables
makes them) and rotates pair i = (x[i], x[i + Dh/2]) of every head by the angle of its token's position.
The checks follow tests/test_rope.py: position 0 rotates nothing, the values of the half-split layout,
lengths kept, Mistral's head size at positions near 4096, float32 kept float32.

next: window_mask.py
"""

from __future__ import annotations

import numpy as np

from ..model.rope import apply_rope, apply_rope_interleaved, rope_tables
from .checker import Check, Exercise, Wrong, as_array, call, check_shape, expect


def _halves(x):
    h = x.shape[-1] // 2
    return x[..., :h], x[..., h:]


def _tables(cos, sin):
    return cos[:, None, :], sin[:, None, :]


def _other_way(x, cos, sin):
    (a, b), (c, s) = _halves(x), _tables(cos, sin)
    return np.concatenate([a * c + b * s, b * c - a * s], axis=-1)


def _swapped(x, cos, sin):
    return apply_rope(x, sin, cos)


def _first_half_only(x, cos, sin):
    (a, b), (c, s) = _halves(x), _tables(cos, sin)
    return np.concatenate([a * c - b * s, b], axis=-1)


def _both_minus(x, cos, sin):
    (a, b), (c, s) = _halves(x), _tables(cos, sin)
    return np.concatenate([a * c - b * s, b * c - a * s], axis=-1)


MISTAKES = [
    ("pair neighbours (x[2i], x[2i+1]): that is the interleaved layout of Meta's and Mistral's original code and "
     "of GGUF files. This project, like transformers, pairs x[i] with x[i + Dh/2] (the half-split layout; "
     "docs/conventions.md explains how the loaders permute q_proj and k_proj so both give the same scores).",
     apply_rope_interleaved),
    ("turn the other way (the sign of sin flipped): the first half gets x1*cos - x2*sin, the second "
     "x2*cos + x1*sin.", _other_way),
    ("swap cos and sin.", _swapped),
    ("rotate only the first half: the second half of each head is x2*cos + x1*sin, not x2 unchanged.",
     _first_half_only),
    ("use a minus sign in both halves: the second half is x2*cos + x1*sin.", _both_minus),
]


def _where_for(positions, dh):
    half = dh // 2

    def where(index):
        t, h, e = index
        i, side = (e, "first half") if e < half else (e - half, "second half")
        return (f"token {t} (position {positions[t]}), head {h}, element {e} (pair {i}: x[{i}] with "
                f"x[{i + half}], {side})")
    return where


def _case(T, n, dh, positions, theta=1e4, dtype=np.float64, seed=0):
    r = np.random.default_rng(seed)
    positions = np.asarray(positions, dtype=np.int64)
    x = r.standard_normal((T, n, dh)).astype(dtype)
    cos, sin = rope_tables(positions, dh, theta, dtype)
    return x, cos, sin, positions


def _values(T, n, dh, positions, theta=1e4, dtype=None, seed=0):
    x, cos, sin, positions = _case(T, n, dh, positions, theta, dtype or np.float64, seed)

    def run(fn):
        expect(fn, (x, cos, sin), ("x", "cos", "sin"), apply_rope, axes=("token", "head", "element"),
               where=_where_for(positions, dh), mistakes=MISTAKES, dtype=dtype)
    return run


def _shape_only(fn):
    x, cos, sin, _ = _case(5, 3, 8, np.arange(5))
    check_shape(as_array(call(fn, x, cos, sin)), x.shape, ("token", "head", "element"))


def _keeps_lengths(fn):
    x, cos, sin, positions = _case(6, 2, 16, [0, 1, 2, 50, 400, 3000], seed=3)
    y = as_array(call(fn, x.copy(), cos, sin))
    check_shape(y, x.shape, ("token", "head", "element"))
    before, after = np.linalg.norm(x, axis=-1), np.linalg.norm(y.astype(np.float64), axis=-1)
    bad = np.argwhere(~(np.abs(after - before) <= 1e-6 * before))
    if len(bad):
        t, h = bad[0]
        raise Wrong(f"a rotation keeps the length of every head vector, yours changes it: token {t} (position "
                    f"{positions[t]}), head {h}: length {before[t, h]:.6g} before, {after[t, h]:.6g} after. Each "
                    f"pair (x1, x2) must become (x1*cos - x2*sin, x2*cos + x1*sin) with the same angle in both.")


EXERCISE = Exercise(
    name="rope", title="RoPE (half-split)", function="apply_rope", signature="apply_rope(x, cos, sin)",
    solution="mistral_np/model/rope.py:apply_rope", solve=apply_rope,
    task="""x (T, n, Dh): T tokens, n heads of Dh values; cos, sin (T, Dh/2): for token t and pair i, the
cosine and sine of angle position[t] * theta ** (-2i / Dh) (mistral_np/model/rope.py:rope_tables).
-> (T, n, Dh): in every head, pair i = (x[i], x[i + Dh/2]) turned by its angle:
   out[:Dh/2] = x1*cos - x2*sin,   out[Dh/2:] = x2*cos + x1*sin   with x1 = x[:Dh/2], x2 = x[Dh/2:].
Every head of a token turns by the same angles. Keep x's dtype; do not modify x.""",
    checks=[
        Check("one rotated vector per token and head: x (5, 3, 8) -> (5, 3, 8)", _shape_only),
        Check("position 0 does not rotate (cos = 1, sin = 0): 1 token, 2 heads, Dh = 8",
              _values(1, 2, 8, [0])),
        Check("half-split pairs (x[i], x[i + Dh/2]): 6 tokens at positions 0..5, 2 heads, Dh = 8",
              _values(6, 2, 8, np.arange(6), seed=1)),
        Check("a rotation keeps each head vector's length: positions 0, 1, 2, 50, 400, 3000, Dh = 16",
              _keeps_lengths),
        Check("Mistral's head size: Dh = 128, 4 heads, positions 4090..4099, theta = 1e4",
              _values(10, 4, 128, np.arange(4090, 4100), seed=2)),
        Check("float32 in, float32 out: 3 tokens at positions 7, 8, 9, Dh = 64, theta = 1e6",
              _values(3, 3, 64, [7, 8, 9], theta=1e6, dtype=np.float32, seed=4)),
    ],
)
