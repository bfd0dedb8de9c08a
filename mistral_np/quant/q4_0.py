"""Q4_0: ggml's 4-bit block format, byte for byte (docs/references.md#ggml-blocks), in plain NumPy.

One block holds Q=32 consecutive weights of one row, w[0..31], in 18 bytes::

    byte   0    1    2       3       4            17
         +---------+-------+-------+-------+ ... +--------+
         | d: fp16 | qs[0] | qs[1] | qs[2] |     | qs[15] |
         +---------+-------+-------+-------+ ... +--------+
                      |
           qs[j] = q[j+16] << 4  |  q[j]       (low nibble: element j, high nibble: element j+16)

    w[j] ~= d * (q[j] - 8),    q[j] in 0..15,    d little-endian IEEE half

Quantizing a block (ggml ``quantize_row_q4_0_ref``): take the element of largest |w| *with its
sign*, ``vmax``; ``d = vmax / -8``, so that vmax maps exactly to q = 0 (the -8 end, which has no +8
twin); ``q = min(15, trunc(w / d + 8.5))``; store d as fp16 (the float32 d is used for q).

Worked example, a block whose largest-|w| element is w[0] = -4.0 and w[16] = 1.0::

    d = -4.0 / -8 = 0.5      q[0] = trunc(-8 + 8.5) = 0      q[16] = trunc(2 + 8.5) = 10
    qs[0] = 10 << 4 | 0 = 0xA0                 bytes: 00 38 A0 ...   (0x3800 is 0.5 in fp16)
    dequantized: 0.5 * (0 - 8) = -4.0,  0.5 * (10 - 8) = 1.0

A weight (out, in) becomes ``packed`` (out, in/32 * 18) uint8: each row is its blocks in order,
exactly the bytes of a GGUF Q4_0 tensor, so gguf-py and llama.cpp read what we write.

Checked against gguf-py in tests/test_quant_ref.py: the bytes equal ``gguf.quantize``'s bit for bit
on adversarial blocks (but the sign of an all-zero block's scale, where we follow ggml), the floats
equal ``gguf.dequantize``'s on any bytes, and the worked example above is checked there;
tests/test_quant_kernels.py holds the Numba twins to it.

next: q8_0.py (the same idea with one int8 per weight).
"""

from __future__ import annotations

import numpy as np

from .common import Q, check_packed, matmul_by_tiles, fp16_scales, pack_nibbles, to_fp16, unpack_nibbles, weight_blocks

BLOCK_BYTES = 18  # 2 (fp16 d) + 16 (32 nibbles)


def quantize_q4_0_ref(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """(out, in) float -> (out, in/32*18) uint8, bit-identical to ggml's quantize_row_q4_0_ref."""
    blocks = weight_blocks(w, name)  # (out, in) -> (n, Q)
    n = blocks.shape[0]
    i_max = np.argmax(np.abs(blocks), axis=1)  # first index of the largest |w|, as ggml's strict '<' scan
    vmax = blocks[np.arange(n), i_max]  # (n,) keeps the sign
    vmax = np.where(np.abs(vmax) > 0, vmax, np.float32(0.0))  # ggml starts from max = +0.0 (so -0.0 blocks give d = -0.0)
    d = vmax / np.float32(-8.0)  # (n,)
    with np.errstate(divide="ignore", over="ignore"):
        inv_d = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        t = blocks * inv_d[:, None] + np.float32(8.5)  # (n, Q), in [0.5, 16.5] for finite inv_d
    # A scale so tiny that 1/d overflows (|vmax| < ~2.4e-38) makes t inf/NaN; ggml's (int8_t) cast of those
    # gives 0 on x86 and so does gguf-py. Such a block's fp16 d is 0 anyway, so it dequantizes to zeros.
    t = np.where(np.isfinite(t), t, np.float32(0.0))
    q = np.minimum(np.trunc(t), 15).astype(np.uint8)  # (n, Q) values 0..15
    d16 = to_fp16(d, "scale", name)
    packed = np.concatenate([d16.view(np.uint8).reshape(n, 2), pack_nibbles(q)], axis=1)  # (n, 18)
    out_dim, in_dim = np.shape(w)
    assert packed.nbytes == out_dim * in_dim // Q * BLOCK_BYTES
    return packed.reshape(out_dim, in_dim // Q * BLOCK_BYTES)


def dequantize_q4_0_ref(packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """(out, in/32*18) uint8 -> (out, in) float32: w = d * (q - 8), exactly as gguf-py / ggml."""
    out_dim, in_dim = shape
    blocks = check_packed(packed, shape, BLOCK_BYTES, name).reshape(-1, BLOCK_BYTES)  # -> (n, 18)
    d = fp16_scales(blocks, 0)  # (n,)
    q = unpack_nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)  # (n, 16) -> (n, Q) in -8..7
    return (d[:, None] * q.astype(np.float32)).reshape(out_dim, in_dim)


def matmul_q4_0_ref(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], name: str | None = None) -> np.ndarray:
    """y = x @ dequantize(w).T, a tile of rows at a time.  (T, in) -> (T, out) float32"""
    return matmul_by_tiles(x, packed, shape, BLOCK_BYTES, dequantize_q4_0_ref, name)
