"""The few numeric primitives every layer uses: ``linear`` (and ``linears``), ``take_rows``, ``softmax``, ``silu``.

(``log_softmax`` serves the samplers and quality reports that sit beside the model.)

``linear`` is the single place where the float and the quantized paths meet: a plain NumPy weight is
multiplied directly; anything else (a quantized tensor, a BF16 weight converted on use) brings its
own ``matmul``. The model code calls ``linear`` and never branches on the weight's kind.

tests/test_mlp.py checks silu, softmax and log_softmax by hand; ``linear`` and ``take_rows`` are
checked with quantized weights in tests/test_quant_kernels.py and with float ones by every
comparison of tests/test_model.py with transformers.

next: that is the whole model. mistral_np/generation/loop.py drives it token by token.
"""

from __future__ import annotations

import numpy as np

from .parallel import matmul_t


def linear(x: np.ndarray, w) -> np.ndarray:
    """y = x @ w.T for an [out, in] weight (nn.Linear orientation).  (T, in) -> (T, out)"""
    if isinstance(w, np.ndarray):
        assert w.dtype == x.dtype, f"weight dtype {w.dtype} != activation dtype {x.dtype}"
        return matmul_t(x, w)          # x @ w.T, its columns cut into tiles for the threads (parallel.py)
    return w.matmul(x)


def linears(x: np.ndarray, *ws) -> list:
    """[linear(x, w) for w in ws], with the same numbers: the projections that read one input (q, k and v;
    gate and up). Quantized weights with int8 activations first quantize x into int8 blocks; those that would
    make the same blocks (same kernel family, same offset) make them once here (``matmul_shared``: the prepared
    input lives in ``shared`` for this call only, so no later x can meet a stale one)."""
    shared: dict = {}
    return [w.matmul_shared(x, shared) if hasattr(w, "matmul_shared") else linear(x, w) for w in ws]


def take_rows(w, ids: np.ndarray) -> np.ndarray:
    """Embedding lookup: rows ``ids`` of a (V, D) table.  (T,) -> (T, D)"""
    if isinstance(w, np.ndarray):
        return w[ids]
    return w.take_rows(ids)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum: subtracting the row maximum keeps exp from overflowing. -inf entries give 0."""
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(x)) = x - max - log(sum(exp(x - max))), without forming the probabilities."""
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def silu(x: np.ndarray) -> np.ndarray:
    """silu(x) = x * sigmoid(x), with sigmoid(x) = (1 + tanh(x/2)) / 2 (no overflow for large |x|)."""
    half = x.dtype.type(0.5)
    return x * (half + half * np.tanh(half * x))
