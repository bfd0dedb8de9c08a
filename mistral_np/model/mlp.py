"""The SwiGLU feed-forward block (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):

    mlp(x) = down_proj( silu(gate_proj(x)) * up_proj(x) )

Shapes: x (T, D) -> gate, up (T, F) -> (T, D). Matches HF ``MistralMLP`` (``act_fn = silu``).

tests/test_mlp.py checks a hand-computed example, and tests/test_model.py compares every layer's
mlp_output with transformers' ``MistralMLP``.

next: rmsnorm.py.
"""

import numpy as np

from .ops import linear, silu


def swiglu_mlp(x: np.ndarray, gate_proj, up_proj, down_proj) -> np.ndarray:
    h = silu(linear(x, gate_proj)) * linear(x, up_proj)   # (T, D) -> (T, F)
    return linear(h, down_proj)                           # (T, F) -> (T, D)
