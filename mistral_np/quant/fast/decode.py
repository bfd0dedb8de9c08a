"""Decode (T == 1, or a few rows) matrix-vector kernels: memory-bound, so the aim is to stream weight bytes.

Q4_0 / Q4_1 read the interleaved layout (layout.py); Q8_0 reads ggml's own bytes (its 32 int8
values already sit together). Each kind has two kernels:

* ``activations="float"`` (the parity path): float32 x, nibbles converted to float32 8 at a time,
  fused multiply-adds lane by lane (lane = one byte position of a block), scales applied per
  group of 8 blocks. Agrees with float64 within the float32 bound of docs/quantization.md.
* ``activations="int8"``: x quantized to Q8_0 blocks (xq int8, dx per block, as llama.cpp does),
  exact integer block dot products with ``dpbusd`` (4 byte products per int32 lane, simd.py),
  then one float fma per block. Q4_0's -8 offset: sum (q-8) xq = sum q xq - 8 sum xq, exact in
  int32. Q8_0's signed weights: |q| * (xq with q's sign) = q * xq (the psignb trick).

A few rows at once (a batched decode step: several sequences, one token each): every kernel takes B
activation rows and reads each weight row once for all of them (it stays in L1 while they go through
it), and each row's arithmetic is the same whatever B is, so row b has the bits of the one-row product
(``kernels.matvecs_*``, ``QuantTensor.matvecs``). The int8 kernels go through the rows 4 at a time,
sharing the split into nibbles and the scale loads; from 4 rows the arithmetic, not memory, sets the
pace on the one machine measured (docs/performance.md, "Serving"). When the B rows are too wide to stay
in L1 together (4 rows of 14336), the nibble kernel goes through the columns in tiles (rows_nibbles_int8).

The hardware prefetcher alone left one thread at ~5 GB/s from DRAM (21 GB/s from cache), so the
loops prefetch the weight bytes AHEAD bytes in advance (running on into the next rows is intended; a
prefetch past the end of an array is harmless), into L2 (simd.py's ``prefetch``, x86 ``prefetcht1``).
Prefetched into L1 (``prefetcht0``, as until 2026-12-03), each line in flight holds one of the L1's few
miss buffers until memory answers, which capped the lines in flight: on Zen 4, 2 threads, one activation
row, 14336 x 4096 and 4096 x 14336 Q4_0 streamed 18-24 GB/s that way and 26-30 this way (docs/performance.md,
2026-12-03, eleventh session). The scales (and Q4_1's minimums) are prefetched the same weight rows on: a
separate, smaller stream, which the column tiles below read in 16 short pieces at a time, each piece a miss
the hardware prefetcher did not foresee (4 rows of 4096 x 14336, 2 threads: 2.55-2.90 ms -> 2.18-2.77 median,
one row 1.59-1.69 -> 1.20-1.43; 3 of 4 alternating rounds, the fourth slower for both).

``rows_*`` compute rows lo..hi on the calling thread; ``gemv_*`` split the rows into groups run by
``prange``, several per thread, which kernels.py hands out one at a time (chunk size 1), so a thread
slowed by another process is helped.
The vector loads are unchecked: every offset below stays inside its array by construction.

tests/test_quant_kernels.py checks both kinds of kernel on awkward shapes: float activations within
the float32 bound of the float64 product, int8 ones within the documented bound and equal to their
NumPy twin (quant/activations.py) up to the float32 rounding of the sum over blocks, serial and
parallel runs giving the same bits, and B rows giving each row its one-row bits (B = 1..9).

next: kernels.py (prefill, dequantization, entry points).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common import Q
from ..q8_0 import BLOCK_BYTES as Q8_0_BYTES
from .layout import TILE_BLOCKS, TILE_GROUPS, TILE_ROWS, V, tile_base, tile_blocks
from .simd import (abs_i8, cvt_i32x8, dot8_nibbles_split, dpbusd, expand4_f32x8, fma_f32x8, hsum_f32x8, i8x32_to_f32x8x4,
                   load_f16x8, load_f32x8, load_i8x32, load_i32x8, load_nibbles16, mul_f32x8, nib_hi, nib_lo, prefetch,
                   sign_i8, splat_f32x8, store_f32x8, sub_i8, zero_f32x8, zero_i32x8)

AHEAD = 4096  # software prefetch distance in weight bytes: 1 thread streamed 4.4 GB/s without, 12-14 with (into
              # L1; into L2, Zen 4: 8192 and 16384 no faster, 2048 slower)
ROW_PAD = 64  # bytes after each int8 activation row: at 4096 inputs the rows would start 4 KiB apart, and the
              # loads of the rows at one offset then map to the same L1 set (measured: 4 rows cost 2x 2 rows)
X_TILE = 16384  # bytes of int8 activations (all B rows) a column tile of the several-row kernel holds: in L1
ROW_CHUNK = TILE_ROWS  # weight rows that go through one column tile before the next: the layout's chunk


# ---------------------------------------------------------------- activations


@njit(cache=True)
def block_scale(x, blk):
    """Block blk of x (32 values) -> (d, 1/d): d = max|x| / 127 as ggml's quantize_row_q8_0_ref (0 for a zero block)."""
    amax = np.float32(0.0)
    for k in range(Q):
        amax = max(amax, abs(x[blk * Q + k]))
    return scale_of(amax)


@njit(cache=True, inline="always")
def scale_of(amax):
    """A Q8_0 block's d = amax / 127 and 1 / d (0 for a zero block), as ggml's quantize_row_q8_0_ref."""
    d = amax / np.float32(127.0)
    return d, (np.float32(1.0) / d if d != 0 else np.float32(0.0))


@njit(cache=True, inline="always")
def round_block(x, o, centre, inv, q):
    """q[j] = round_away((x[o + j] - centre) * inv) for the 32 values of a block -> their sum. round_away's
    arithmetic (exact in float32) in a loop LLVM vectorizes; x - 0.0 is x, so a plain block keeps its bits."""
    two = np.float32(2.0)
    total = 0
    for j in range(Q):
        v = (x[o + j] - centre) * inv
        a = abs(v)
        r = np.int32(np.floor(a) + np.floor(two * (a - np.floor(a))))
        r = r if v >= 0 else -r
        q[j] = r
        total += r
    return total


@njit(cache=True)
def round_away(v):
    """v rounded half away from zero (C's roundf, which ggml uses) as int8; |v| <= 127 here."""
    a = abs(v)
    r = np.floor(a) + np.floor(2 * (a - np.floor(a)))
    return np.int8(r if v >= 0 else -r)


@njit(cache=True)
def quantize_x_q8_0(x):
    """x (in,) float32 -> Q8_0 as ggml's quantize_row_q8_0_ref (roundf).

    -> xq int8 (in,) in -127..127, dx float32 (nb,) with x ~= dx * xq, sum of xq per block int32 (nb,)
    """
    nb = x.shape[0] // Q
    xq = np.empty(nb * Q, dtype=np.int8)
    dx = np.empty(nb, dtype=np.float32)
    sx = np.empty(nb, dtype=np.int32)
    for blk in range(nb):
        d, inv = block_scale(x, blk)
        dx[blk] = d
        s = 0
        for k in range(Q):
            q = round_away(x[blk * Q + k] * inv)
            xq[blk * Q + k] = q
            s += q
        sx[blk] = s
    return xq, dx, sx


@njit(cache=True)
def interleave_x(x):
    """x (in,) -> the order of the interleaved nibbles (layout.py), float32 or int8.

        xr[c*256 + g*64 + h*32 + b*4 + k] = x[(8c + b)*32 + h*16 + 4g + k]

    so the 32 bytes at c*256 + g*64 + h*32 face the 32 nibble bytes at c*128 + g*32: h = 0 pairs
    with low nibbles (elements 0..15 of a block), h = 1 with high nibbles (16..31). The tail blocks
    (nb mod 8) keep their order.
    """
    nb = x.shape[0] // Q
    nv = nb // V
    xr = x.copy()
    for c in range(nv):
        for g in range(4):
            for h in range(2):
                for b in range(V):
                    for k in range(4):
                        xr[c * 256 + g * 64 + h * 32 + b * 4 + k] = x[(c * V + b) * Q + h * 16 + 4 * g + k]
    return xr


@njit(cache=True)
def prepare_x_int8(x, offset):
    """x (in,) float32 -> what the int8 nibble kernel reads: xr (interleaved xq), nsxo = -offset * sum xq (int32,
    where the block's integer sum starts), dx and dx * sum xq (float32, for Q4_1's minimums), per block: the
    numbers of interleave_x(quantize_x_q8_0(x)), written in one pass (``_prepare_row_int8``)."""
    nb = x.shape[0] // Q
    xr, nsxo = np.empty(x.shape[0], dtype=np.int8), np.empty(nb, dtype=np.int32)
    dx, dxs = np.empty(nb, dtype=np.float32), np.empty(nb, dtype=np.float32)
    _prepare_row_int8(x, offset, xr, nsxo, dx, dxs)
    return xr, nsxo, dx, dxs


@njit(cache=True)
def _prepare_row_int8(x, offset, xr, nsxo, dx, dxs):
    """prepare_x_int8 into the given arrays (xr: at least in bytes). Each block is rounded as quantize_x_q8_0
    rounds (``round_block``) and its 4-byte chunks stored
    where interleave_x puts them: chunk k (values 4k..4k+3, k = 4h + g) of block 8c + b as the int32 at
    c*64 + g*16 + h*8 + b; tail blocks in order. A 4-row decode step of the 7B shape prepares 4 rows 4 times a
    layer (q/k/v, o, gate/up, down): ~10 ms of ~250 through quantize_x_q8_0 and interleave_x, ~6 ms this way
    (Zen 4, one thread: 4 rows of 14336 in 158 -> 93 us, docs/performance.md, fourteenth session)."""
    nb = x.shape[0] // Q
    full = nb // V * V
    q = np.empty(Q, np.int8)
    q32, xr32 = q.view(np.int32), xr.view(np.int32)
    for blk in range(nb):
        d, inv = block_scale(x, blk)
        total = round_block(x, blk * Q, np.float32(0.0), inv, q)
        if blk < full:
            c, b = blk // V, blk % V
            for k in range(Q // 4):
                xr32[c * 64 + (k % 4) * 16 + (k // 4) * 8 + b] = q32[k]
        else:
            for k in range(Q // 4):
                xr32[blk * 8 + k] = q32[k]
        nsxo[blk] = -total * offset
        dx[blk] = d
        dxs[blk] = d * np.float32(total)


@njit(cache=True)
def prepare_rows_int8(x, offset):
    """prepare_x_int8 for each row of x (B, in) -> xr (B, in + ROW_PAD) int8, nsxo (B, nb) int32, dx, dxs (B, nb)
    float32; and, for B > 1, the same values again in the 4-row passes' order (rows_nibbles_int8): xp int8, np4
    int32, dp4, sp4 float32, pass p's 4 rows side by side group by group,

        xp[((p*nv + c)*4 + j)*256 + i] = xr[4p + j, c*256 + i]      np4[((p*nv + c)*4 + j)*8 + k] = nsxo[4p + j, 8c + k]

    (dp4, sp4 as np4 from dx, dxs; nv = nb // 8 full groups; a last pass of 3 rows repeats its last row), so that
    the pass reads one activation stream at constant offsets instead of 4 rows' worth of pointers."""
    n, nb = x.shape[0], x.shape[1] // Q
    nv = nb // V
    xr = np.zeros((n, x.shape[1] + ROW_PAD), dtype=np.int8)   # rows 4 KiB apart would alias in L1 (see ROW_PAD)
    nsxo = np.empty((n, nb), dtype=np.int32)
    dx = np.empty((n, nb), dtype=np.float32)
    dxs = np.empty((n, nb), dtype=np.float32)
    for b in range(n):
        _prepare_row_int8(x[b], offset, xr[b], nsxo[b], dx[b], dxs[b])
    passes = _four_row_passes(n)
    xp = np.empty(max(passes * nv * 4 * V * Q, 1), dtype=np.int8)
    np4 = np.empty(max(passes * nv * 4 * V, 1), dtype=np.int32)
    dp4 = np.empty(max(passes * nv * 4 * V, 1), dtype=np.float32)
    sp4 = np.empty(max(passes * nv * 4 * V, 1), dtype=np.float32)
    for p in range(passes):
        for c in range(nv):
            for j in range(4):
                b, s = min(4 * p + j, n - 1), (p * nv + c) * 4 + j
                xp[s * V * Q:(s + 1) * V * Q] = xr[b, c * V * Q:(c + 1) * V * Q]
                np4[s * V:(s + 1) * V] = nsxo[b, c * V:(c + 1) * V]
                dp4[s * V:(s + 1) * V] = dx[b, c * V:(c + 1) * V]
                sp4[s * V:(s + 1) * V] = dxs[b, c * V:(c + 1) * V]
    return xr, nsxo, dx, dxs, xp, np4, dp4, sp4


@njit(cache=True)
def _four_row_passes(n):
    """How many 4-row passes rows_nibbles_int8 makes for n activation rows (none for one row: its own loop)."""
    if n == 1:
        return 0
    return (n - n % 4) // 4 + (1 if n % 4 == 3 else 0)


@njit(cache=True)
def quantize_rows_q8_0(x):
    """quantize_x_q8_0 for each row of x (B, in) -> xq (B, in) int8, dx (B, nb) float32."""
    n, nb = x.shape[0], x.shape[1] // Q
    xq = np.empty(x.shape, dtype=np.int8)
    dx = np.empty((n, nb), dtype=np.float32)
    for b in range(n):
        xq[b], dx[b], _ = quantize_x_q8_0(x[b])
    return xq, dx


@njit(cache=True)
def prepare_rows_float(x, has_m):
    """What the float nibble kernel reads for each row of x (B, in): interleave_x (B, in), and the block sums
    (B, nb) for Q4_1 (summed in order, float32; zeros for Q4_0, which does not read them)."""
    n, nb = x.shape[0], x.shape[1] // Q
    xr = np.empty(x.shape, dtype=np.float32)
    xsum = np.zeros((n, nb), dtype=np.float32)
    for b in range(n):
        xr[b] = interleave_x(x[b])
        if has_m:
            for blk in range(nb):
                s = np.float32(0.0)
                for j in range(Q):
                    s += x[b, blk * Q + j]
                xsum[b, blk] = s
    return xr, xsum


# ---------------------------------------------------------------- Q4_0 / Q4_1, interleaved layout


@njit(cache=True)
def rows_nibbles_int8(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, qs, d, m, has_m, offset, lut, lo_r, hi_r, y):
    """y[b, r] = sum_blocks d dx (sum q xq - offset sum xq) [+ m dx sum xq], rows lo_r..hi_r, for every
    activation row b (B of them: 1 for a decode step, a few for a batched one).

    xr (B, in + ROW_PAD): interleave_x(xq) of each row; nsxo = -offset * sum xq (int32), dx, dxs = dx * sum xq,
    (B, nb); xp, np4, dp4, sp4: the same for the 4-row passes, their rows side by side (prepare_rows_int8). A
    weight row is read from memory once for all B rows: the activation rows go through it 4 at a time (3
    left: a 4-row pass repeating the last, whose work is then done twice with the same bits), then 2 or 1
    left in a pass of their own; each pass splits every group of 8 blocks into nibbles
    once for its rows (the weight row is in L1 after the first pass), each row's 8 float lanes in a register.
    Per row and group: one integer dot product of 8 vector pairs started at -offset * sum xq
    (``dot8_nibbles_split``: vpdpbusd, 512-bit with AVX-512 VNNI, on AVX2 vpmaddubsw/vpmaddwd), one fma with
    d * dx [and one with m * dx sum xq].

    Column tiles: every weight row sweeps all B activation rows, so those must stay in L1. When they are more
    than ``X_TILE`` bytes (4 rows of a 14336-wide down projection: 57 KiB), the columns go in tiles: the
    layout's own (layout.py: 128 blocks, 16 KiB of int8 for 4 rows), or a power-of-2 part of one for more
    rows. ``ROW_CHUNK`` weight rows (the layout's 16-row chunk) go through one tile, each (weight row,
    activation row) keeping its 8 lanes in ``acc`` until the next tile. On Zen 5, 2 threads, 4 rows of the
    4096 x 14336 down projection: 1.2-1.45 ms untiled, 0.82-1.08 ms tiled (the same-bytes 14336 x 4096 gate
    projection, one tile: ~0.7-0.9 ms). 16 KiB is half of Zen 3's L1 (24 KiB ran 7 % faster on Zen 5's 48 KiB
    L1; not taken). A row's lanes see the same fmas in the same order either way. Because a wide weight is
    stored tile by tile, the chunk's pieces of a tile are one stream in memory (in row order they were 16
    pieces 7 KiB apart, which memory served at ~2/3 of one stream's speed, docs/performance.md, thirteenth
    session); one activation row on such a weight goes the same way (a plain row loop would jump between
    the tiles), narrower weights one row after another (``_one_row_int8``).

    The 4-row pass reads its activations from xp, np4, dp4 (sp4), where its rows' groups sit side by side: one
    pointer and constant offsets. Reading them from the 4 rows of xr, nsxo, dx (dxs) instead took 12 pointers,
    more than the registers left: the compiled loop reloaded 7 of them from the stack on every group (95
    instructions a group on Zen 4, 80 this way; one thread, weights in L2, 256 x 4096 Q4_0: 79 -> 97 G
    multiply-adds/s with 4 rows, 80 -> 101 with 8; docs/performance.md, 2026-12-03, eleventh session).

    The integer sums are exact in any order, and a row's float operations are the same in every pass and
    tile: row b of the result has the bits of the one-row product of row b, whatever B is. The passes are
    written out: as helper functions taking the rows' array views, Numba kept reference counting inside the
    inner loop (13x slower, docs/quantization.md).
    """
    out_dim, nb = d.shape
    nv = nb // V
    n, xs, rb = xr.shape[0], xr.shape[1], qs.shape[1]
    # flat views, offsets by hand: a view a row (xr[b], qs[r]) cost ~9 ns a weight row in reference counts
    xf, nf, df, sf = xr.reshape(-1), nsxo.reshape(-1), dx.reshape(-1), dxs.reshape(-1)
    qf, wf, mf = qs.reshape(-1), d.reshape(-1), m.reshape(-1)
    if n == 1 and nb <= TILE_BLOCKS:                      # one decode step, rows in row order: a plain loop
        _one_row_int8(xf, nf, df, sf, qf, wf, mf, has_m, lut, nv, nb, rb, lo_r, hi_r, y)
        return
    left = n % 4                                          # 3 left: a 4-row pass repeating the last; 2: a pair
    n4 = 4 * _four_row_passes(n)                          # the rows the 4-row passes cover
    tile = TILE_GROUPS                                    # groups of 8 blocks a column tile holds: the layout's
    while tile > 1 and tile * n * V * Q > X_TILE:         # tile, or a power-of-2 part of it (never across two)
        tile //= 2
    if nv <= tile:                                        # all groups in one tile (row order, layout.py; tail
        tile, chunk = max(nv, 1), max(hi_r - lo_r, 1)     # blocks past 128 in a tile of their own, at tb): rows
                                                          # in turn, streaming on
    else:                                                 # chunks of the layout's 16 rows
        chunk = ROW_CHUNK
    # 8 lanes for each (weight row, activation row) between tiles; one tile never touches them, so no allocation
    # then (a call can be a group of 16 rows): df stands in
    acc = np.empty(chunk * n * V, dtype=np.float32) if nv > tile else df
    r0 = lo_r
    while r0 < hi_r:
        r1 = min(r0 - r0 % chunk + chunk, hi_r) if nv > tile else hi_r   # (a group may start inside a chunk)
        for c0 in range(0, max(nv, 1), tile):             # (no full group: one empty tile, then the tail)
            c1 = min(c0 + tile, nv)
            first, last = c0 == 0, c1 >= nv
            # the whole layout tile: one stream through the chunk's rows; a part of it: the same part two rows on
            ahead = AHEAD if tile == TILE_GROUPS or nv <= tile else 2 * tile_blocks(c0 * V, nb) * 16
            for r in range(r0, r1):
                base = tile_base(r, c0 * V, out_dim, nb)  # where the tile's piece of row r starts, less c0 * 8
                qo, wo, mo, a = base * 16, base, base if has_m else 0, (r - r0) * n * V
                tb = tile_base(r, nv * V, out_dim, nb) if last else 0   # the same for the tail blocks (their tile),
                tq, tw, tm = tb * 16, tb, tb if has_m else 0             # read after the last tile
                for b in range(0, n4, 4):                 # 4 rows at a time
                    j0, j1, j2, j3 = b, min(b + 1, n - 1), min(b + 2, n - 1), min(b + 3, n - 1)
                    pg = b // 4 * nv                      # the pass's first group in xp, np4, dp4, sp4
                    y0 = zero_f32x8() if first else load_f32x8(acc, a + j0 * V)
                    y1 = zero_f32x8() if first else load_f32x8(acc, a + j1 * V)
                    y2 = zero_f32x8() if first else load_f32x8(acc, a + j2 * V)
                    y3 = zero_f32x8() if first else load_f32x8(acc, a + j3 * V)
                    for c in range(c0, c1):
                        g = qo + c * 128
                        _prefetch_group(qf, g, wf, wo + c * V, mf, mo + c * V, has_m, ahead)
                        us = _nibbles(qf, g)
                        dw = load_f16x8(wf, wo + c * V)
                        o, e = (pg + c) * 4 * V * Q, (pg + c) * 4 * V    # row j of the group: o + j*256, e + j*8
                        i0 = dot8_nibbles_split(load_i32x8(np4, e), us, _pieces8(xp, o))
                        i1 = dot8_nibbles_split(load_i32x8(np4, e + 8), us, _pieces8(xp, o + 256))
                        i2 = dot8_nibbles_split(load_i32x8(np4, e + 16), us, _pieces8(xp, o + 512))
                        i3 = dot8_nibbles_split(load_i32x8(np4, e + 24), us, _pieces8(xp, o + 768))
                        y0 = fma_f32x8(cvt_i32x8(i0), mul_f32x8(dw, load_f32x8(dp4, e)), y0)
                        y1 = fma_f32x8(cvt_i32x8(i1), mul_f32x8(dw, load_f32x8(dp4, e + 8)), y1)
                        y2 = fma_f32x8(cvt_i32x8(i2), mul_f32x8(dw, load_f32x8(dp4, e + 16)), y2)
                        y3 = fma_f32x8(cvt_i32x8(i3), mul_f32x8(dw, load_f32x8(dp4, e + 24)), y3)
                        if has_m:
                            mw = load_f16x8(mf, mo + c * V)
                            y0 = fma_f32x8(mw, load_f32x8(sp4, e), y0)
                            y1 = fma_f32x8(mw, load_f32x8(sp4, e + 8), y1)
                            y2 = fma_f32x8(mw, load_f32x8(sp4, e + 16), y2)
                            y3 = fma_f32x8(mw, load_f32x8(sp4, e + 24), y3)
                    x0, x1, x2, x3 = j0 * xs, j1 * xs, j2 * xs, j3 * xs   # the tail blocks: the rows of xr, nsxo, ...
                    e0, e1, e2, e3 = j0 * nb, j1 * nb, j2 * nb, j3 * nb
                    if last:                              # row j3 = j2 when repeated: the same bits twice
                        y[j0, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x0, nf, df, sf, e0, y0)
                        y[j1, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x1, nf, df, sf, e1, y1)
                        y[j2, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x2, nf, df, sf, e2, y2)
                        y[j3, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x3, nf, df, sf, e3, y3)
                    else:
                        store_f32x8(acc, a + j0 * V, y0)
                        store_f32x8(acc, a + j1 * V, y1)
                        store_f32x8(acc, a + j2 * V, y2)
                        store_f32x8(acc, a + j3 * V, y3)
                if left == 2:                             # the last two rows
                    j0, j1 = n - 2, n - 1
                    x0, x1, e0, e1 = j0 * xs, j1 * xs, j0 * nb, j1 * nb
                    y0 = zero_f32x8() if first else load_f32x8(acc, a + j0 * V)
                    y1 = zero_f32x8() if first else load_f32x8(acc, a + j1 * V)
                    for c in range(c0, c1):
                        g = qo + c * 128
                        _prefetch_group(qf, g, wf, wo + c * V, mf, mo + c * V, has_m, ahead)
                        us = _nibbles(qf, g)
                        dw, o, cv = load_f16x8(wf, wo + c * V), c * 256, c * V
                        i0 = dot8_nibbles_split(load_i32x8(nf, e0 + cv), us, _pieces8(xf, x0 + o))
                        i1 = dot8_nibbles_split(load_i32x8(nf, e1 + cv), us, _pieces8(xf, x1 + o))
                        y0 = fma_f32x8(cvt_i32x8(i0), mul_f32x8(dw, load_f32x8(df, e0 + cv)), y0)
                        y1 = fma_f32x8(cvt_i32x8(i1), mul_f32x8(dw, load_f32x8(df, e1 + cv)), y1)
                        if has_m:
                            mw = load_f16x8(mf, mo + cv)
                            y0 = fma_f32x8(mw, load_f32x8(sf, e0 + cv), y0)
                            y1 = fma_f32x8(mw, load_f32x8(sf, e1 + cv), y1)
                    if last:
                        y[j0, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x0, nf, df, sf, e0, y0)
                        y[j1, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x1, nf, df, sf, e1, y1)
                    else:
                        store_f32x8(acc, a + j0 * V, y0)
                        store_f32x8(acc, a + j1 * V, y1)
                if left == 1:                             # the last row
                    j0 = n - 1
                    x0, e0 = j0 * xs, j0 * nb
                    y0 = zero_f32x8() if first else load_f32x8(acc, a + j0 * V)
                    for c in range(c0, c1):
                        g = qo + c * 128
                        _prefetch_group(qf, g, wf, wo + c * V, mf, mo + c * V, has_m, ahead)
                        us = _nibbles(qf, g)
                        dw, o, cv = load_f16x8(wf, wo + c * V), c * 256, c * V
                        i0 = dot8_nibbles_split(load_i32x8(nf, e0 + cv), us, _pieces8(xf, x0 + o))
                        y0 = fma_f32x8(cvt_i32x8(i0), mul_f32x8(dw, load_f32x8(df, e0 + cv)), y0)
                        if has_m:
                            y0 = fma_f32x8(load_f16x8(mf, mo + cv), load_f32x8(sf, e0 + cv), y0)
                    if last:
                        y[j0, r] = _int8_tail(qf, tq, wf, tw, mf, tm, has_m, lut, nv, nb, xf, x0, nf, df, sf, e0, y0)
                    else:
                        store_f32x8(acc, a + j0 * V, y0)
        r0 = r1


@njit(cache=True)
def _one_row_int8(xf, nf, df, sf, qf, wf, mf, has_m, lut, nv, nb, rb, lo_r, hi_r, y):
    """rows_nibbles_int8 for one activation row (flat arrays, as there): rows lo_r..hi_r in turn, the same
    arithmetic as the one-row pass there (which B > 1 runs for its last row)."""
    for r in range(lo_r, hi_r):
        qo, wo, mo = r * rb, r * nb, r * nb if has_m else 0
        y0 = zero_f32x8()
        for c in range(nv):
            g = qo + c * 128
            _prefetch_group(qf, g, wf, wo + c * V, mf, mo + c * V, has_m, AHEAD)
            us = _nibbles(qf, g)
            dw, o, cv = load_f16x8(wf, wo + c * V), c * 256, c * V
            i0 = dot8_nibbles_split(load_i32x8(nf, cv), us, _pieces8(xf, o))
            y0 = fma_f32x8(cvt_i32x8(i0), mul_f32x8(dw, load_f32x8(df, cv)), y0)
            if has_m:
                y0 = fma_f32x8(load_f16x8(mf, mo + cv), load_f32x8(sf, cv), y0)
        y[0, r] = _int8_tail(qf, qo, wf, wo, mf, mo, has_m, lut, nv, nb, xf, 0, nf, df, sf, 0, y0)


@njit(cache=True, inline="always")
def _prefetch_group(qf, g, wf, w, mf, mo, has_m, ahead):
    """Prefetch, ``ahead`` weight bytes on, what a group of 8 blocks reads: its two cache lines of nibbles at
    qf[g:], and its 8 scales at wf[w:] (Q4_1: minimums at mf[mo:]), 16 nibble bytes a scale, so ahead // 16
    scales on. The scales are a separate stream, which the column tiles read in short pieces the hardware
    prefetcher does not foresee."""
    prefetch(qf, g + ahead)
    prefetch(qf, g + ahead + 64)
    prefetch(wf, w + ahead // 16)
    if has_m:
        prefetch(mf, mo + ahead // 16)


@njit(cache=True)
def _nibbles(q, o):
    """The 8 nibble vectors of the group at byte o of a nibble-layout weight (flat), facing _pieces8's order:
    piece 2g + h is the low (h = 0) or high (h = 1) nibbles of the group's 32-byte vector g. (gemm.py's
    micro-kernels use it too.)"""
    v0, v1 = load_i8x32(q, o), load_i8x32(q, o + 32)
    v2, v3 = load_i8x32(q, o + 64), load_i8x32(q, o + 96)
    return (nib_lo(v0), nib_hi(v0), nib_lo(v1), nib_hi(v1), nib_lo(v2), nib_hi(v2), nib_lo(v3), nib_hi(v3))


@njit(cache=True, inline="always")
def _pieces8(x, o):
    """The 8 vectors of 32 activation bytes at x[o:o + 256]: one group of the interleaved order."""
    return (load_i8x32(x, o), load_i8x32(x, o + 32), load_i8x32(x, o + 64), load_i8x32(x, o + 96),
            load_i8x32(x, o + 128), load_i8x32(x, o + 160), load_i8x32(x, o + 192), load_i8x32(x, o + 224))


@njit(cache=True, inline="always")
def _int8_tail(qf, qo, wf, wo, mf, mo, has_m, lut, nv, nb, xf, xo, nf, df, sf, e, yv):
    """The blocks after the last full group (ggml order, one block per vector), then the sum of the lanes; a
    weight row at qf[qo:], wf[wo:] (mf[mo:]), an activation row at xf[xo:], nf / df / sf[e:] (flat views)."""
    tail = np.float32(0.0)
    for blk in range(nv * V, nb):
        acc = dpbusd(zero_i32x8(), load_nibbles16(qf, qo + blk * 16), load_i8x32(xf, xo + blk * Q))
        scale = lut[wf[wo + blk]] * df[e + blk]
        yv = fma_f32x8(cvt_i32x8(acc), splat_f32x8(scale), yv)
        tail += np.float32(nf[e + blk]) * scale
        if has_m:
            tail += lut[mf[mo + blk]] * sf[e + blk]
    return hsum_f32x8(yv) + tail


@njit(cache=True, fastmath={"contract"})
def rows_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, lo_r, hi_r, y):
    """y[b, r] = sum_blocks d sum_j (q_j - offset) x_j [+ m sum_j x_j], float32 lanes, for every row b.

    xr (B, in): interleave_x of each row; xsum (B, nb): the rows' block sums (Q4_1). Lane i of accumulator
    a_p holds byte position i of the 8-byte piece p: blocks 2p and 2p + 1, so the scales are expanded 4
    times each. As in rows_nibbles_int8, a weight row is read once for all rows, each row's arithmetic
    does not depend on B.
    """
    out_dim, nb = d.shape
    nv = nb // V
    q, dr, mr = qs.reshape(-1), d.reshape(-1), m.reshape(-1)   # flat: blocks where layout.block_at puts them
    for r in range(lo_r, hi_r):
        for b in range(xr.shape[0]):
            xrb, xsb = xr[b], xsum[b]
            yv, tail = zero_f32x8(), np.float32(0.0)
            for t0 in range(0, nv, TILE_GROUPS):          # the layout's tiles (one, for rows of <= 128 blocks)
                so = tile_base(r, t0 * V, out_dim, nb)    # row r's piece of the tile, less t0 * 8 blocks
                qo = so * 16
                for c in range(t0, min(t0 + TILE_GROUPS, nv)):
                    prefetch(q, qo + c * 128 + AHEAD)
                    prefetch(q, qo + c * 128 + AHEAD + 64)
                    a0, a1, a2, a3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
                    for g in range(4):
                        v = load_i8x32(q, qo + c * 128 + g * 32)
                        xo = c * 256 + g * 64
                        l0, l1, l2, l3 = i8x32_to_f32x8x4(sub_i8(nib_lo(v), offset))
                        a0, a1 = fma_f32x8(l0, load_f32x8(xrb, xo), a0), fma_f32x8(l1, load_f32x8(xrb, xo + 8), a1)
                        a2, a3 = fma_f32x8(l2, load_f32x8(xrb, xo + 16), a2), fma_f32x8(l3, load_f32x8(xrb, xo + 24), a3)
                        h0, h1, h2, h3 = i8x32_to_f32x8x4(sub_i8(nib_hi(v), offset))
                        a0, a1 = fma_f32x8(h0, load_f32x8(xrb, xo + 32), a0), fma_f32x8(h1, load_f32x8(xrb, xo + 40), a1)
                        a2, a3 = fma_f32x8(h2, load_f32x8(xrb, xo + 48), a2), fma_f32x8(h3, load_f32x8(xrb, xo + 56), a3)
                    e0, e1, e2, e3 = expand4_f32x8(load_f16x8(dr, so + c * V))
                    yv = fma_f32x8(a3, e3, fma_f32x8(a2, e2, fma_f32x8(a1, e1, fma_f32x8(a0, e0, yv))))
                    if has_m:
                        yv = fma_f32x8(load_f16x8(mr, so + c * V), load_f32x8(xsb, c * V), yv)
            to = tile_base(r, nv * V, out_dim, nb)        # the tail blocks' tile
            for blk in range(nv * V, nb):  # tail blocks, ggml order: one block per vector
                q0, q1, q2, q3 = i8x32_to_f32x8x4(sub_i8(load_nibbles16(q, (to + blk) * 16), offset))
                s = fma_f32x8(q3, load_f32x8(xrb, blk * Q + 24), fma_f32x8(q2, load_f32x8(xrb, blk * Q + 16),
                              fma_f32x8(q1, load_f32x8(xrb, blk * Q + 8), mul_f32x8(q0, load_f32x8(xrb, blk * Q)))))
                yv = fma_f32x8(s, splat_f32x8(lut[dr[to + blk]]), yv)
                if has_m:
                    tail += lut[mr[to + blk]] * xsb[blk]
            y[b, r] = hsum_f32x8(yv) + tail


@njit(parallel=True, cache=True, nogil=True)
def gemv_nibbles_int8(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, qs, d, m, has_m, offset, lut, n_groups):
    y = np.empty((xr.shape[0], d.shape[0]), dtype=np.float32)
    for grp in prange(n_groups):
        _gemv_group(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, (qs, d, m, has_m, offset), y, grp, n_groups)
    return y


@njit(parallel=True, cache=True, nogil=True)
def gemv3_nibbles_int8(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, w0, w1, w2, y0, y1, y2, n0, n1, n2):
    """gemv_nibbles_int8 for two or three weights that read the same prepared rows (q, k, v; gate, up), in one
    parallel region: weight i's rows in n_i groups (n_2 = 0 for two weights; a weight small enough to run on
    the calling thread alone is one group), all the groups handed out together. w_i = (qs, d, m, has_m,
    offset) with one offset; y_i (B, out_i) written in place, row by row as gemv_nibbles_int8 writes them (the
    same bits). One region instead of one a weight: SmolLM2's decode step started 180 parallel regions a token
    (6 a layer), each ~10 us, and ran its 192-row k and v projections on one thread."""
    for t in prange(n0 + n1 + n2):
        if t < n0:
            _gemv_group(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, w0, y0, t, n0)
        elif t < n0 + n1:
            _gemv_group(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, w1, y1, t - n0, n1)
        else:
            _gemv_group(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, w2, y2, t - n0 - n1, n2)


@njit(cache=True, inline="always")
def _gemv_group(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, lut, w, y, g, n):
    """Group g of n of weight w's rows (gemv_nibbles_int8's split) into y."""
    qs, d, m, has_m, offset = w
    out_dim = d.shape[0]
    rows_nibbles_int8(xr, nsxo, dx, dxs, xp, np4, dp4, sp4, qs, d, m, has_m, offset, lut, g * out_dim // n,
                      (g + 1) * out_dim // n, y)


@njit(parallel=True, cache=True, nogil=True)
def gemv_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, n_groups):
    out_dim = d.shape[0]
    y = np.empty((xr.shape[0], out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        rows_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, grp * out_dim // n_groups,
                           (grp + 1) * out_dim // n_groups, y)
    return y


# ---------------------------------------------------------------- Q8_0, ggml's bytes (34 per block)


@njit(cache=True)
def rows_q8_0_int8(xq, dx, blocks, lut, lo_r, hi_r, y):
    """y[b, r] = sum_blocks d dx sum_k q_k xq_k, exact int32 block dots (|q| <= 128, |xq| <= 127), for
    every row b of xq (B, in), dx (B, nb): as rows_nibbles_int8, the activation rows go through a weight row
    4 at a time (then 2 or 1 left), the weight block's bytes and scale read once per pass, each row's lanes
    in a register, each row's float operations the same whatever B is."""
    nb = blocks.shape[1] // Q8_0_BYTES
    n = xq.shape[0]
    left = n % 4                                          # as rows_nibbles_int8
    for r in range(lo_r, hi_r):
        row = blocks[r]
        for b in range(0, n - left + (4 if left == 3 else 0), 4):    # 4 rows at a time
            j0, j1, j2, j3 = b, min(b + 1, n - 1), min(b + 2, n - 1), min(b + 3, n - 1)
            x0, x1, x2, x3, d0, d1, d2, d3 = xq[j0], xq[j1], xq[j2], xq[j3], dx[j0], dx[j1], dx[j2], dx[j3]
            y0, y1, y2, y3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
            for blk in range(nb):
                o = blk * Q8_0_BYTES
                prefetch(row, o + AHEAD)
                v = load_i8x32(row, o + 2)
                u, dw, k = abs_i8(v), lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)], blk * Q
                y0 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x0, k), v))), splat_f32x8(dw * d0[blk]), y0)
                y1 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x1, k), v))), splat_f32x8(dw * d1[blk]), y1)
                y2 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x2, k), v))), splat_f32x8(dw * d2[blk]), y2)
                y3 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x3, k), v))), splat_f32x8(dw * d3[blk]), y3)
            y[j0, r], y[j1, r], y[j2, r], y[j3, r] = hsum_f32x8(y0), hsum_f32x8(y1), hsum_f32x8(y2), hsum_f32x8(y3)
        if left == 2:                                     # the last two rows
            j0, j1 = n - 2, n - 1
            x0, x1, d0, d1 = xq[j0], xq[j1], dx[j0], dx[j1]
            y0, y1 = zero_f32x8(), zero_f32x8()
            for blk in range(nb):
                o = blk * Q8_0_BYTES
                prefetch(row, o + AHEAD)
                v = load_i8x32(row, o + 2)
                u, dw, k = abs_i8(v), lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)], blk * Q
                y0 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x0, k), v))), splat_f32x8(dw * d0[blk]), y0)
                y1 = fma_f32x8(cvt_i32x8(dpbusd(zero_i32x8(), u, sign_i8(load_i8x32(x1, k), v))), splat_f32x8(dw * d1[blk]), y1)
            y[j0, r], y[j1, r] = hsum_f32x8(y0), hsum_f32x8(y1)
        if left == 1:                                     # the last row
            b = n - 1
            xb, db = xq[b], dx[b]
            yv = zero_f32x8()
            for blk in range(nb):
                o = blk * Q8_0_BYTES
                prefetch(row, o + AHEAD)
                v = load_i8x32(row, o + 2)
                acc = dpbusd(zero_i32x8(), abs_i8(v), sign_i8(load_i8x32(xb, blk * Q), v))
                scale = lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)] * db[blk]
                yv = fma_f32x8(cvt_i32x8(acc), splat_f32x8(scale), yv)
            y[b, r] = hsum_f32x8(yv)


@njit(cache=True, fastmath={"contract"})
def rows_q8_0_float(x, blocks, lut, lo_r, hi_r, y):
    """y[b, r] = sum_blocks d sum_k q_k x_k in float32 lanes, for every row b of x (B, in)."""
    nb = blocks.shape[1] // Q8_0_BYTES
    for r in range(lo_r, hi_r):
        row = blocks[r]
        for b in range(x.shape[0]):
            xb = x[b]
            yv = zero_f32x8()
            for blk in range(nb):
                o = blk * Q8_0_BYTES
                prefetch(row, o + AHEAD)
                q0, q1, q2, q3 = i8x32_to_f32x8x4(load_i8x32(row, o + 2))
                s = fma_f32x8(q3, load_f32x8(xb, blk * Q + 24), fma_f32x8(q2, load_f32x8(xb, blk * Q + 16),
                              fma_f32x8(q1, load_f32x8(xb, blk * Q + 8), mul_f32x8(q0, load_f32x8(xb, blk * Q)))))
                yv = fma_f32x8(s, splat_f32x8(lut[np.uint16(row[o]) | (np.uint16(row[o + 1]) << 8)]), yv)
            y[b, r] = hsum_f32x8(yv)


@njit(parallel=True, cache=True, nogil=True)
def gemv_q8_0_int8(xq, dx, blocks, lut, n_groups):
    out_dim = blocks.shape[0]
    y = np.empty((xq.shape[0], out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        rows_q8_0_int8(xq, dx, blocks, lut, grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups, y)
    return y


@njit(parallel=True, cache=True, nogil=True)
def gemv_q8_0_float(x, blocks, lut, n_groups):
    out_dim = blocks.shape[0]
    y = np.empty((x.shape[0], out_dim), dtype=np.float32)
    for grp in prange(n_groups):
        rows_q8_0_float(x, blocks, lut, grp * out_dim // n_groups, (grp + 1) * out_dim // n_groups, y)
    return y
