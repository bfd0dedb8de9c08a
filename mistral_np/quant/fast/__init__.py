"""The Numba twins of the reference block-quantization functions (see the parent package's docstring).

Read layout.py (the repacked bytes), simd.py (256-bit vectors as Numba values), decode.py (one-row
kernels), kernels.py (prefill tiles, dequantization, entry points), quantize.py (the quantizers).
"""
