"""Numba twins of the reference quantizers (q4_0.py, q8_0.py): same names without ``_ref``, same bytes.

Quantizing a 7B checkpoint is 7.2 billion weights; the NumPy references take ~1.3 s per 58M-weight
matrix (about 3 minutes in all), these take a fraction of that on 2 cores. The arithmetic is
ggml's reference quantizer, step by step in float32 (no fused multiply-add, which would change the
rounding), so the bytes are identical to the reference and to gguf-py (tests/test_quant_kernels.py):

    Q4_0: vmax = the element of largest |w| (first on ties, sign kept; +0.0 if all zero)
          d = vmax / -8;  id = 1/d (0 if d == 0);  q = min(15, trunc(w * id + 8.5))
    Q8_0: d = max |w| / 127;  id = 1/d (0 if d == 0);  q = round-half-away-from-zero(w * id)

The float32 scales are rounded to fp16 afterwards by NumPy (round to nearest even, as ggml), which
also refuses a scale that overflows fp16, and checks for NaN/Inf happen before (common.weight_blocks).

next: that is the whole quant package; the model reaches it only through model/ops.py:linear.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common import Q, to_fp16, weight_blocks
from ..q4_0 import BLOCK_BYTES as Q4_0_BYTES
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES


@njit(parallel=True, cache=True, nogil=True)
def _q4_0_blocks(blocks, nibbles, d_out):
    """blocks (n, 32) float32 -> nibbles (n, 16) uint8 and float32 scales d (n,)."""
    for b in prange(blocks.shape[0]):
        vmax, amax = np.float32(0.0), np.float32(0.0)
        for j in range(Q):
            a = abs(blocks[b, j])
            if amax < a:
                amax, vmax = a, blocks[b, j]
        d = vmax / np.float32(-8.0)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        d_out[b] = d
        for j in range(16):
            t0 = blocks[b, j] * inv + np.float32(8.5)
            t1 = blocks[b, j + 16] * inv + np.float32(8.5)
            q0 = min(15, int(t0)) if np.isfinite(t0) else 0
            q1 = min(15, int(t1)) if np.isfinite(t1) else 0
            nibbles[b, j] = np.uint8(q0 | (q1 << 4))


@njit(parallel=True, cache=True, nogil=True)
def _q8_0_blocks(blocks, qs, d_out):
    """blocks (n, 32) float32 -> qs (n, 32) int8 and float32 scales d (n,)."""
    for b in prange(blocks.shape[0]):
        amax = np.float32(0.0)
        for j in range(Q):
            amax = max(amax, abs(blocks[b, j]))
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        d_out[b] = d
        for j in range(Q):
            t = blocks[b, j] * inv
            if not np.isfinite(t):
                t = np.float32(0.0)
            a = abs(t)
            r = np.floor(a) + np.floor(np.float32(2.0) * (a - np.floor(a)))   # half away from zero
            qs[b, j] = np.int8(r if t >= 0 else -r)


def _assemble(d: np.ndarray, payload: np.ndarray, w_shape, block_bytes: int, name) -> np.ndarray:
    n = d.shape[0]
    packed = np.empty((n, block_bytes), dtype=np.uint8)
    packed[:, :2] = to_fp16(d, "scale", name).view(np.uint8).reshape(n, 2)
    packed[:, 2:] = payload.view(np.uint8)
    out_dim, in_dim = w_shape
    assert packed.nbytes == out_dim * in_dim // Q * block_bytes
    return packed.reshape(out_dim, in_dim // Q * block_bytes)


def quantize_q4_0(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """(out, in) float -> (out, in/32*18) uint8: the Numba twin of ``quantize_q4_0_ref``."""
    blocks = weight_blocks(w, name)                                   # (out, in) -> (n, Q)
    nibbles = np.empty((blocks.shape[0], 16), dtype=np.uint8)
    d = np.empty(blocks.shape[0], dtype=np.float32)
    _q4_0_blocks(blocks, nibbles, d)
    return _assemble(d, nibbles, np.shape(w), Q4_0_BYTES, name)


def quantize_q8_0(w: np.ndarray, name: str | None = None) -> np.ndarray:
    """(out, in) float -> (out, in/32*34) uint8: the Numba twin of ``quantize_q8_0_ref``."""
    blocks = weight_blocks(w, name)
    qs = np.empty((blocks.shape[0], Q), dtype=np.int8)
    d = np.empty(blocks.shape[0], dtype=np.float32)
    _q8_0_blocks(blocks, qs, d)
    return _assemble(d, qs, np.shape(w), Q8_0_BYTES, name)
