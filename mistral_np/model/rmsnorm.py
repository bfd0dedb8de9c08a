"""RMSNorm (Zhang & Sennrich 2019, eq. 4):  y = x / sqrt(mean(x^2) + eps) * weight.

Shapes: x (T, D), weight (D,) -> (T, D). Computed in the activation dtype (float32 or float64);
transformers computes the statistic in float32 even for a float64 model, which our float64 path
deliberately does not imitate (docs/references.md#float64). Matches HF ``MistralRMSNorm`` / ``LlamaRMSNorm``.

tests/test_rmsnorm.py checks a hand-computed vector and scale invariance, and tests/test_model.py compares
every layer's attn_input and the final_norm with transformers'.

next: ops.py.
"""

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    assert x.shape[-1] == weight.shape[-1], (x.shape, weight.shape)
    ms = np.mean(x * x, axis=-1, keepdims=True)                 # (T, D) -> (T, 1)
    return x / np.sqrt(ms + x.dtype.type(eps)) * weight        # (T, D)
