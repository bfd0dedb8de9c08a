"""The fused decode step: one compiled call per token for every layer, a twin of ``hidden_states`` at T = 1.

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

Which weights. Every per-layer matrix must be Q4_0 or Q4_1 (the interleaved layout, layout.py), as in
mistral-np quantize's output and in Q4_0/Q4_1 GGUF files; ``fused_decoder`` returns None for anything
else and generation falls back to the readable path. ``activations``: "int8" (llama.cpp's, the default
decode path) or "float" (the exact kernels), as ``decode_params``.

Numbers. The matmuls are the same kernels on the same inputs; RMSNorm's mean, the attention's sums and
the softmax are summed in another order than NumPy's, so results agree to float32 rounding, not bit for
bit: the tests bound the float variant against float64 like the readable float32 path, and check the
int8 variant against the readable int8 decode.

next: back to loop.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ..errors import InvalidArgumentError
from ..model.ops import take_rows
from ..model.rmsnorm import rms_norm
from ..model.rope import rope_tables
from ..quant.fast import decode
from ..quant.fast.kernels import F16_TO_F32, SERIAL_BYTES, _n_groups
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
    n_groups = 0 if lay.nbytes <= SERIAL_BYTES else _n_groups(lay.d.shape[0])
    return Matrix(lay.qs, lay.d, lay.m if lay.m is not None else _NO_M, lay.m is not None, lay.offset, n_groups)


class FusedDecoder:
    """Built once per generation from the decode weights; ``step(x, cache)`` runs every layer for one token."""

    def __init__(self, layers: tuple, cfg, activations: str):
        self.layers, self.cfg, self.int8 = layers, cfg, activations == "int8"
        self.window = -1 if cfg.sliding_window is None else int(cfg.sliding_window)

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
        """x (B, D) float32 embeddings of the tokens at caches[b].next_position -> (B, D) after the last layer."""
        cfg = self.cfg
        if len(caches) != len(x) or len({id(c) for c in caches}) != len(caches):
            raise InvalidArgumentError(f"the fused step takes one distinct cache per row: {len(x)} rows, "
                                       f"{len(caches)} caches")
        ps = np.array([c.next_position for c in caches], dtype=np.int64)
        for c, p in zip(caches, ps):
            if p >= c.max_len:
                raise InvalidArgumentError(f"KV cache full: position {p} does not fit in max_len={c.max_len}")
        # per row, as for one token: each row's angles are computed exactly as in a one-row step
        tables = [rope_tables(ps[b:b + 1], cfg.head_dim, cfg.rope_theta, np.float32) for b in range(len(ps))]
        cos, sin = np.concatenate([t[0] for t in tables]), np.concatenate([t[1] for t in tables])   # (B, Dh/2)
        out = _decode_layers(np.ascontiguousarray(x, dtype=np.float32), self.layers, tuple(c.k for c in caches),
                             tuple(c.v for c in caches), tuple(c.slot_pos for c in caches), ps, cos, sin,
                             np.float32(cfg.rms_norm_eps), cfg.num_attention_heads, cfg.num_key_value_heads,
                             cfg.head_dim, self.window, self.int8, F16_TO_F32)
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
def _matvec(x, mat, int8, lut, y):
    """y = x @ w^T for the B rows of x (B, in) with decode.py's kernels, the weight read once for all rows:
    serial for a small weight, else row groups in parallel.  -> y (B, out)"""
    qs, d, m, has_m, offset, n_groups = mat
    out_dim = d.shape[0]
    if int8:
        xr, sxo, dx, dxs = decode.prepare_rows_int8(x, offset)
        if n_groups == 0:
            decode.rows_nibbles_int8(xr, sxo, dx, dxs, qs, d, m, has_m, offset, lut, 0, out_dim, y)
        else:
            y[:] = decode.gemv_nibbles_int8(xr, sxo, dx, dxs, qs, d, m, has_m, offset, lut, n_groups)
    else:
        xr, xsum = decode.prepare_rows_float(x, has_m)
        if n_groups == 0:
            decode.rows_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, 0, out_dim, y)
        else:
            y[:] = decode.gemv_nibbles_float(xr, xsum, qs, d, m, has_m, offset, lut, n_groups)


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
def _attend(q, kc, vc, slot_pos, p, window, n_heads, n_kv, dh, out):
    """out (n_heads * dh,) = softmax(q_h K^T / sqrt(dh)) V over the visible slots, KV head h // G."""
    slots = min(slot_pos.shape[0], p + 1)  # position q lives in slot q % slots: slots past p hold nothing visible
    g = n_heads // n_kv
    scale = np.float32(1.0 / math.sqrt(dh))
    scores = np.empty(slots, dtype=np.float32)
    for h in range(n_heads):
        kv = h // g
        best = np.float32(-np.inf)
        for s in range(slots):
            pos = slot_pos[s]
            if pos < 0 or pos > p or (window > 0 and p - pos >= window):
                scores[s] = -np.inf
                continue
            acc = np.float32(0.0)
            for i in range(dh):
                acc += q[h * dh + i] * kc[s, kv, i]
            scores[s] = acc * scale
            best = max(best, scores[s])
        total = np.float32(0.0)
        for s in range(slots):
            e = np.exp(scores[s] - best) if scores[s] != -np.inf else np.float32(0.0)
            scores[s] = e
            total += e
        for i in range(dh):
            out[h * dh + i] = 0.0
        for s in range(slots):
            if scores[s] != 0.0:
                w = scores[s] / total
                for i in range(dh):
                    out[h * dh + i] += w * vc[s, kv, i]


@njit(cache=True)
def _decode_layers(x, layers, k_caches, v_caches, slot_pos, ps, cos, sin, eps, n_heads, n_kv, dh, window, int8, lut):
    """Every layer for B tokens, row b at position ps[b] over its own cache (k_caches[b], v_caches[b],
    slot_pos[b]: tuples of B arrays), updating the caches in place.  x (B, D) -> (B, D)

    Everything but the matmuls runs row by row; the matmuls take all rows (_matvec), and each row's
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
        _matvec(a, wq, int8, lut, q)
        _matvec(a, wk, int8, lut, k)
        _matvec(a, wv, int8, lut, v)
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
            _attend(q[b], kc[li], vc[li], sp[li], p, window, n_heads, n_kv, dh, att[b])
        _matvec(att, wo, int8, lut, o)
        x += o
        for b in range(n_rows):
            _rms_norm(x[b], w_post, eps, a[b])
        _matvec(a, wg, int8, lut, gate)
        _matvec(a, wu, int8, lut, up)
        for b in range(n_rows):
            for i in range(f_dim):
                gi = gate[b, i]
                gate[b, i] = gi * (np.float32(0.5) + np.float32(0.5) * np.tanh(np.float32(0.5) * gi)) * up[b, i]
        _matvec(gate, wd, int8, lut, o)
        x += o
    return x
