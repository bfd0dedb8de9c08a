"""The SwiGLU feed-forward block (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):

    mlp(x) = down_proj( silu(gate_proj(x)) * up_proj(x) )

Shapes: x (T, D) -> gate, up (T, F) -> (T, D). Matches HF ``MistralMLP`` (``act_fn = silu``).

tests/test_mlp.py checks a hand-computed example, and tests/test_model.py compares every layer's
mlp_output with transformers' ``MistralMLP``.

The element-wise step: NumPy's float32 tanh is scalar code on CPUs without AVX-512 (~4 ns a value on AMD
Zen 3; 24 million values in a 512-token SmolLM2 prompt), so float32 runs take a compiled twin of
``silu(g) * u`` (``use_silu_mul``; mistral_np/fastmath.py gives one at package import, g / (1 + exp(-g)),
equal to ops.py's within float32 rounding: tests/test_fastmath.py). Float64 uses ops.py's silu. Traced runs
take the same path as untraced ones (recording changes no number).

next: rmsnorm.py.
"""

import numpy as np

from .ops import linear, linears, silu

_compiled = {"silu_mul": None}  # g, u (T, F) float32 -> g <- silu(g) * u in place (use_silu_mul)


def use_silu_mul(fn) -> None:
    """Compute float32 silu(g) * u with ``fn(g, u)`` (in place in g); None: NumPy."""
    _compiled["silu_mul"] = fn


def swiglu_mlp(x: np.ndarray, gate_proj, up_proj, down_proj) -> np.ndarray:
    gate, up = linears(x, gate_proj, up_proj)             # (T, D) -> (T, F) x2: linear(x, w) for each w
    fast = _compiled["silu_mul"]
    if fast is not None and gate.dtype == np.float32 and gate.flags.c_contiguous and up.flags.c_contiguous:
        fast(gate, up)
        h = gate
    else:
        h = silu(gate) * up                               # (T, F)
    return linear(h, down_proj)                           # (T, F) -> (T, D)
