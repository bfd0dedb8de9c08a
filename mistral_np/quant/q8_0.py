"""Q8_0: ggml's 8-bit block format, byte for byte (docs/references.md#ggml-blocks), in plain NumPy.

One block holds Q=32 consecutive weights of one row in 34 bytes::

    byte   0    1    2       3               33
         +---------+-------+-------+ ... +--------+
         | d: fp16 | qs[0] | qs[1] |     | qs[31] |        qs[j] int8, element j (no packing)
         +---------+-------+-------+ ... +--------+

    w[j] ~= d * qs[j],    qs[j] in -127..127

Quantizing a block (ggml ``quantize_row_q8_0_ref``): ``d = max|w| / 127``,
``qs = roundf(w / d)`` with ties rounded away from zero (C ``roundf``, not NumPy's ties-to-even),
d stored as fp16 (the float32 d is used for qs).

Worked example: a block with max|w| = 2.54 and w[1] = -0.05:
``d = 0.02``; ``qs[1] = roundf(-2.5) = -3`` (NumPy's ``round`` would give -2).

Checked against gguf-py in tests/test_quant_ref.py: the bytes equal ``gguf.quantize``'s bit for bit
on adversarial blocks (ties rounded away from zero included) and the floats equal
``gguf.dequantize``'s on any bytes; tests/test_quant_kernels.py holds the Numba twins to it.

next: q4_1.py (the asymmetric 4-bit format of some GGUF files).
"""

from __future__ import annotations

import numpy as np

from .common import Q, check_packed, matmul_by_tiles, fp16_scales, to_fp16, weight_blocks

BLOCK_BYTES = 34  # 2 (fp16 d) + 32 (int8)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C roundf: nearest integer, ties away from zero. floor(a + 0.5) would be wrong for
    a = 0.49999997 (a + 0.5 rounds up to 1.0 in float32), so the tie test uses the exact fraction."""
    a = np.abs(v)
    whole = np.floor(a)
    return np.sign(v) * (whole + np.floor(2 * (a - whole)))


def quantize_q8_0_ref(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """(out, in) float -> (out, in/32*34) uint8, bit-identical to ggml's quantize_row_q8_0_ref."""
    blocks = weight_blocks(w, name)  # (out, in) -> (n, Q)
    n = blocks.shape[0]
    d = np.max(np.abs(blocks), axis=1) / np.float32(127.0)  # (n,)
    with np.errstate(divide="ignore", over="ignore"):
        inv_d = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        t = blocks * inv_d[:, None]  # (n, Q), |t| <= 127 for finite inv_d
    t = np.where(np.isfinite(t), t, np.float32(0.0))  # 1/d overflowed: x86 casts give 0 (fp16 d is 0 anyway)
    qs = round_half_away(t).astype(np.int8)  # (n, Q)
    d16 = to_fp16(d, "scale", name)
    packed = np.concatenate([d16.view(np.uint8).reshape(n, 2), qs.view(np.uint8)], axis=1)  # (n, 34)
    out_dim, in_dim = np.shape(w)
    assert packed.nbytes == out_dim * in_dim // Q * BLOCK_BYTES
    return packed.reshape(out_dim, in_dim // Q * BLOCK_BYTES)


def dequantize_q8_0_ref(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """(out, in/32*34) uint8 -> (out, in) float32: w = d * qs."""
    out_dim, in_dim = shape
    blocks = check_packed(packed, shape, BLOCK_BYTES, name).reshape(-1, BLOCK_BYTES)  # -> (n, 34)
    d = fp16_scales(blocks, 0)  # (n,)
    qs = np.ascontiguousarray(blocks[:, 2:]).view(np.int8)  # (n, Q)
    return (d[:, None] * qs.astype(np.float32)).reshape(out_dim, in_dim)


def matmul_q8_0_ref(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """y = x @ dequantize(w).T, a tile of rows at a time.  (T, in) -> (T, out) float32"""
    return matmul_by_tiles(x, packed, shape, BLOCK_BYTES, dequantize_q8_0_ref, name)
