"""Exercise ``rmsnorm``: y = x / sqrt(mean(x^2) + eps) * weight, each token on its own.

Solution: mistral_np/model/rmsnorm.py:rms_norm. The checks follow tests/test_rmsnorm.py (the hand-computed
vector) and add the cases where the usual slips show: rows at different scales (the wrong axis), small
activations (eps outside the square root), a weight that is not all ones, float32 kept float32.

next: rope.py
"""

from __future__ import annotations

import numpy as np

from ..model.rmsnorm import rms_norm
from .checker import Check, Exercise, expect


def _ms(x, axis=-1):
    return np.mean(x * x, axis=axis, keepdims=True)


MISTAKES = [
    ("put eps outside the square root: x / (sqrt(mean(x^2)) + eps). It belongs inside: sqrt(mean(x^2) + eps).",
     lambda x, w, eps: x / (np.sqrt(_ms(x)) + eps) * w),
    ("leave eps out. With small activations it matters: it is added to the mean square, inside the square root.",
     lambda x, w, eps: x / np.sqrt(_ms(x)) * w),
    ("sum the squares instead of averaging them: the mean over the D values of a token is sum / D.",
     lambda x, w, eps: x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps) * w),
    ("average over the tokens (axis 0) instead of over each token's D values (the last axis).",
     lambda x, w, eps: x / np.sqrt(_ms(x, 0) + eps) * w),
    ("average over the whole array at once: each token (row) is normalized on its own, over its last axis.",
     lambda x, w, eps: x / np.sqrt(np.mean(x * x) + eps) * w),
    ("subtract the mean first: that is LayerNorm. RMSNorm only divides by the root mean square.",
     lambda x, w, eps: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w),
    ("leave out the weight: the normalized x is multiplied by weight, one factor per channel.",
     lambda x, w, eps: x / np.sqrt(_ms(x) + eps)),
    ("multiply by (1 + weight), as Gemma's checkpoints store it. Mistral's weight is the factor itself.",
     lambda x, w, eps: x / np.sqrt(_ms(x) + eps) * (1 + w)),
    ("divide by the mean square itself: take its square root.",
     lambda x, w, eps: x / (_ms(x) + eps) * w),
]


def _where(index):
    return f"token {index[0]}, channel {index[1]}" if len(index) == 2 else str(index)


def _check(x, w, eps, dtype=None):
    def run(fn):
        expect(fn, (x, w, eps), ("x", "weight", "eps"), rms_norm, axes=("token", "channel"), where=_where,
               mistakes=MISTAKES, dtype=dtype)
    return run


_r = np.random.default_rng(7)
_SCALES = np.array([[1.0], [10.0], [0.1], [3.0]])

EXERCISE = Exercise(
    name="rmsnorm", title="RMSNorm", function="rms_norm", signature="rms_norm(x, weight, eps)",
    solution="mistral_np/model/rmsnorm.py:rms_norm", solve=rms_norm,
    task="""x (T, D): T tokens of D values; weight (D,); eps: a small float (Mistral: 1e-5).
-> (T, D): each token divided by the square root of (the mean of its squares + eps), times weight.
Keep x's dtype (float32 in, float32 out), and do not modify x: the residual stream adds it back.""",
    checks=[
        Check("hand-computed: x = [[3, 4]], weight = [1, 2], eps = 0 -> [[3, 8] / sqrt(12.5)]",
              _check(np.array([[3.0, 4.0]]), np.array([1.0, 2.0]), 0.0)),
        Check("each token is normalized on its own: 4 tokens of 8 values at scales 1, 10, 0.1, 3",
              _check(_r.standard_normal((4, 8)) * _SCALES, np.ones(8), 1e-5)),
        Check("the weight multiplies each channel: 3 tokens, D = 16, a random weight",
              _check(_r.standard_normal((3, 16)), 1 + 0.5 * _r.standard_normal(16), 1e-5)),
        Check("eps inside the square root: small activations (|x| ~ 0.003) with eps = 1e-5, where eps matters",
              _check(0.003 * _r.standard_normal((3, 8)), 1 + 0.5 * _r.standard_normal(8), 1e-5)),
        Check("float32 in, float32 out: the model computes in float32",
              _check(_r.standard_normal((5, 32)).astype(np.float32), (1 + 0.1 * _r.standard_normal(32)).astype(
                  np.float32), 1e-5, dtype=np.float32)),
    ],
)
