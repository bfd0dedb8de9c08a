"""SwiGLU (model/mlp.py) and the small ops it uses (model/ops.py): silu, softmax."""

import numpy as np

from mistral_np.model.mlp import swiglu_mlp
from mistral_np.model.ops import log_softmax, silu, softmax


def test_silu_and_softmax():
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    np.testing.assert_allclose(silu(x), x / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-14, atol=1e-300)
    p = softmax(np.array([[0.0, np.log(3.0), -np.inf]]))
    np.testing.assert_allclose(p, [[0.25, 0.75, 0.0]], rtol=1e-15)
    assert silu(np.float32([2.0])).dtype == np.float32


def test_swiglu_hand_computed():
    """down(silu(gate x) * up x) on a 2-d example: gate = [1, -2], up = [3, 0.5] for x = [1, 0]."""
    x = np.array([[1.0, 0.0]])
    gate, up = np.array([[1.0, 5.0], [-2.0, 1.0]]), np.array([[3.0, 0.0], [0.5, 7.0]])
    down = np.array([[1.0, 1.0]])
    s = lambda z: z / (1 + np.exp(-z))                     # noqa: E731
    expected = s(1.0) * 3.0 + s(-2.0) * 0.5
    np.testing.assert_allclose(swiglu_mlp(x, gate, up, down), [[expected]], rtol=1e-14)


def test_log_softmax_is_the_log_of_softmax():
    x = np.random.default_rng(0).standard_normal((3, 50)) * 10
    np.testing.assert_allclose(log_softmax(x), np.log(softmax(x)), rtol=1e-12, atol=1e-12)
