"""The fused decode step: one compiled call per step for every layer, a twin of ``hidden_states`` at T = 1.

Why. At 135M parameters (SmolLM2) a token's weights are ~100 MB, read in a few milliseconds, while
the readable path (model/) makes a dozen NumPy and kernel calls per layer, each with Python's overhead:
30 layers x ~25 calls cost more than the arithmetic. Here the whole stack of layers runs inside one
Numba function over preallocated buffers, calling the same decode kernels (quant/fast/decode.py) for
the matmuls; the model code stays as it is and this file is checked against it
(tests/test_fused_decode.py, with sequences longer than the window).

What it computes, for the token at position p (its embedding x, D values), layer by layer::

    a   = rms_norm(x) * w_in                        model/rmsnorm.py
    q, k, v = a Wq^T, a Wk^T, a Wv^T                decode.rows_* / gemv_* (the same kernels as ``linear``)
    q, k = rope(q, p), rope(k, p)                   half-split pairs, cos/sin from model/rope.py
    cache[l] slot p % slots <- k, v; slot_pos = p   model/kv_cache.py (way 1: decode writes first)
    o_h = softmax(q_h K^T / sqrt(Dh), visible) V    keys with p - W < pos <= p, KV head h // G (model/gqa.py)
    x  += o Wo^T
    x  += down(silu(gate(b)) * up(b)),  b = rms_norm(x) * w_post        model/mlp.py

    -> x after the last layer (the final norm and the LM head stay in generation/loop.py)

Several tokens at once (``hidden_states``, for generation/batch.py and the server): B tokens, each at its own
position over its own cache, in one call. The lines above run row by row, except the matmuls, which take all B
rows in one call of the decode kernel, so each weight is read once for all of them (decode is bound by memory:
4 rows cost far less than 4 steps). The kernels do each row's arithmetic as for one row, and so does
everything else here, so row b has exactly the bits of a one-token step of token b
(tests/test_batch_decode.py).

Which weights. Every per-layer matrix must be Q4_0 or Q4_1 (the interleaved layout, layout.py), as in
mistral-np quantize's output and in Q4_0/Q4_1 GGUF files; ``fused_decoder`` returns None for anything
else and generation falls back to the readable path. ``activations``: "int8" (llama.cpp's, the default
decode path) or "float" (the exact kernels), as ``decode_params``.

Numbers. The matmuls are the same kernels on the same inputs; RMSNorm's mean, the attention's sums and
the softmax are summed in another order than NumPy's, the exponentials are fastmath.py's (8 lanes at a time,
within 2 units in the last place of exp), and SiLU's sigmoid is written with exp where model/ops.py uses tanh
(fastmath.py:silu_mul, as the prompt's MLP), so results agree to float32 rounding, not bit for bit: the tests bound the float variant against float64 like the readable float32 path, and check the
int8 variant against the readable int8 decode.

next: back to loop.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from ..errors import InvalidArgumentError
from ..fastmath import exp_rows, silu_mul
from ..model.ops import take_rows
from ..model.rmsnorm import rms_norm
from ..model.rope import rope_tables
from ..quant.fast import decode
from ..quant.fast.kernels import F16_TO_F32, decode_groups
from ..quant.fast.simd import (add_f32x8, fma_f32x8, hsum_f32x8, load_f32x8, mul_f32x8, splat_f32x8, store_f32x8,
                               zero_f32x8)
from ..quant.tensor import ActivationsView, _NibbleTensor


class Matrix(NamedTuple):
    """A Q4_0/Q4_1 weight in the interleaved layout, as the kernels take it."""

    qs: np.ndarray
    d: np.ndarray
    m: np.ndarray
    has_m: bool
    offset: int
    n_groups: int  # 0: run on the calling thread (small), else row groups for the parallel kernel


_NO_M = np.zeros((1, 1), dtype=np.uint16)


def _matrix(w) -> Matrix | None:
    base = w.base if isinstance(w, ActivationsView) else w
    if not isinstance(base, _NibbleTensor):
        return None
    lay = base.prepare()._layout
    return Matrix(lay.qs, lay.d, lay.m if lay.m is not None else _NO_M, lay.m is not None, lay.offset,
                  decode_groups(lay.d.shape[0], lay.nbytes))


MAX_ROWS = 8  # rows per compiled call: the caches go in as tuples of this length (padded), whatever B is, so
              # the step compiles once (~30 s) and not once per row count


class FusedDecoder:
    """Built once per generation (or server) from the decode weights; ``step(x, caches)`` runs every layer for one
    token of each of B sequences."""

    def __init__(self, layers: tuple, cfg, activations: str):
        self.layers, self.cfg, self.int8 = layers, cfg, activations == "int8"
        self.window = -1 if cfg.sliding_window is None else int(cfg.sliding_window)
        self.per_head_slots = PER_HEAD_SLOTS  # _attention's switch to one query head a work item (same bits)

    def per_head(self, caches: list, ps: np.ndarray) -> bool:
        """Whether the step's attention takes one query head a work item (_attention): when the (row, KV head)
        items are fewer than 4 a thread and some row sees at least ``per_head_slots`` slots."""
        longest = max(min(c.slots, int(p) + 1) for c, p in zip(caches, ps))
        return (len(caches) * self.cfg.num_key_value_heads < 4 * numba.get_num_threads()
                and longest >= self.per_head_slots)

    def hidden_state(self, params, ids: np.ndarray, cache) -> np.ndarray:
        """``model.forward.hidden_states`` for one token id (1,) over ``cache``: embedding, the layers, the
        final norm.  -> (1, D)"""
        return self.hidden_states(params, ids, [cache])

    def hidden_states(self, params, ids: np.ndarray, caches: list) -> np.ndarray:
        """The same for B sequences at once, token ``ids[b]`` over ``caches[b]`` (each at its own position):
        one compiled call, every weight read once for all B rows, row b exactly ``hidden_state(ids[b:b+1],
        caches[b])``.  (B,) -> (B, D)"""
        x = take_rows(params.embed_tokens, ids).astype(np.float32, copy=False)     # (B,) -> (B, D)
        return rms_norm(self.step(x, caches), params.norm, self.cfg.rms_norm_eps)

    def step(self, x: np.ndarray, caches: list) -> np.ndarray:
        """x (B, D) float32 embeddings of the tokens at caches[b].next_position -> (B, D) after the last layer.
        Up to MAX_ROWS rows in one compiled call, more in several."""
        cfg = self.cfg
        if len(caches) != len(x) or len({id(c) for c in caches}) != len(caches):
            raise InvalidArgumentError(f"the fused step takes one distinct cache per row: {len(x)} rows, "
                                       f"{len(caches)} caches")
        if len(x) > MAX_ROWS:
            return np.concatenate([self.step(x[i:i + MAX_ROWS], caches[i:i + MAX_ROWS])
                                   for i in range(0, len(x), MAX_ROWS)])
        ps = np.array([c.next_position for c in caches], dtype=np.int64)
        for c, p in zip(caches, ps):
            if p >= c.max_len:
                raise InvalidArgumentError(f"KV cache full: position {p} does not fit in max_len={c.max_len}")
        # per row, as for one token: each row's angles are computed exactly as in a one-row step
        tables = [rope_tables(ps[b:b + 1], cfg.head_dim, cfg.rope_theta, np.float32) for b in range(len(ps))]
        cos, sin = np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables])   # (B, Dh/2)
        chunk = numba.set_parallel_chunksize(1)   # row groups handed out one at a time, as kernels.py's decode
        try:
            padded = caches + caches[:1] * (MAX_ROWS - len(caches))   # one tuple length: one compiled function
            out = _decode_layers(np.ascontiguousarray(x, dtype=np.float32), self.layers, tuple(c.k for c in padded),
                                 tuple(c.v for c in padded), tuple(c.slot_pos for c in padded), ps, cos, sin,
                                 np.float32(cfg.rms_norm_eps), cfg.num_attention_heads, cfg.num_key_value_heads,
                                 cfg.head_dim, self.window, self.int8, F16_TO_F32, self.per_head(caches, ps))
        finally:
            numba.set_parallel_chunksize(chunk)
        for c, p in zip(caches, ps):
            c.seen[:] = p + 1
        return out


def fused_decoder(params, cfg, activations: str, dtype=np.float32) -> FusedDecoder | None:
    """A FusedDecoder for these decode weights, or None if some layer matrix is not Q4_0/Q4_1 (or the model
    does not compute in float32): then generation uses the readable path."""
    if np.dtype(dtype) != np.float32:
        return None
    layers = []
    for layer in params.layers:
        mats = [_matrix(getattr(layer, f)) for f in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj")]
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if any(m is None for m in mats) or not all(isinstance(n, np.ndarray) and n.dtype == np.float32 for n in norms):
            return None
        layers.append((norms[0], *mats[:4], norms[1], *mats[4:]))
    return FusedDecoder(tuple(layers), cfg, activations)


# ---------------------------------------------------------------- the compiled step


@njit(cache=True)
def _rms_norm(x, w, eps, out):
    """out = x / sqrt(mean(x^2) + eps) * w, float32 (the mean summed in float64)."""
    s = 0.0
    for i in range(x.shape[0]):
        s += np.float64(x[i]) * np.float64(x[i])
    ms = np.float32(s / x.shape[0])
    r = np.float32(np.sqrt(ms + eps))
    for i in range(x.shape[0]):
        out[i] = x[i] / r * w[i]


@njit(cache=True)
def _matvecs(x, mats, ys, int8, lut):
    """ys[i] = x @ mats[i]^T for the B rows of x (B, in), with decode.py's kernels: x prepared once for all the
    weights that read it (q, k, v; gate, up), each weight read once for all rows, in row groups in parallel; the
    weights of one input in one parallel region (decode.gemv3_nibbles_int8: SmolLM2's step 3.7-6 % faster,
    docs/performance.md, seventeenth session), a single small weight serially.  -> ys[i] (B, out_i)"""
    offset = mats[0].offset
    if int8:
        a = decode.prepare_rows_int8(x, offset)             # (xr, nsxo, dx, dxs, and the 4-row passes' copies)
    if int8 and len(mats) > 1 and mats[1].offset == offset and mats[-1].offset == offset:
        last = mats[-1]                                     # (mats[2] would not compile for two weights)
        n2 = max(last.n_groups, 1) if len(mats) == 3 else 0
        decode.gemv3_nibbles_int8(*a, lut, _parts(mats[0]), _parts(mats[1]), _parts(last), ys[0], ys[1], ys[-1],
                                  max(mats[0].n_groups, 1), max(mats[1].n_groups, 1), n2)
    elif int8:
        for i in range(len(mats)):
            qs, d, m, has_m, off, n_groups = mats[i]
            if off != offset:                                # Q4_0 and Q4_1 mixed: -offset * sum xq differs
                a = decode.prepare_rows_int8(x, off)
                offset = off
            if n_groups == 0:
                decode.rows_nibbles_int8(*a, qs, d, m, has_m, off, lut, 0, d.shape[0], ys[i])
            else:
                ys[i][:] = decode.gemv_nibbles_int8(*a, qs, d, m, has_m, off, lut, n_groups)
    else:
        xr, xsum = decode.prepare_rows_float(x, True)
        for i in range(len(mats)):
            qs, d, m, has_m, off, n_groups = mats[i]
            if n_groups == 0:
                decode.rows_nibbles_float(xr, xsum, qs, d, m, has_m, off, lut, 0, d.shape[0], ys[i])
            else:
                ys[i][:] = decode.gemv_nibbles_float(xr, xsum, qs, d, m, has_m, off, lut, n_groups)


@njit(cache=True, inline="always")
def _parts(w):
    """A Matrix as gemv3_nibbles_int8 takes it."""
    return w.qs, w.d, w.m, w.has_m, w.offset


@njit(cache=True)
def _rope(x, n_heads, dh, cos, sin):
    """Rotate each head of x (n_heads * dh,) in place, half-split pairs (model/rope.py:apply_rope)."""
    half = dh // 2
    for h in range(n_heads):
        o = h * dh
        for i in range(half):
            x1, x2 = x[o + i], x[o + half + i]
            x[o + i] = x1 * cos[i] - x2 * sin[i]
            x[o + half + i] = x2 * cos[i] + x1 * sin[i]


@njit(cache=True)
def _attend_group(q, kc, vc, slot_pos, p, window, kv, h0, g, dh, out):
    """Query heads h0..h0+g-1, all of KV head kv: out_h (dh,) = softmax(q_h K^T / sqrt(dh)) V over the visible
    slots. (A head's arithmetic does not depend on which others are computed with it.)

    Each key is loaded once for the g heads; a score is a dot product of 8 float32 lanes (dh/8 fmas, then the
    lanes summed), four slots' scores side by side (four independent chains of fmas where one slot at a time
    waited on each fma's latency: 30 SmolLM2 layers at 576 positions, 7-31 % faster, 4.4-4.6 against 5.0-6.7 ms,
    the same bits; docs/performance.md, 2026-12-04), then the slots the query cannot see set to -inf. The
    softmax is in float32 with the largest score subtracted, and the values are accumulated slot by slot, each
    output lane w_0 v_0 + w_1 v_1 + ... in slot order (a multiply, then an add: model/gqa.py's sums, in order):
    per head, 32 lanes at a time in 4 registers over all the slots (then 8 at a time, then one by one for
    dh mod 8). Accumulating in the output row itself, a load and a store per lane and
    slot, took 2.7x as long at dh = 64 (25 against 9 ns per head and slot, 600 slots; dh = 128: 50 against 27)."""
    slots = min(slot_pos.shape[0], p + 1)  # position q lives in slot q % slots: slots past p hold nothing visible
    scale = np.float32(1.0 / math.sqrt(dh))
    vec = dh // 8 * 8
    scores = np.empty((g, slots), dtype=np.float32)
    kf, kstride = kc.reshape(-1), kc.shape[1] * dh         # slot s, KV head kv, lane i at s * kstride + kv * dh + i
    s4 = slots // 4 * 4
    for s in range(0, s4, 4):                             # 4 slots at a time: 4 independent chains of fmas
        b0 = s * kstride + kv * dh
        b1, b2, b3 = b0 + kstride, b0 + 2 * kstride, b0 + 3 * kstride
        for j in range(g):
            o = (h0 + j) * dh
            a0, a1, a2, a3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
            for i in range(0, vec, 8):
                qv = load_f32x8(q, o + i)
                a0 = fma_f32x8(qv, load_f32x8(kf, b0 + i), a0)
                a1 = fma_f32x8(qv, load_f32x8(kf, b1 + i), a1)
                a2 = fma_f32x8(qv, load_f32x8(kf, b2 + i), a2)
                a3 = fma_f32x8(qv, load_f32x8(kf, b3 + i), a3)
            t0, t1, t2, t3 = hsum_f32x8(a0), hsum_f32x8(a1), hsum_f32x8(a2), hsum_f32x8(a3)
            for i in range(vec, dh):
                t0 += q[o + i] * kf[b0 + i]
                t1 += q[o + i] * kf[b1 + i]
                t2 += q[o + i] * kf[b2 + i]
                t3 += q[o + i] * kf[b3 + i]
            scores[j, s], scores[j, s + 1] = t0 * scale, t1 * scale
            scores[j, s + 2], scores[j, s + 3] = t2 * scale, t3 * scale
    for s in range(s4, slots):                            # the last slots one at a time, the same arithmetic
        b0 = s * kstride + kv * dh
        for j in range(g):
            o = (h0 + j) * dh
            acc = zero_f32x8()
            for i in range(0, vec, 8):
                acc = fma_f32x8(load_f32x8(q, o + i), load_f32x8(kf, b0 + i), acc)
            total = hsum_f32x8(acc)
            for i in range(vec, dh):
                total += q[o + i] * kf[b0 + i]
            scores[j, s] = total * scale
    for s in range(slots):                                # what the query cannot see: its slot may hold anything,
        pos = slot_pos[s]                                 # even inf or NaN, whose score is dropped here
        if pos < 0 or pos > p or (window > 0 and p - pos >= window):
            scores[:, s] = -np.inf
    totals = exp_rows(scores)                             # exp(score - row max) in place, 8 lanes at a time
    for j in range(g):
        for s in range(slots):
            scores[j, s] /= totals[j]
    vf, stride = vc.reshape(-1), vc.shape[1] * dh           # slot s, KV head kv, lane i at s * stride + kv * dh + i
    for j in range(g):
        o, i0 = (h0 + j) * dh, 0
        while i0 + 32 <= vec:
            a0, a1, a2, a3 = zero_f32x8(), zero_f32x8(), zero_f32x8(), zero_f32x8()
            for s in range(slots):
                if scores[j, s] == 0.0:                   # not visible (its slot may hold anything, even inf)
                    continue
                w, b = splat_f32x8(scores[j, s]), s * stride + kv * dh + i0
                a0 = add_f32x8(a0, mul_f32x8(w, load_f32x8(vf, b)))
                a1 = add_f32x8(a1, mul_f32x8(w, load_f32x8(vf, b + 8)))
                a2 = add_f32x8(a2, mul_f32x8(w, load_f32x8(vf, b + 16)))
                a3 = add_f32x8(a3, mul_f32x8(w, load_f32x8(vf, b + 24)))
            store_f32x8(out, o + i0, a0)
            store_f32x8(out, o + i0 + 8, a1)
            store_f32x8(out, o + i0 + 16, a2)
            store_f32x8(out, o + i0 + 24, a3)
            i0 += 32
        while i0 + 8 <= vec:
            a0 = zero_f32x8()
            for s in range(slots):
                if scores[j, s] != 0.0:
                    a0 = add_f32x8(a0, mul_f32x8(splat_f32x8(scores[j, s]), load_f32x8(vf, s * stride + kv * dh + i0)))
            store_f32x8(out, o + i0, a0)
            i0 += 8
        for i in range(vec, dh):
            t = np.float32(0.0)
            for s in range(slots):
                if scores[j, s] != 0.0:
                    t += scores[j, s] * vc[s, kv, i]
            out[o + i] = t


PER_HEAD_SLOTS = 256  # from this many slots, too few (row, KV head) items go one query head an item (_attention)


@njit(parallel=True, cache=True, nogil=True)
def _attention(q, k_caches, v_caches, slot_pos, ps, li, window, n_heads, n_kv, dh, out, per_head):
    """Attention of every row over its own cache (layer li): row b's query q[b] at position ps[b] -> out[b]. The (row,
    KV head) pairs run in parallel, or, with ``per_head`` (FusedDecoder.per_head: when they are fewer than 4 a
    thread and some row sees at least PER_HEAD_SLOTS slots), the (row, query head) pairs: SmolLM2's 3 KV heads are 3
    items for 2 threads, one of which then did two; as 9 items, 30 layers at 576 positions took 3.41 against 4.00
    ms, at 1000 5.98 against 7.19, at 320 1.84 against 2.17, but at 192 1.03 against 0.86 and at 128 0.64 against
    0.48 (each query head reads its KV head's keys again; medians of 15, AMD Zen 2, docs/performance.md). Each item
    writes its own heads, with the same arithmetic however the pairs are split (the threshold changes no bit)."""
    n_rows, g = q.shape[0], n_heads // n_kv
    if per_head:
        for t in prange(n_rows * n_heads):
            b, h = t // n_heads, t % n_heads
            _attend_group(q[b], k_caches[b][li], v_caches[b][li], slot_pos[b][li], ps[b], window, h // g, h, 1, dh,
                          out[b])
    else:
        for t in prange(n_rows * n_kv):
            b, kv = t // n_kv, t % n_kv
            _attend_group(q[b], k_caches[b][li], v_caches[b][li], slot_pos[b][li], ps[b], window, kv, kv * g, g, dh,
                          out[b])


@njit(cache=True, nogil=True)  # the GIL is free while the step runs (a server's event loop keeps going)
def _decode_layers(x, layers, k_caches, v_caches, slot_pos, ps, cos, sin, eps, n_heads, n_kv, dh, window, int8, lut,
                   per_head):
    """Every layer for B tokens, row b at position ps[b] over its own cache (k_caches[b], v_caches[b],
    slot_pos[b]: tuples of MAX_ROWS arrays, the first B used), updating the caches in place.  x (B, D) -> (B, D)

    Everything but the matmuls runs row by row; the matmuls take all rows (_matvecs), and each row's
    arithmetic is the same whatever B is, so row b equals a one-row step of that token."""
    n_rows, d_model = x.shape
    x = x.copy()
    a = np.empty((n_rows, d_model), dtype=np.float32)
    q = np.empty((n_rows, n_heads * dh), dtype=np.float32)
    k = np.empty((n_rows, n_kv * dh), dtype=np.float32)
    v = np.empty((n_rows, n_kv * dh), dtype=np.float32)
    att = np.empty((n_rows, n_heads * dh), dtype=np.float32)
    o = np.empty((n_rows, d_model), dtype=np.float32)
    f_dim = layers[0][6].d.shape[0]
    gate = np.empty((n_rows, f_dim), dtype=np.float32)
    up = np.empty((n_rows, f_dim), dtype=np.float32)
    for li in range(len(layers)):
        w_in, wq, wk, wv, wo, w_post, wg, wu, wd = layers[li]
        for b in range(n_rows):
            _rms_norm(x[b], w_in, eps, a[b])
        _matvecs(a, (wq, wk, wv), (q, k, v), int8, lut)
        for b in range(n_rows):
            p, kc, vc, sp = ps[b], k_caches[b], v_caches[b], slot_pos[b]
            _rope(q[b], n_heads, dh, cos[b], sin[b])
            _rope(k[b], n_kv, dh, cos[b], sin[b])
            slot = p % sp.shape[1]
            for h in range(n_kv):
                for i in range(dh):
                    kc[li, slot, h, i] = k[b, h * dh + i]
                    vc[li, slot, h, i] = v[b, h * dh + i]
            sp[li, slot] = p
        _attention(q, k_caches, v_caches, slot_pos, ps, li, window, n_heads, n_kv, dh, att, per_head)
        _matvecs(att, (wo,), (o,), int8, lut)
        x += o
        for b in range(n_rows):
            _rms_norm(x[b], w_post, eps, a[b])
        _matvecs(a, (wg, wu), (gate, up), int8, lut)
        silu_mul(gate, up)                                # gate <- silu(gate) * up (fastmath.py)
        _matvecs(gate, (wd,), (o,), int8, lut)
        x += o
    return x
