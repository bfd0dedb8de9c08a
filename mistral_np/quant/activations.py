"""int8 activations: llama.cpp's arithmetic for quantized matmuls, in plain NumPy (the fast kernels' twin).

The exact path (q4_0.py, q4_1.py, q8_0.py: ``matmul_*_ref``) multiplies float activations by the
dequantized weights. The fast path quantizes the activations too, one Q8_0 block of 32 per row of x,
so that every block product becomes an exact integer dot product:

    x[t, block b] ~= dx[t,b] * xq[t,b,:]          xq int8 in -127..127, dx = max|x| / 127 (Q8_0, roundf)
    w[r, block b]  = d[r,b] * (q[r,b,:] - offset) [+ m[r,b]]      offset 8 (Q4_0), 0 (Q4_1, Q8_0)

    y[t, r] = sum_b d[r,b] dx[t,b] * (q[r,b] . xq[t,b] - offset * sum xq[t,b])  +  m[r,b] dx[t,b] * sum xq[t,b]
                    \\______________ integers, exact ______________/

**Centred blocks (Q8_0 weights, prompts).** An 8-bit weight adds so little error of its own that the
activations' rounding is most of what a Q8_0 model loses, and a block whose values are not spread evenly around
zero wastes half of the 255 levels (one large positive value sets dx for 31 small ones). So the prompt GEMM
(T > 1) of a Q8_0 weight first subtracts each block's centre c, the midpoint of its smallest and largest value,
and quantizes what is left; the centre comes back exactly, through the weight block's sum:

    x[t, block b] ~= c[t,b] + dx[t,b] * xq[t,b,:]          dx = max|x - c| / 127: up to twice as fine
    y[t, r] = sum_b d[r,b] dx[t,b] * (q[r,b] . xq[t,b])  +  (d[r,b] * sum_j q[r,b,j]) * c[t,b]

the second term in Q4_1's minimum's place (``CENTRED``, ``centred``). Measured on real weights (SmolLM2 as an
e5-recipe embedder, tools/embed_quality.py): mean cosine to the float vectors 0.99883 -> 0.99922, where float
activations give 0.99951. Decode (one row) and 4-bit weights keep plain blocks: there the weights' own error
or the memory stream dominates.

The only new error is x's rounding to 8 bits (|x - dx xq| <= dx / 2 per element); the sums over blocks
are done here in float64, in the kernels (fast/decode.py for one row, fast/gemm.py for prompts) in
float32, and tests/test_quant_kernels.py bounds the difference by the float32 rounding of that sum.
docs/quantization.md ("int8 activations") measures the error against the exact path.

next: tensor.py.
"""

from __future__ import annotations

import numpy as np

from .common import Q, check_activations, check_packed, fp16_scales, unpack_nibbles
from .q4_0 import BLOCK_BYTES as Q4_0_BYTES
from .q4_1 import BLOCK_BYTES as Q4_1_BYTES
from .q8_0 import BLOCK_BYTES as Q8_0_BYTES, round_half_away

FORMATS = {"Q4_0": (Q4_0_BYTES, 8), "Q4_1": (Q4_1_BYTES, 0), "Q8_0": (Q8_0_BYTES, 0)}  # block bytes, offset


def quantize_rows_q8_0_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of x as Q8_0 blocks, as ggml's quantize_row_q8_0_ref (float32 d, roundf).

    (T, in) float32 -> xq (T, in/32, 32) int8, dx (T, in/32) float32"""
    t = x.shape[0]
    blocks = np.asarray(x, dtype=np.float32).reshape(t, -1, Q)
    dx = np.abs(blocks).max(axis=2) / np.float32(127.0)  # (T, nb)
    with np.errstate(divide="ignore"):
        inv = np.where(dx != 0, np.float32(1.0) / dx, np.float32(0.0)).astype(np.float32)
    xq = round_half_away(blocks * inv[:, :, None]).astype(np.int8)
    return xq, dx.astype(np.float32)


CENTRED = ("Q8_0",)  # the weight types whose prompt GEMM (T > 1) quantizes centred blocks


def centred(qtype: str, t: int) -> bool:
    """Whether a (T, in) int8-activation product with a ``qtype`` weight uses centred blocks: Q8_0 prompts."""
    return qtype in CENTRED and t > 1


def quantize_rows_centred_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row of x as centred blocks, in float32 as the kernels do (fast/gemm.py:_quantize_row): c = lo / 2 +
    hi / 2, dx = max|x - c| / 127, xq = round_half_away((x - c) / dx).

    (T, in) float32 -> xq (T, in/32, 32) int8, dx (T, in/32) float32, c (T, in/32) float32"""
    t = x.shape[0]
    blocks = np.asarray(x, dtype=np.float32).reshape(t, -1, Q)
    half = np.float32(0.5)
    c = (half * blocks.min(axis=2) + half * blocks.max(axis=2)).astype(np.float32)  # (T, nb)
    diff = blocks - c[:, :, None]
    dx = np.abs(diff).max(axis=2) / np.float32(127.0)
    with np.errstate(divide="ignore"):
        inv = np.where(dx != 0, np.float32(1.0) / dx, np.float32(0.0)).astype(np.float32)
    xq = round_half_away(diff * inv[:, :, None]).astype(np.int8)
    return xq, dx.astype(np.float32), c


def _quantized(x: np.ndarray, qtype: str):
    """x's blocks as the kernels quantize them for this weight type: xq, dx, c (zeros unless centred)."""
    if centred(qtype, x.shape[0]):
        return quantize_rows_centred_ref(x)
    xq, dx = quantize_rows_q8_0_ref(x)
    return xq, dx, np.zeros_like(dx)


def integer_blocks(packed: np.ndarray, shape: tuple[int, int], qtype: str, name: str | None = None):
    """A weight's blocks as integers and scales: q (out, nb, 32) int16 with the offset not yet removed,
    d and m (out, nb) float32 (m zeros unless Q4_1), offset."""
    block_bytes, offset = FORMATS[qtype]
    out_dim, in_dim = shape
    blocks = check_packed(packed, shape, block_bytes, name).reshape(-1, block_bytes)  # (n, bytes)
    d = fp16_scales(blocks, 0)
    m = fp16_scales(blocks, 2) if qtype == "Q4_1" else np.zeros_like(d)
    if qtype == "Q8_0":
        q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.int16)
    else:
        q = unpack_nibbles(blocks[:, block_bytes - 16:]).astype(np.int16)
    nb = in_dim // Q
    return q.reshape(out_dim, nb, Q), d.reshape(out_dim, nb), m.reshape(out_dim, nb), offset


def block_terms(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], qtype: str,
                name: str | None = None) -> np.ndarray:
    """Every block's two contributions: d dx (q . xq - offset sum xq), and m dx sum xq (Q4_1) or
    (d sum q) c (centred blocks), else zero; the dots in int64, the products in float64.
    (T, in) float32 -> two (T, out, nb) float64"""
    x = check_activations(x, shape[1])
    xq, dx, c = _quantized(x, qtype)  # (T, nb, Q), (T, nb), (T, nb)
    q, d, m, offset = integer_blocks(packed, shape, qtype, name)
    sx = xq.sum(axis=2, dtype=np.int64)  # (T, nb)
    dots = np.einsum("tbj,rbj->trb", xq.astype(np.int64), q.astype(np.int64)) - offset * sx[:, None, :]
    dx64 = dx.astype(np.float64)[:, None, :]  # (T, 1, nb)
    if centred(qtype, x.shape[0]):
        second = (d.astype(np.float64) * q.sum(axis=2, dtype=np.int64))[None] * c.astype(np.float64)[:, None, :]
    else:
        second = m.astype(np.float64)[None] * dx64 * sx[:, None, :]
    return d.astype(np.float64)[None] * dx64 * dots, second


def matmul_int8_ref(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], qtype: str,
                    name: str | None = None) -> np.ndarray:
    """y = x @ w.T with x quantized to blocks of 8-bit integers (centred for Q8_0 prompts: ``centred``): what
    the int8 kernels compute before their float32 rounding.  (T, in) float32 -> (T, out) float64"""
    dot_part, second = block_terms(x, packed, shape, qtype, name)
    return (dot_part + second).sum(axis=2)


def int8_sum_bound(x: np.ndarray, packed: np.ndarray, shape: tuple[int, int], qtype: str) -> np.ndarray:
    """How far a float32 kernel may be from ``matmul_int8_ref``: (4 nb + 4) u M, u = 2**-24, with
    M = sum_b |d dx| (|q| . |xq| + offset sum |xq|) + |second term| (Q4_1's m dx sum xq, or a centred
    block's (d sum q) c).

    The integer block sums are exact; what rounds is float32 arithmetic on them. Per block a kernel does at
    most 4 rounded operations (the scale product d * dx, an fma into a lane, and for tail blocks the
    offset's product and subtraction apart; Q4_1's m term is an fma more, a centred block's the product
    d * sum q and an fma, the scale product being exact there: no offset), then the lanes meet in a
    3-level tree and one final addition. Every partial sum along the way is bounded by M, whatever the
    order (M bounds every sub-sum of the block products), so by the recursive-summation argument (Higham
    2002, section 4.2) the error is at most (4 nb + 4) u M.  -> (T, out)"""
    x = check_activations(x, shape[1])
    xq, dx, c = _quantized(x, qtype)
    q, d, m, offset = integer_blocks(packed, shape, qtype)
    axq = np.abs(xq.astype(np.int64))
    mags = np.einsum("tbj,rbj->trb", axq, np.abs(q.astype(np.int64))) + offset * axq.sum(axis=2)[:, None, :]
    sx = xq.sum(axis=2, dtype=np.int64)
    dx64 = np.abs(dx.astype(np.float64))[:, None, :]
    if centred(qtype, x.shape[0]):
        sq = np.abs(d.astype(np.float64) * q.sum(axis=2, dtype=np.int64))
        second = sq[None] * np.abs(c.astype(np.float64))[:, None, :]
    else:
        second = np.abs(m.astype(np.float64))[None] * dx64 * np.abs(sx)[:, None, :]
    total = np.abs(d.astype(np.float64))[None] * dx64 * mags + second
    nb = shape[1] // Q
    return (4 * nb + 4) * 2.0 ** -24 * total.sum(axis=2)
