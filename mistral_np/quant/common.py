"""What every ggml block format shares: weights cut into blocks of Q=32 along the input axis.

A weight ``w`` of shape (out, in) is stored row by row; each row is ``in // 32`` blocks, and each
block is a fixed number of bytes (18 for Q4_0, 20 for Q4_1, 34 for Q8_0). Blocks run along the
reduction axis, so one output element is a sum over whole blocks of one row.

    w (out, in) float32  --quantize-->  packed (out, in // 32 * block_bytes) uint8

The checks here are the loud part of the API: a weight that cannot be quantized exactly as ggml
would (wrong shape, NaN/Inf, a scale too large for fp16) is refused with the tensor's name.

tests/test_quant_ref.py checks its refusals (NaN/Inf weights, an input size that is not whole
blocks, a scale that overflows fp16, each naming the tensor) and, through the three formats, the
block cutting and nibble packing against gguf-py; tests/test_hardening.py checks that a non-finite
scale in a file is refused.

next: q4_0.py.
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError, InvalidArgumentError, QuantizationError

Q = 32  # weights per block, for every format here


def _label(name: str | None) -> str:
    return f"tensor {name!r}" if name else "weight"


def weight_blocks(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """Check a float weight and view it as blocks.  (out, in) -> (out * in/Q, Q) float32"""
    w = np.asarray(w)
    if w.ndim != 2:
        raise QuantizationError(f"{_label(name)}: expected a 2-D (out, in) weight, got shape {w.shape}")
    if w.dtype.kind != "f":
        raise QuantizationError(f"{_label(name)}: expected a float weight, got dtype {w.dtype}")
    if w.shape[1] % Q != 0:
        raise QuantizationError(f"{_label(name)}: input dim {w.shape[1]} is not a multiple of the block size {Q}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        bad = np.argwhere(~np.isfinite(w))[0]
        raise QuantizationError(f"{_label(name)}: contains NaN/Inf (first at index {tuple(int(i) for i in bad)})")
    return w.reshape(-1, Q)  # (out, in) -> (out*in/Q, Q)


def to_fp16(v: np.ndarray, what: str, name: str | None = None) -> np.ndarray:
    """float32 -> fp16 (round to nearest even, as ggml's GGML_FP32_TO_FP16), refusing overflow to inf."""
    with np.errstate(over="ignore"):
        h = v.astype(np.float16)
    if np.isinf(h).any():
        worst = float(np.max(np.abs(v)))
        raise QuantizationError(f"{_label(name)}: block {what} {worst:.6g} overflows fp16 (max 65504)")
    return h


def check_packed(packed: np.ndarray, shape: tuple[int, int], block_bytes: int, name: str | None = None) -> np.ndarray:
    """Check packed bytes against a logical (out, in) shape.  -> (out, in/Q * block_bytes) uint8"""
    out_dim, in_dim = shape
    if in_dim % Q != 0:
        raise CheckpointError(f"{_label(name)}: input dim {in_dim} is not a multiple of the block size {Q}")
    if packed.dtype != np.uint8:
        raise CheckpointError(f"{_label(name)}: packed blocks must be uint8, got {packed.dtype}")
    row_bytes = in_dim // Q * block_bytes
    if packed.nbytes != out_dim * row_bytes:
        raise CheckpointError(f"{_label(name)}: {packed.nbytes} bytes, expected {out_dim} * {in_dim}/{Q} * {block_bytes}")
    return packed.reshape(out_dim, row_bytes)


def check_activations(x: np.ndarray, in_dim: int) -> np.ndarray:
    """x must be (T, in) float32 with T >= 1."""
    if x.ndim != 2 or x.shape[1] != in_dim or x.shape[0] < 1:
        raise InvalidArgumentError(f"activations of shape {x.shape} do not match (T, {in_dim})")
    if x.dtype != np.float32:
        raise InvalidArgumentError(f"activations must be float32, got {x.dtype}")
    return np.ascontiguousarray(x)


def non_finite_scale(rows: np.ndarray, block_bytes: int, offsets=(0,)) -> tuple[int, int] | None:
    """(row, block) of the first block whose fp16 field at one of ``offsets`` is NaN or Inf, else None.

    rows: (out, nb * block_bytes) uint8 ggml bytes. An fp16 is non-finite when its 5 exponent bits are all ones."""
    n_rows, nbytes = rows.shape
    blocks = rows.reshape(n_rows, nbytes // block_bytes, block_bytes)
    for off in offsets:
        high = blocks[:, :, off + 1]                       # little-endian: the exponent sits in the high byte
        bad = (high & 0x7C) == 0x7C
        if bad.any():
            r, b = np.argwhere(bad)[0]
            return int(r), int(b)
    return None


def fp16_scales(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The fp16 field at byte ``offset`` of every block, as float32.  (n, bytes) -> (n,)"""
    return np.ascontiguousarray(blocks[:, offset:offset + 2]).view(np.float16)[:, 0].astype(np.float32)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes per block -> 32 values 0..15: low nibbles are elements 0..15, high nibbles 16..31.

    (n, 16) uint8 -> (n, 32) uint8.  Byte 0x2A in position j gives element j = 0xA = 10 and
    element j+16 = 0x2 = 2.
    """
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Inverse of ``unpack_nibbles``.  (n, 32) values 0..15 -> (n, 16) uint8"""
    q = q.astype(np.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


ROW_TILE = 1024  # rows dequantized at a time by the reference matmuls (bounds their scratch memory)


def matmul_by_tiles(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], block_bytes: int, dequantize,
                    name: str | None = None) -> np.ndarray:
    """y = x @ dequantize(w).T, ROW_TILE rows at a time: the reference matmul every format shares.

    (T, in) -> (T, out) float32; ``dequantize(tile_bytes, (rows, in))`` is the format's reference dequantizer."""
    out_dim, in_dim = shape
    x = check_activations(x, in_dim)
    rows = check_packed(packed, shape, block_bytes, name)
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    for r in range(0, out_dim, ROW_TILE):
        tile = rows[r:r + ROW_TILE]
        y[:, r:r + len(tile)] = x @ dequantize(tile, (len(tile), in_dim)).T   # (T, in) @ (in, tile)
    return y
