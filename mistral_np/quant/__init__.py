"""Block quantization, byte-compatible with ggml (GGUF): Q4_0, Q4_1, Q8_0.

Two halves, visibly apart:

* the reference (this folder): common.py (blocks along the input axis), q4_0.py, q8_0.py, q4_1.py (each
  format's bytes, drawn, and its NumPy quantize / dequantize / matmul: the oracle), and tensor.py (the
  weight objects the model holds);
* the fast twins (fast/): layout.py, simd.py, decode.py, kernels.py and quantize.py, in Numba, each
  tested against its reference (tests/test_quant_kernels.py).

docs/quantization.md has the diagrams, the error bounds and the measured speed.
"""

from .fast.quantize import quantize_q4_0, quantize_q8_0
from .q4_0 import dequantize_q4_0_ref, matmul_q4_0_ref, quantize_q4_0_ref
from .q4_1 import dequantize_q4_1_ref, matmul_q4_1_ref, quantize_q4_1_ref
from .q8_0 import dequantize_q8_0_ref, matmul_q8_0_ref, quantize_q8_0_ref
from .tensor import (TENSOR_TYPES, ActivationsView, Q4_0Tensor, Q4_1Tensor, Q8_0Tensor, QuantTensor, decode_weights,
                     from_packed, quantize, reconstruction_error)

__all__ = [
    "QuantTensor", "ActivationsView", "decode_weights", "Q4_0Tensor", "Q4_1Tensor", "Q8_0Tensor", "TENSOR_TYPES",
    "from_packed", "quantize", "reconstruction_error",
    "quantize_q4_0", "quantize_q4_0_ref", "dequantize_q4_0_ref", "matmul_q4_0_ref",
    "quantize_q4_1_ref", "dequantize_q4_1_ref", "matmul_q4_1_ref",
    "quantize_q8_0", "quantize_q8_0_ref", "dequantize_q8_0_ref", "matmul_q8_0_ref",
]
