"""Prompts (T > 1) with int8 activations: a block-quantized GEMM on integer dot products.

A prompt of T tokens multiplies every weight by a (T, in) matrix. ``activations="int8"`` quantizes each
row of x to Q8_0 blocks (xq int8, one float32 scale dx per block, as decode.py does for one row) and
computes, for weight row r and token t,

    y[t, r] = sum_b d[r,b] dx[t,b] (sum_j q[r,b,j] xq[t,b,j] - offset sum_j xq[t,b,j])  [+ m[r,b] dx[t,b] sum_j xq[t,b,j]]
                                    \\___________ int32, exact: the accumulator starts at -offset sum xq ___/

the numbers of the NumPy twin ``matmul_int8_ref`` (quant/activations.py) up to the float32 rounding of
the sum over blocks (tests/test_quant_kernels.py, with the bound derived there).

The work is cut like a small BLAS. The micro-kernel takes 1 weight row and 4 tokens over a chunk of
the row. Per group of 8 blocks (layout.py) it unpacks the row's bytes once into nibble vectors, dots
them against each token's activation vectors, converts the 8 block sums to float32 and adds them with
one fma per token, scaled by d * dx. Two widths of the same kernel:

* 256 bits (every x86-64 CPU with AVX2; simd.py): ``dot8_nibbles``: 8 ``vpdpbusd``, or on AVX2 8
  ``vpmaddubsw`` summed in int16 lanes then one ``vpmaddwd``;
* 512 bits (AVX-512 VNNI; simd512.py): a 64-byte load holds two 32-byte pieces of a group, so 4
  ``vpdpbusd`` on zmm registers do the group; int32 lanes i and i + 8 are two halves of block i's sum,
  which is why the scales are loaded twice and -offset sum xq once (the "16-lane" activation arrays).
  The activations are laid out to match: pieces reordered by WIDE_ORDER. Only when asked
  (kernels.py:wide_gemm): on AMD Zen 5 it ran at half the 256-bit kernel's speed.

Where the CPU has AVX-512 VNNI the 256-bit micro-kernel takes **2 weight rows** x 4 tokens
(``_nibble_rows_2x4``, ``_q8_0_rows_2x4``; kernels.gemm_pairs): a token's activation vectors are loaded
once for both rows and each 8-pair dot product runs on 512-bit ``vpdpbusd`` in 2 short chains
(``dot8_nibbles_split``); the same bits as one row at a time, 1.4-1.5x faster on Zen 5's 7B shapes. On AVX2
(16 registers cannot hold two rows' 16 nibble vectors) it ran 6-11 % slower, so there rows go one at a time.

Rows are split into work items, the same number per thread (static: Numba's dynamic schedule ran
these loops 6-13x slower); inside an item the row is cut into chunks of GROUPS_PER_CHUNK groups, then
tokens go 4 at a time past every row of the item, so 4 tokens' chunk (16 KiB) stays in L1 while the
item's weights stay in L2. Variants measured (docs/quantization.md, "int8 activations"): 1 row x 8
tokens (no faster), accumulators starting at -offset sum xq instead of a
subtraction per group (10 % faster, kept), one call per chunk and 4 tokens over all the item's rows, on
flat arrays and offsets, instead of a call per row on row views (+35 % on 4096-wide rows, 1 thread; +55 %
with 2 threads, whose atomic reference counts on the shared weight's views bounced between the cores), and
the 4 tokens' groups copied side by side for the 256-bit nibble kernels (_side_by_side: one pointer instead
of 12, +20-28 % on AMD Zen 2's 7B shapes).

    x (T, in) float32 --prepare_rows_int8--> Activations: xr (T4, G*256) int8 in the kernel's order, and
        per block: nsxo = -offset * sum xq (int32), dx, dxs = dx * sum xq (float32), (T4, G*8) each,
        per 16 lanes (wide kernel): nsxo16, dx16, dxs16 (T4, G*16)
        T4 = T rounded up to 4 (gemm_lanes.py: 8), G = nb / 8 rounded up: padding is zeros, results dropped

The nb mod 8 blocks after the last whole group (SmolLM2's rows of 576 have 2) form one more, padded
group: each work item copies its rows' tail blocks into a zero-padded group (d = m = 0) that the same
micro-kernel reads. (A separate pass over them, one call per row and token, made SmolLM2's prompt
3-10x slower than 4096-wide rows per operation.)

Q8_0 weights (ggml's 34-byte blocks, kept as they are for decode) are repacked TILE_ROWS rows at a time
into the same order as the activations (tail group padded), as unsigned bytes q + 128 (the accumulator
then starts at -128 sum xq): VNNI takes any unsigned byte; AVX2 splits them into nibbles (dot8_bytes).
Their activations are *centred* (quant/activations.py): each block less its centre c is quantized, and
(d sum q) c is added per block where Q4_1's m dx sum xq goes (``centred``: dxs holds c, the tile d sum q).

Where the CPU has AVX-512 VNNI, prompts go instead to gemm_lanes.py (16 weight rows as the lanes of a vector,
the activations broadcast; 1.3-5x faster on Zen 5); elsewhere, rows narrower than 2048 go to gemm_lanes256.py
(8 rows as lanes; 2.7x faster on SmolLM2's 576-wide rows on AMD Zen 3, slower on 4096-wide ones). These kernels
serve AVX2 CPUs' wide rows and are tested everywhere.

next: gemm_lanes.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..common import Q
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .decode import _nibbles, round_block, scale_of
from .layout import TILE_GROUPS, V, tile_base
from .simd import (cvt_i32x8, dot8_bytes, dot8_bytes_split, dot8_nibbles, dot8_nibbles_split, fma_f32x8, hmax_f32x8, hmin_f32x8,
                   hsum_f32x8, load_f16x8, load_f32x8, load_i8x32, load_i32x8, max_f32x8, min_f32x8, mul_f32x8, zero_f32x8)
from .simd512 import (cvt_i32x16, dpbusd512, fma_f32x16, hsum_f32x16, load_f16x8_twice, load_f32x16, load_i8x64,
                      load_i32x16, mul_f32x16, nib_hi64, nib_lo64, zero_f32x16)

TOKENS = 4  # tokens per micro-kernel
GROUPS_PER_CHUNK = 16  # vector groups per chunk of a row: 16 * 256 = 4096 values, 4 tokens = 16 KiB of int8
assert TILE_GROUPS % GROUPS_PER_CHUNK == 0  # a chunk never straddles two of the layout's column tiles
TILE_ROWS = 16  # Q8_0 rows repacked at a time: 16 * 4096 bytes = 64 KiB
WIDE_ORDER = (0, 2, 1, 3, 4, 6, 5, 7)  # piece j of a wide group holds decode.interleave_x's piece WIDE_ORDER[j]


class Activations(NamedTuple):
    """Rows of x quantized for the GEMM (see the module docstring)."""

    xr: np.ndarray
    nsxo: np.ndarray
    dx: np.ndarray
    dxs: np.ndarray
    nsxo16: np.ndarray
    dx16: np.ndarray
    dxs16: np.ndarray


# ---------------------------------------------------------------- activations


def _positions(order) -> np.ndarray:
    """Where byte j of a block goes inside its group's 256 bytes, less 4 * (block mod 8): byte j = 16 h + 4 g + k
    goes to piece 2 g + h (through ``order``), byte k of the block's 4-byte lane."""
    return np.array([order[2 * ((j % 16) // 4) + j // 16] * 32 + j % 4 for j in range(Q)], dtype=np.int64)


POSITIONS = _positions(range(8))  # the 256-bit kernels' order (decode.interleave_x's)
POSITIONS_WIDE = _positions(WIDE_ORDER)


def _chunk_offsets(pos: np.ndarray) -> np.ndarray:
    """Where a block's 4-byte chunk k goes, in int32 units less c * 64 + b: pos[4 k] / 4 (pos keeps a chunk's 4
    bytes together and in order: pos[4 k + i] = pos[4 k] + i)."""
    assert all(pos[4 * k + i] == pos[4 * k] + i for k in range(Q // 4) for i in range(4))
    return np.array([pos[4 * k] // 4 for k in range(Q // 4)], dtype=np.int64)


CHUNKS, CHUNKS_WIDE = _chunk_offsets(POSITIONS), _chunk_offsets(POSITIONS_WIDE)


@njit(cache=True, inline="always")
def _block_lo_hi(x, o):
    """min and max of x[o:o + 32] (a contiguous float32 row): four 8-lane vectors, lane-wise then across lanes (a
    chain of 32 dependent scalar maxima was a third of the row's time; for finite values the order does not
    matter)."""
    v0, v1, v2, v3 = load_f32x8(x, o), load_f32x8(x, o + 8), load_f32x8(x, o + 16), load_f32x8(x, o + 24)
    lo = hmin_f32x8(min_f32x8(min_f32x8(v0, v1), min_f32x8(v2, v3)))
    return lo, hmax_f32x8(max_f32x8(max_f32x8(v0, v1), max_f32x8(v2, v3)))


@njit(cache=True, inline="always")
def _block_amax(x, o):
    """max |x[o:o + 32]| = max(hi, -lo) (negation is exact)."""
    lo, hi = _block_lo_hi(x, o)
    return max(hi, -lo)


@njit(cache=True, inline="always")
def _block_centre(x, o):
    """A centred block's c = lo / 2 + hi / 2 and max |x[o:o + 32] - c| (quant/activations.py): x - c rounds
    monotonically in x, so the largest |x - c| is hi - c or c - lo."""
    lo, hi = _block_lo_hi(x, o)
    half = np.float32(0.5)
    c = half * lo + half * hi
    return c, max(hi - c, c - lo)


@njit(cache=True)
def _quantize_row(x, offset, wide, centred, xr, nsxo, dx, dxs, nsxo16, dx16, dxs16, chunk_at):
    """One row of x -> Q8_0 blocks (decode.quantize_x_q8_0's numbers for finite x), written in place in the
    kernel's order: byte j of block 8c + b goes to c * 256 + 4 b + pos[j] (POSITIONS, or POSITIONS_WIDE for the
    wide kernel), where the 4 bytes of a chunk (j = 4 k .. 4 k + 3) stay together: the block's 4-byte chunk k is
    stored as one int32 at c * 64 + b + chunk_at[k] (``_chunk_offsets``). The last group may be partly padding
    (zeros). The block's 32 values are rounded in one loop (vectorized: decode.round_away's arithmetic on 8
    lanes, in float32), then placed. Storing chunks, not bytes, and rounding in float32 (an integer 2 made it
    float64): 512 x 576 in 0.60 -> 0.48 ms, 256 x 4096 in 2.0 -> 1.5 ms (AMD Zen 3, 2 threads), the same bytes.
    ``centred`` (Q8_0 prompts): x - c is quantized, c = the block's centre, and dxs holds c
    (quant/activations.py:quantize_rows_centred_ref's numbers) instead of dx * sum xq."""
    nb = x.shape[0] // Q
    q = np.empty(Q, np.int8)
    q32, xr32 = q.view(np.int32), xr.view(np.int32)
    for blk in range(nb):
        o = blk * Q
        if centred:
            centre, amax = _block_centre(x, o)
        else:
            centre, amax = np.float32(0.0), _block_amax(x, o)
        d, inv = scale_of(amax)
        total = round_block(x, o, centre, inv, q)         # round half away from zero, as round_away
        c, b = blk // V, blk % V
        for k in range(Q // 4):
            xr32[c * 64 + b + chunk_at[k]] = q32[k]
        nsxo[blk] = -total * offset
        dx[blk] = d
        dxs[blk] = centre if centred else d * np.float32(total)
        if wide:
            nsxo16[c * 16 + b] = nsxo[blk]
            dxs16[c * 16 + b] = dxs[blk]
            dx16[c * 16 + b] = d
            dx16[c * 16 + V + b] = d


@njit(parallel=True, cache=True, nogil=True)
def _prepare(x, offset, wide, centred, chunk_at, tokens):
    t_real, n = x.shape
    ng = (n // Q + V - 1) // V
    nw = ng * 16 if wide else 0
    t4 = (t_real + tokens - 1) // tokens * tokens
    xr = np.zeros((t4, ng * 256), dtype=np.int8)
    nsxo, dx, dxs = np.zeros((t4, ng * V), np.int32), np.zeros((t4, ng * V), np.float32), np.zeros((t4, ng * V), np.float32)
    nsxo16, dx16, dxs16 = np.zeros((t4, nw), np.int32), np.zeros((t4, nw), np.float32), np.zeros((t4, nw), np.float32)
    for t in prange(t_real):
        _quantize_row(x[t], offset, wide, centred, xr[t], nsxo[t], dx[t], dxs[t], nsxo16[t], dx16[t], dxs16[t],
                      chunk_at)
    return xr, nsxo, dx, dxs, nsxo16, dx16, dxs16


def prepare_rows_int8(x: np.ndarray, offset: int, wide: bool, tokens: int = TOKENS, centred: bool = False) -> Activations:
    """x (T, in) float32 -> Activations for a weight with this offset (8 Q4_0, 0 Q4_1, 128 Q8_0), T padded with
    zero rows to a multiple of ``tokens`` (the micro-kernel's: 4 here, 8 in gemm_lanes.py); ``centred``: blocks
    centred first, dxs their centres (Q8_0 prompts, quant/activations.py)."""
    return Activations(*_prepare(x, offset, wide, centred, CHUNKS_WIDE if wide else CHUNKS, tokens))


def _arrays(a: Activations, wide: bool):
    """The activation arrays a kernel of this width reads: xr, -offset sum xq, dx, dx sum xq (per lane)."""
    return (a.xr, a.nsxo16, a.dx16, a.dxs16) if wide else (a.xr, a.nsxo, a.dx, a.dxs)


@njit(cache=True)
def _rows4(v, t0):
    """Rows t0..t0+3 of an activation array (the micro-kernels' inputs)."""
    return (v[t0], v[t0 + 1], v[t0 + 2], v[t0 + 3])


# ---------------------------------------------------------------- one group, 4 tokens: 256 and 512 bits


@njit(cache=True)
def _pieces(v, o):
    """The 8 32-byte pieces of the group at byte o of a row (activations: o = 256 c), or of repacked Q8_0
    bytes (flat)."""
    return (load_i8x32(v, o), load_i8x32(v, o + 32), load_i8x32(v, o + 64), load_i8x32(v, o + 96),
            load_i8x32(v, o + 128), load_i8x32(v, o + 160), load_i8x32(v, o + 192), load_i8x32(v, o + 224))


@njit(cache=True)
def _group(y, u, nibbles, sc, xs, ss, es, cx):
    """y (4 float32x8 accumulators) + group cx's block sums for 4 tokens times sc * dx (256 bits).
    u: the weight row's 8 vectors (nibbles, or Q8_0's unsigned bytes)."""
    return (_token(y[0], u, nibbles, sc, xs[0], ss[0], es[0], cx), _token(y[1], u, nibbles, sc, xs[1], ss[1], es[1], cx),
            _token(y[2], u, nibbles, sc, xs[2], ss[2], es[2], cx), _token(y[3], u, nibbles, sc, xs[3], ss[3], es[3], cx))


@njit(cache=True)
def _token(y, u, nibbles, sc, x, s, e, cx):
    """One token of _group: the integer block sums (from -offset sum xq), to float32, times d * dx."""
    o = cx * V
    acc = dot8_nibbles(load_i32x8(s, o), u, _pieces(x, cx * 256)) if nibbles else \
        dot8_bytes(load_i32x8(s, o), u, _pieces(x, cx * 256))
    return fma_f32x8(cvt_i32x8(acc), mul_f32x8(sc, load_f32x8(e, o)), y)


@njit(cache=True)
def _dot_wide(u, x, c, acc):
    """acc + the 4 zmm vpdpbusd of group c: u 4 vectors of 64 unsigned bytes, x a row in the wide order."""
    o = c * 256
    acc = dpbusd512(acc, u[0], load_i8x64(x, o))
    acc = dpbusd512(acc, u[1], load_i8x64(x, o + 64))
    acc = dpbusd512(acc, u[2], load_i8x64(x, o + 128))
    return dpbusd512(acc, u[3], load_i8x64(x, o + 192))


@njit(cache=True)
def _group_wide(y, u, sc, xs, ss, es, cx):
    """_group on 512 bits: u 4 vectors of 64 bytes (a 64-byte load holds pieces 2i and 2i+1 of a nibble
    row, whose low and high nibbles face WIDE_ORDER's pieces), sc the scales loaded twice."""
    o = cx * 16
    y0 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[0], cx, load_i32x16(ss[0], o))), mul_f32x16(sc, load_f32x16(es[0], o)), y[0])
    y1 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[1], cx, load_i32x16(ss[1], o))), mul_f32x16(sc, load_f32x16(es[1], o)), y[1])
    y2 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[2], cx, load_i32x16(ss[2], o))), mul_f32x16(sc, load_f32x16(es[2], o)), y[2])
    y3 = fma_f32x16(cvt_i32x16(_dot_wide(u, xs[3], cx, load_i32x16(ss[3], o))), mul_f32x16(sc, load_f32x16(es[3], o)), y[3])
    return (y0, y1, y2, y3)


@njit(cache=True)
def _minimums_wide(y, mn, ms, cx):
    """_minimums on 512 bits (dxs16 is zero in lanes 8-15: each block's m term is added once)."""
    o = cx * 16
    return (fma_f32x16(mn, load_f32x16(ms[0], o), y[0]), fma_f32x16(mn, load_f32x16(ms[1], o), y[1]),
            fma_f32x16(mn, load_f32x16(ms[2], o), y[2]), fma_f32x16(mn, load_f32x16(ms[3], o), y[3]))


@njit(cache=True)
def _minimums(y, mn, ms, cx):
    """Q4_1: y + m * dx * sum xq for group cx (mn: the row's minimums of the group, float32 lanes; ms: 4
    tokens' dx * sum xq)."""
    o = cx * V
    return (fma_f32x8(mn, load_f32x8(ms[0], o), y[0]), fma_f32x8(mn, load_f32x8(ms[1], o), y[1]),
            fma_f32x8(mn, load_f32x8(ms[2], o), y[2]), fma_f32x8(mn, load_f32x8(ms[3], o), y[3]))


# ---------------------------------------------------------------- Q4_0 / Q4_1


@njit(cache=True)
def _store4(y, t0, r, y0, y1, y2, y3):
    """y[t0:t0+4, r] += the 4 tokens' sums."""
    y[t0, r] += y0
    y[t0 + 1, r] += y1
    y[t0 + 2, r] += y2
    y[t0 + 3, r] += y3


@njit(cache=True, inline="always")
def _side_by_side(xr, ss, es, ms, has_m, t0, c0, c2, xp, sp, ep, mp):
    """Tokens t0..t0+3's groups c0..c2-1 copied side by side for the 256-bit nibble kernels: group c - c0 = g of
    token j at xp[(4 g + j) * 256:], its -offset sum xq, dx (dx sum xq) at sp, ep (mp)[(4 g + j) * 8:].

    The kernels then read the 4 tokens through one pointer an array at constant offsets. Through the 4 rows of
    xr, ss, es (ms), 12 pointers, more than the registers left, the compiled loop reloaded 7 of them from the
    stack every group (118 instructions a group, 93 of them vector operations; 110 this way, none reloaded).
    With the accumulators as 4 named variables (_nibble_row_1x4; as a 4-tuple the loop lost its reloads too but
    ran at the old speed), the 7B shape's weights on AMD Zen 2, T = 100 and 256: 123-130 G products/s against
    97-104 (1024 x 4096: 101-104 against 91-94), the same bits (docs/performance.md, seventeenth session;
    decode.py's 4-row pass reads its rows side by side for the same reason). The copy, 22.5 KiB for a chunk of
    4 tokens, is made once per work item for all its rows."""
    for c in range(c0, c2):
        for j in range(TOKENS):
            b = (c - c0) * TOKENS + j
            xp[b * 256:(b + 1) * 256] = xr[t0 + j, c * 256:(c + 1) * 256]
            sp[b * V:(b + 1) * V] = ss[t0 + j, c * V:(c + 1) * V]
            ep[b * V:(b + 1) * V] = es[t0 + j, c * V:(c + 1) * V]
            if has_m:
                mp[b * V:(b + 1) * V] = ms[t0 + j, c * V:(c + 1) * V]


@njit(cache=True, inline="always")
def _token_sbs(y, u, sc, xp, sp, ep, o, e):
    """One token of a group, its activations side by side (_side_by_side): pieces at xp[o:], -offset sum xq and
    dx at sp, ep[e:]; _token's arithmetic."""
    acc = dot8_nibbles(load_i32x8(sp, e), u, _pieces(xp, o))
    return fma_f32x8(cvt_i32x8(acc), mul_f32x8(sc, load_f32x8(ep, e)), y)


@njit(cache=True, inline="always")
def _minimums_sbs(y, mn, mp, g):
    """_minimums for group g of a chunk side by side (the pairs' kernel)."""
    e = g * TOKENS * V
    return (fma_f32x8(mn, load_f32x8(mp, e), y[0]), fma_f32x8(mn, load_f32x8(mp, e + V), y[1]),
            fma_f32x8(mn, load_f32x8(mp, e + 2 * V), y[2]), fma_f32x8(mn, load_f32x8(mp, e + 3 * V), y[3]))


@njit(cache=True)
def _nibble_rows_1x4(w, xp, sp, ep, mp, has_m, out_dim, nb, lo, hi, c0, c1, tail, y, t0):
    """The 256-bit micro-kernel, for rows lo..hi in turn: y[t0:t0+4, r] += row r times tokens t0..t0+3
    over groups c0..c1-1, then the padded tail group if ``tail``. Registers: 8 nibble vectors, 4
    accumulators. w = (qs, d, m, qt, dt, mt) flat, out_dim rows of nb blocks (groups c0..c1 within one of the
    layout's column tiles, layout.py: row r's piece at tile_base); xp, sp, ep, mp: the 4 tokens' groups c0..c1
    (and the tail group) side by side (_side_by_side). One call per chunk and 4 tokens, flat arrays and
    offsets: a call per row passed ~150 words of array structs (105 ns a call, more than the work on SmolLM2's
    576-wide rows), and a view per row took an atomic reference count on the weight's memory, bounced between
    the two cores."""
    for r in range(lo, hi):
        so = tile_base(r, c0 * V, out_dim, nb)
        _nibble_row_1x4(w, xp, sp, ep, mp, has_m, so * 16, so, (r - lo) * 128, (r - lo) * V, c0, c1, tail, y, t0, r)


@njit(cache=True, inline="always")
def _nibble_row_1x4(w, xp, sp, ep, mp, has_m, qo, so, to, tso, c0, c1, tail, y, t0, r):
    """One row of _nibble_rows_1x4: its bytes start at qo, its scales at so, its tail group's at to, tso."""
    qf, df, mf, qtf, dtf, mtf = w
    y0, y1, y2, y3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
    for c in range(c0, c1 + tail):                     # then the padded group after the last whole one
        if c < c1:
            u, sc = _nibbles(qf, qo + c * 128), load_f16x8(df, so + c * V)
        else:
            u, sc = _nibbles(qtf, to), load_f16x8(dtf, tso)
        o, e = (c - c0) * TOKENS * 256, (c - c0) * TOKENS * V
        y0 = _token_sbs(y0, u, sc, xp, sp, ep, o, e)
        y1 = _token_sbs(y1, u, sc, xp, sp, ep, o + 256, e + V)
        y2 = _token_sbs(y2, u, sc, xp, sp, ep, o + 512, e + 2 * V)
        y3 = _token_sbs(y3, u, sc, xp, sp, ep, o + 768, e + 3 * V)
        if has_m:
            mn = load_f16x8(mf, so + c * V) if c < c1 else load_f16x8(mtf, tso)
            y0 = fma_f32x8(mn, load_f32x8(mp, e), y0)
            y1 = fma_f32x8(mn, load_f32x8(mp, e + V), y1)
            y2 = fma_f32x8(mn, load_f32x8(mp, e + 2 * V), y2)
            y3 = fma_f32x8(mn, load_f32x8(mp, e + 3 * V), y3)
    _store4(y, t0, r, hsum_f32x8(y0), hsum_f32x8(y1), hsum_f32x8(y2), hsum_f32x8(y3))


@njit(cache=True)
def _token2(ya, yb, u, v, sa, sb, xp, sp, ep, o, e):
    """_token_sbs for two weight rows (nibbles u, v; scales sa, sb) against one token: its pieces, -offset sum
    xq and dx loaded once for both. ``dot8_nibbles_split``: the same exact int32 sums as ``dot8_nibbles`` (so
    the same bits as _token_sbs), on 512-bit ``vpdpbusd`` where the CPU has AVX-512 VNNI."""
    p, n, dx = _pieces(xp, o), load_i32x8(sp, e), load_f32x8(ep, e)
    ya = fma_f32x8(cvt_i32x8(dot8_nibbles_split(n, u, p)), mul_f32x8(sa, dx), ya)
    yb = fma_f32x8(cvt_i32x8(dot8_nibbles_split(n, v, p)), mul_f32x8(sb, dx), yb)
    return ya, yb


@njit(cache=True)
def _group2(ya, yb, u, v, sa, sb, xp, sp, ep, g):
    """_group_sbs for two weight rows: ya, yb their 4 tokens' accumulators."""
    o, e = g * TOKENS * 256, g * TOKENS * V
    a0, b0 = _token2(ya[0], yb[0], u, v, sa, sb, xp, sp, ep, o, e)
    a1, b1 = _token2(ya[1], yb[1], u, v, sa, sb, xp, sp, ep, o + 256, e + V)
    a2, b2 = _token2(ya[2], yb[2], u, v, sa, sb, xp, sp, ep, o + 512, e + 2 * V)
    a3, b3 = _token2(ya[3], yb[3], u, v, sa, sb, xp, sp, ep, o + 768, e + 3 * V)
    return (a0, a1, a2, a3), (b0, b1, b2, b3)


@njit(cache=True)
def _nibble_rows_2x4(w, xp, sp, ep, mp, has_m, out_dim, nb, lo, hi, c0, c1, tail, y, t0):
    """_nibble_rows_1x4 two weight rows at a time (an odd last row alone): each activation vector is loaded
    once for 2 rows, and the 8 integer dot products of a (row, token) pair run in short chains on 512 bits
    (``dot8_nibbles_split``). Chosen where the CPU has AVX-512 VNNI (kernels.gemm_pairs): 32 zmm registers
    hold the 2 rows' 16 nibble vectors; on AVX2 (16 registers) they spill and the pairs ran 30-45 % slower.
    Every (row, token) sees the float operations of _nibble_row_1x4 in the same order: the same bits."""
    r = lo
    while r + 1 < hi:
        sa, sb = tile_base(r, c0 * V, out_dim, nb), tile_base(r + 1, c0 * V, out_dim, nb)
        _nibble_pair_1x4(w, xp, sp, ep, mp, has_m, sa * 16, (sb - sa) * 16, sa, sb - sa, (r - lo) * 128,
                         (r - lo) * V, c0, c1, tail, y, t0, r)
        r += 2
    if r < hi:
        so = tile_base(r, c0 * V, out_dim, nb)
        _nibble_row_1x4(w, xp, sp, ep, mp, has_m, so * 16, so, (r - lo) * 128, (r - lo) * V, c0, c1, tail, y, t0, r)


@njit(cache=True, inline="always")
def _nibble_pair_1x4(w, xp, sp, ep, mp, has_m, qo, qrow, so, nb, to, tso, c0, c1, tail, y, t0, r):
    """Rows r and r + 1 of _nibble_rows_2x4 (the second row's bytes qrow, its scales nb, its tail group 128
    bytes and V scales after the first's: in the layout's tiles, the distance between the two rows' pieces)."""
    qf, df, mf, qtf, dtf, mtf = w
    ya = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
    yb = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
    for c in range(c0, c1):
        ya, yb = _group2(ya, yb, _nibbles(qf, qo + c * 128), _nibbles(qf, qo + qrow + c * 128),
                         load_f16x8(df, so + c * V), load_f16x8(df, so + nb + c * V), xp, sp, ep, c - c0)
        if has_m:
            ya = _minimums_sbs(ya, load_f16x8(mf, so + c * V), mp, c - c0)
            yb = _minimums_sbs(yb, load_f16x8(mf, so + nb + c * V), mp, c - c0)
    if tail:
        ya, yb = _group2(ya, yb, _nibbles(qtf, to), _nibbles(qtf, to + 128), load_f16x8(dtf, tso),
                         load_f16x8(dtf, tso + V), xp, sp, ep, c1 - c0)
        if has_m:
            ya = _minimums_sbs(ya, load_f16x8(mtf, tso), mp, c1 - c0)
            yb = _minimums_sbs(yb, load_f16x8(mtf, tso + V), mp, c1 - c0)
    _store4(y, t0, r, hsum_f32x8(ya[0]), hsum_f32x8(ya[1]), hsum_f32x8(ya[2]), hsum_f32x8(ya[3]))
    _store4(y, t0, r + 1, hsum_f32x8(yb[0]), hsum_f32x8(yb[1]), hsum_f32x8(yb[2]), hsum_f32x8(yb[3]))


@njit(cache=True)
def _nibble_rows_wide_1x4(w, xs, ss, es, ms, has_m, out_dim, nb, lo, hi, c0, c1, tail, y, t0):
    """_nibble_rows_1x4 on 512 bits: two 64-byte loads per group give 4 nibble vectors."""
    for r in range(lo, hi):
        so = tile_base(r, c0 * V, out_dim, nb)
        _nibble_row_wide_1x4(w, xs, ss, es, ms, has_m, so * 16, so, (r - lo) * 128, (r - lo) * V, c0, c1, tail, y,
                             t0, r)


@njit(cache=True, inline="always")
def _nibble_row_wide_1x4(w, xs, ss, es, ms, has_m, qo, so, to, tso, c0, c1, tail, y, t0, r):
    """One row of _nibble_rows_wide_1x4."""
    qf, df, mf, qtf, dtf, mtf = w
    acc = (zero_f32x16(), zero_f32x16(), zero_f32x16(), zero_f32x16())
    for c in range(c0, c1):
        acc = _nibble_group_wide(acc, qf, df, mf, qo + c * 128, so + c * V, has_m, xs, ss, es, ms, c)
    if tail:
        acc = _nibble_group_wide(acc, qtf, dtf, mtf, to, tso, has_m, xs, ss, es, ms, c1)
    _store4(y, t0, r, hsum_f32x16(acc[0]), hsum_f32x16(acc[1]), hsum_f32x16(acc[2]), hsum_f32x16(acc[3]))


@njit(cache=True)
def _nibble_group_wide(acc, q, dr, mr, qo, so, has_m, xs, ss, es, ms, cx):
    """One group of _nibble_row_wide_1x4: the weight group at byte qo (scales at so), activation group cx."""
    v0, v1 = load_i8x64(q, qo), load_i8x64(q, qo + 64)
    u = (nib_lo64(v0), nib_hi64(v0), nib_lo64(v1), nib_hi64(v1))
    acc = _group_wide(acc, u, load_f16x8_twice(dr, so), xs, ss, es, cx)
    if has_m:
        acc = _minimums_wide(acc, load_f16x8_twice(mr, so), ms, cx)
    return acc


@njit(cache=True)
def _tail_groups(qs, d, m, has_m, lo, hi, qt, dt, mt):
    """Rows lo..hi's tail blocks (ggml order in the layout, layout.py) -> one zero-padded interleaved group
    each: qt (rows, 128) nibble bytes, dt, mt (rows, 8) fp16 bits (0 = 0.0 for the padding)."""
    out_dim, nb = d.shape
    nv = nb // V
    qf, df, mf = qs.reshape(-1), d.reshape(-1), m.reshape(-1)
    qt[:] = 0
    dt[:] = 0
    mt[:] = 0
    for i in range(hi - lo):
        tb = tile_base(lo + i, nv * V, out_dim, nb) + nv * V  # the row's first tail block (layout.py)
        for b in range(nb - nv * V):
            dt[i, b] = df[tb + b]
            if has_m:
                mt[i, b] = mf[tb + b]
            for g in range(4):
                for k in range(4):
                    qt[i, g * 32 + b * 4 + k] = qf[(tb + b) * 16 + 4 * g + k]


@njit(parallel=True, cache=True, nogil=True)
def gemm_nibbles_int8(xr, ss, es, ms, qs, d, m, has_m, wide, pairs, n_groups):
    """y (T4, out) = the int8-activation product of prepared rows (``_arrays(a, wide)``: xr, -offset sum xq,
    dx, dx sum xq) and a nibble-layout weight; ``pairs``: the 256-bit micro-kernel two rows at a time."""
    out_dim, nb = d.shape
    nv = nb // V
    tail = 1 if nb % V else 0
    t4 = xr.shape[0]
    y = np.zeros((t4, out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        lo, hi = grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups
        qt = np.empty((hi - lo, 128), dtype=np.uint8)
        dt, mt = np.empty((hi - lo, V), dtype=np.uint16), np.empty((hi - lo, V), dtype=np.uint16)
        if tail:
            _tail_groups(qs, d, m, has_m, lo, hi, qt, dt, mt)
        w = (qs.reshape(-1), d.reshape(-1), m.reshape(-1), qt.reshape(-1), dt.reshape(-1), mt.reshape(-1))
        side = 0 if wide else (GROUPS_PER_CHUNK + 1) * TOKENS   # a chunk's groups and the tail, 4 tokens each
        xp = np.empty(side * 256, dtype=np.int8)
        sp = np.empty(side * V, dtype=np.int32)
        ep, mp = np.empty(side * V, dtype=np.float32), np.empty(side * V if has_m else 0, dtype=np.float32)
        for c0 in range(0, max(nv, 1), GROUPS_PER_CHUNK):
            c1 = min(nv, c0 + GROUPS_PER_CHUNK)
            last = tail if c1 == nv else 0
            for t0 in range(0, t4, TOKENS):
                if wide:
                    xs4, ss4, es4, ms4 = _rows4(xr, t0), _rows4(ss, t0), _rows4(es, t0), _rows4(ms, t0)
                    _nibble_rows_wide_1x4(w, xs4, ss4, es4, ms4, has_m, out_dim, nb, lo, hi, c0, c1, last, y, t0)
                    continue
                _side_by_side(xr, ss, es, ms, has_m, t0, c0, c1 + last, xp, sp, ep, mp)
                if pairs:
                    _nibble_rows_2x4(w, xp, sp, ep, mp, has_m, out_dim, nb, lo, hi, c0, c1, last, y, t0)
                else:
                    _nibble_rows_1x4(w, xp, sp, ep, mp, has_m, out_dim, nb, lo, hi, c0, c1, last, y, t0)
    return y


# ---------------------------------------------------------------- Q8_0: ggml's bytes, repacked per tile


@njit(cache=True, inline="always")
def q8_0_block_sum(row, src):
    """sum_j q_j of the Q8_0 block whose 32 signed bytes start at row[src] (a centred block's weight sum)."""
    total = 0
    for j in range(Q):
        total += np.int32(np.int8(row[src + j]))
    return total


@njit(cache=True)
def _repack_q8_0(blocks, lo, hi, wide, centred, lut, qs8, d8, m8):
    """Rows lo..hi of ggml Q8_0 bytes -> qs8 (q + 128 as unsigned bytes in the activations' order, the last
    group padded with q = 0) and d8 (fp16 bits, 0 for the padding): the tile the micro-kernels read; if
    ``centred``, m8 the blocks' d * sum q in float32 (rows of ng * 8 + 8: the wide kernel loads 16 lanes)."""
    nb = blocks.shape[1] // Q8_0_BYTES
    qs8[:] = 0x80
    d8[:] = 0
    m8[:] = 0
    for i in range(hi - lo):
        row = blocks[lo + i]
        for blk in range(nb):
            d8[i, blk] = np.uint16(row[blk * Q8_0_BYTES]) | (np.uint16(row[blk * Q8_0_BYTES + 1]) << 8)
            c, b = blk // V, blk % V
            src = blk * Q8_0_BYTES + 2
            if centred:
                m8[i, blk] = lut[d8[i, blk]] * np.float32(q8_0_block_sum(row, src))
            for j in range(Q):
                piece = 2 * ((j % 16) // 4) + j // 16
                if wide:
                    piece = WIDE_ORDER[piece]
                qs8[i, c * 256 + piece * 32 + b * 4 + j % 4] = row[src + j] ^ np.uint8(0x80)  # q + 128


@njit(cache=True)
def _q8_0_rows_1x4(q, dr, mr, has_m, xs, ss, es, ms, ng, wide, y, t0, r0, r1):
    """y[t0:t0+4, r] += repacked Q8_0 row r (flat tile from row r0) times tokens t0..t0+3, r in r0..r1; with
    ``has_m`` (centred blocks) + the blocks' d * sum q (mr) times the tokens' centres (ms)."""
    for r in range(r0, r1):
        _q8_0_row_1x4(q, dr, mr, has_m, (r - r0) * ng * 256, (r - r0) * ng * V, (r - r0) * (ng + 1) * V, xs, ss,
                      es, ms, ng, wide, y, t0, r)


@njit(cache=True, inline="always")
def _q8_0_row_1x4(q, dr, mr, has_m, qo, so, mo, xs, ss, es, ms, ng, wide, y, t0, r):
    """One row of _q8_0_rows_1x4: the tile's bytes from qo, its scales from so, its weight sums from mo."""
    if wide:
        acc16 = (zero_f32x16(), zero_f32x16(), zero_f32x16(), zero_f32x16())
        for c in range(ng):
            o = qo + c * 256
            u = (load_i8x64(q, o), load_i8x64(q, o + 64), load_i8x64(q, o + 128), load_i8x64(q, o + 192))
            acc16 = _group_wide(acc16, u, load_f16x8_twice(dr, so + c * V), xs, ss, es, c)
            if has_m:  # lanes 8-15 of the centres are zero: each block's term is added once
                acc16 = _minimums_wide(acc16, load_f32x16(mr, mo + c * V), ms, c)
        _store4(y, t0, r, hsum_f32x16(acc16[0]), hsum_f32x16(acc16[1]), hsum_f32x16(acc16[2]), hsum_f32x16(acc16[3]))
    else:
        acc = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
        for c in range(ng):
            acc = _group(acc, _pieces(q, qo + c * 256), False, load_f16x8(dr, so + c * V), xs, ss, es, c)
            if has_m:
                acc = _minimums(acc, load_f32x8(mr, mo + c * V), ms, c)
        _store4(y, t0, r, hsum_f32x8(acc[0]), hsum_f32x8(acc[1]), hsum_f32x8(acc[2]), hsum_f32x8(acc[3]))


@njit(cache=True)
def _q8_0_rows_2x4(q, dr, mr, has_m, xs, ss, es, ms, ng, y, t0, r0, r1):
    """_q8_0_rows_1x4 (256 bits) two rows at a time, an odd last row alone, as _nibble_rows_2x4: the same bits."""
    r = r0
    while r + 1 < r1:
        qo, so, mo = (r - r0) * ng * 256, (r - r0) * ng * V, (r - r0) * (ng + 1) * V
        ya = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
        yb = (zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8())
        for c in range(ng):
            ya, yb = _bytes_group2(ya, yb, _pieces(q, qo + c * 256), _pieces(q, qo + ng * 256 + c * 256),
                                   load_f16x8(dr, so + c * V), load_f16x8(dr, so + ng * V + c * V), xs, ss, es, c)
            if has_m:
                ya = _minimums(ya, load_f32x8(mr, mo + c * V), ms, c)
                yb = _minimums(yb, load_f32x8(mr, mo + (ng + 1) * V + c * V), ms, c)
        _store4(y, t0, r, hsum_f32x8(ya[0]), hsum_f32x8(ya[1]), hsum_f32x8(ya[2]), hsum_f32x8(ya[3]))
        _store4(y, t0, r + 1, hsum_f32x8(yb[0]), hsum_f32x8(yb[1]), hsum_f32x8(yb[2]), hsum_f32x8(yb[3]))
        r += 2
    if r < r1:
        _q8_0_row_1x4(q, dr, mr, has_m, (r - r0) * ng * 256, (r - r0) * ng * V, (r - r0) * (ng + 1) * V, xs, ss,
                      es, ms, ng, False, y, t0, r)


@njit(cache=True)
def _bytes_token2(ya, yb, u, v, sa, sb, x, s, e, cx):
    """_token2 for Q8_0's unsigned bytes (``dot8_bytes_split``)."""
    o = cx * V
    p, n, dx = _pieces(x, cx * 256), load_i32x8(s, o), load_f32x8(e, o)
    ya = fma_f32x8(cvt_i32x8(dot8_bytes_split(n, u, p)), mul_f32x8(sa, dx), ya)
    yb = fma_f32x8(cvt_i32x8(dot8_bytes_split(n, v, p)), mul_f32x8(sb, dx), yb)
    return ya, yb


@njit(cache=True)
def _bytes_group2(ya, yb, u, v, sa, sb, xs, ss, es, cx):
    """_group2 for Q8_0's unsigned bytes."""
    a0, b0 = _bytes_token2(ya[0], yb[0], u, v, sa, sb, xs[0], ss[0], es[0], cx)
    a1, b1 = _bytes_token2(ya[1], yb[1], u, v, sa, sb, xs[1], ss[1], es[1], cx)
    a2, b2 = _bytes_token2(ya[2], yb[2], u, v, sa, sb, xs[2], ss[2], es[2], cx)
    a3, b3 = _bytes_token2(ya[3], yb[3], u, v, sa, sb, xs[3], ss[3], es[3], cx)
    return (a0, a1, a2, a3), (b0, b1, b2, b3)


@njit(parallel=True, cache=True, nogil=True)
def gemm_q8_0_int8(xr, ss, es, ms, blocks, wide, pairs, centred, lut, n_groups):
    """y (T4, out) for Q8_0 bytes (out, nb*34) and rows prepared with offset 128 (``_arrays(a, wide)``); with
    ``centred`` the rows were prepared centred and ms holds their centres (else ms is unused: Q8_0 has no
    minimums). The whole row per micro-kernel call: a tile's rows are at most 16 x 14336 bytes (L2)."""
    out_dim = blocks.shape[0]
    nb = blocks.shape[1] // Q8_0_BYTES
    ng = (nb + V - 1) // V
    t4 = xr.shape[0]
    y = np.zeros((t4, out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        lo, hi = grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups
        qs8 = np.empty((TILE_ROWS, ng * 256), dtype=np.uint8)
        d8 = np.empty((TILE_ROWS, ng * V), dtype=np.uint16)
        m8 = np.empty((TILE_ROWS, (ng + 1) * V), dtype=np.float32)
        q8f, d8f, m8f = qs8.reshape(-1), d8.reshape(-1), m8.reshape(-1)
        for r0 in range(lo, hi, TILE_ROWS):
            r1 = min(hi, r0 + TILE_ROWS)
            _repack_q8_0(blocks, r0, r1, wide, centred, lut, qs8, d8, m8)
            for t0 in range(0, t4, TOKENS):
                xs4, ss4, es4, ms4 = _rows4(xr, t0), _rows4(ss, t0), _rows4(es, t0), _rows4(ms, t0)
                if pairs and not wide:
                    _q8_0_rows_2x4(q8f, d8f, m8f, centred, xs4, ss4, es4, ms4, ng, y, t0, r0, r1)
                else:
                    _q8_0_rows_1x4(q8f, d8f, m8f, centred, xs4, ss4, es4, ms4, ng, wide, y, t0, r0, r1)
    return y
