"""Q4_1: ggml's asymmetric 4-bit block format (docs/references.md#ggml-blocks), in plain NumPy.

GGUF files such as SmolLM2's use it; we read it losslessly (re-quantizing to Q4_0 would be a
different model). One block holds Q=32 weights in 20 bytes::

    byte   0    1    2    3    4       5            19
         +---------+---------+-------+-------+ ... +--------+
         | d: fp16 | m: fp16 | qs[0] | qs[1] |     | qs[15] |
         +---------+---------+-------+-------+ ... +--------+
    qs[j] = q[j+16] << 4 | q[j]      (same nibble order as Q4_0)

    w[j] ~= q[j] * d + m,    q[j] in 0..15  (no -8 offset: m is the block minimum)

Quantizing (ggml ``quantize_row_q4_1_ref``): ``m = min(w)``, ``d = (max(w) - min(w)) / 15``,
``q = min(15, trunc((w - m) / d + 0.5))``, d and m stored as fp16.
Example: a block spanning [-1.0, 2.0] has d = 0.2, m = -1.0; w = 0.5 gives q = trunc(7.5 + 0.5) = 8,
dequantized 8 * 0.2 - 1.0 = 0.6.

Checked against gguf-py in tests/test_quant_ref.py: the bytes equal ``gguf.quantize``'s bit for bit
on adversarial blocks and the floats equal ``gguf.dequantize``'s on any bytes;
tests/test_quant_kernels.py holds the Numba twins to it.

next: tensor.py (the objects the model holds).
"""

from __future__ import annotations

import numpy as np

from .common import Q, check_packed, matmul_by_tiles, fp16_scales, pack_nibbles, to_fp16, unpack_nibbles, weight_blocks

BLOCK_BYTES = 20  # 2 (fp16 d) + 2 (fp16 m) + 16 (32 nibbles)


def quantize_q4_1_ref(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """(out, in) float -> (out, in/32*20) uint8, as ggml's quantize_row_q4_1_ref (and gguf-py)."""
    blocks = weight_blocks(w, name)  # (out, in) -> (n, Q)
    n = blocks.shape[0]
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)  # (n,)
    d = (hi - lo) / np.float32(15.0)
    with np.errstate(divide="ignore", over="ignore"):
        inv_d = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        t = (blocks - lo[:, None]) * inv_d[:, None] + np.float32(0.5)  # (n, Q)
    t = np.where(np.isfinite(t), t, np.float32(0.0))
    q = np.minimum(np.trunc(t), 15).astype(np.uint8)
    d16, m16 = to_fp16(d, "scale", name), to_fp16(lo, "minimum", name)
    packed = np.concatenate([d16.view(np.uint8).reshape(n, 2), m16.view(np.uint8).reshape(n, 2), pack_nibbles(q)], axis=1)
    out_dim, in_dim = np.shape(w)
    assert packed.nbytes == out_dim * in_dim // Q * BLOCK_BYTES
    return packed.reshape(out_dim, in_dim // Q * BLOCK_BYTES)


def dequantize_q4_1_ref(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """(out, in/32*20) uint8 -> (out, in) float32: w = q * d + m (two roundings, as gguf-py)."""
    out_dim, in_dim = shape
    blocks = check_packed(packed, shape, BLOCK_BYTES, name).reshape(-1, BLOCK_BYTES)  # -> (n, 20)
    d, m = fp16_scales(blocks, 0), fp16_scales(blocks, 2)  # (n,), (n,)
    q = unpack_nibbles(blocks[:, 4:]).astype(np.float32)  # (n, 16) -> (n, Q) in 0..15
    return (d[:, None] * q + m[:, None]).reshape(out_dim, in_dim)


def matmul_q4_1_ref(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """y = x @ dequantize(w).T, a tile of rows at a time.  (T, in) -> (T, out) float32"""
    return matmul_by_tiles(x, packed, shape, BLOCK_BYTES, dequantize_q4_1_ref, name)
