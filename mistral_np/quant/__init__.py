"""Block quantization, byte-compatible with ggml (GGUF): Q4_0, Q4_1, Q8_0.

Read in this order: common.py (blocks along the input axis), q4_0.py, q8_0.py, q4_1.py (the formats
and their NumPy reference functions, the oracle), tensor.py (what the model holds), then layout.py,
simd.py, decode.py and kernels.py (the Numba twins that make it fast). docs/quantization.md has the
diagrams, the error bounds and the measured speed.
"""

from .q4_0 import dequantize_q4_0_ref, matmul_q4_0_ref, quantize_q4_0_ref
from .q4_1 import dequantize_q4_1_ref, matmul_q4_1_ref, quantize_q4_1_ref
from .q8_0 import dequantize_q8_0_ref, matmul_q8_0_ref, quantize_q8_0_ref
from .quantize_kernels import quantize_q4_0, quantize_q8_0
from .tensor import (Q4_0Tensor, Q4_1Tensor, Q8_0Tensor, QuantTensor, TENSOR_TYPES, decode_activations, from_packed, quantize,
                     reconstruction_error)

__all__ = [
    "QuantTensor", "decode_activations", "Q4_0Tensor", "Q4_1Tensor", "Q8_0Tensor", "TENSOR_TYPES", "from_packed", "quantize", "reconstruction_error",
    "quantize_q4_0", "quantize_q4_0_ref", "dequantize_q4_0_ref", "matmul_q4_0_ref",
    "quantize_q4_1_ref", "dequantize_q4_1_ref", "matmul_q4_1_ref",
    "quantize_q8_0", "quantize_q8_0_ref", "dequantize_q8_0_ref", "matmul_q8_0_ref",
]
