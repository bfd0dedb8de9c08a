"""Grouped-query self-attention (Ainslie et al. 2023) with the sliding-window mask.

    q, k, v = x Wq^T, x Wk^T, x Wv^T           (T, D) -> (T, H, Dh), (T, K, Dh), (T, K, Dh)
    q, k    = rope(q, pos), rope(k, pos)       keys are cached AFTER rotation (absolute positions)
    scores  = q k^T / sqrt(Dh) + mask          per query head h, using KV head h // G
    out     = softmax(scores) v  Wo^T          (T, H, Dh) -> (T, D)

Query head h reads KV head h // G (G = H / K): HF's ``repeat_kv`` order. We never copy the KV heads
G times; instead the G query heads of one KV head are stacked into one matrix product:
q (K, G*T, Dh) @ k^T (K, Dh, S) -> (K, G*T, S).

With a ``cache`` (kv_cache.py) attention runs over everything ``cache.update`` returns (the cached
keys plus the new ones; the cache decides whether it can store the new keys first), each key
labelled by its absolute position, so the same mask function serves prefill, chunked prefill and
decoding. Matches HF ``MistralAttention`` (eager/SDPA).

next: mlp.py.
"""

from __future__ import annotations

import numpy as np

from .masks import sliding_window_causal_mask
from .ops import linear, softmax
from .rope import apply_rope

QUERY_BLOCK = 256  # queries per score matrix: bounds memory to K*G*256*S floats for long inputs


def attention(x, layer, cfg, positions, cos, sin, layer_idx=0, cache=None, trace=None, prefix=""):
    """x (T, D) normalized hidden states -> (T, D) attention output (after o_proj)."""
    T, H, K, Dh = x.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = linear(x, layer.q_proj).reshape(T, H, Dh)    # (T, D) -> (T, H, Dh)
    k = linear(x, layer.k_proj).reshape(T, K, Dh)    # (T, D) -> (T, K, Dh)
    v = linear(x, layer.v_proj).reshape(T, K, Dh)    # (T, D) -> (T, K, Dh)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if trace is not None:
        trace[prefix + "q_rope"], trace[prefix + "k_rope"], trace[prefix + "v"] = q, k, v
    if cache is not None:
        k_all, v_all, k_pos = cache.update(layer_idx, k, v, positions)   # (S, K, Dh), (S, K, Dh), (S,)
    else:
        k_all, v_all, k_pos = k, v, positions
    out = grouped_query_attention(q, k_all, v_all, positions, k_pos, cfg.sliding_window)  # (T, H, Dh)
    return linear(out.reshape(T, H * Dh), layer.o_proj)                                  # (T, H*Dh) -> (T, D)


def grouped_query_attention(q, k, v, q_pos, k_pos, window):
    """q (T, H, Dh), k/v (S, K, Dh), positions (T,), (S,) -> (T, H, Dh)."""
    T, H, Dh = q.shape
    S, K, _ = k.shape
    G = H // K
    assert H == K * G and k.shape == v.shape, (q.shape, k.shape, v.shape)
    scale = q.dtype.type(1.0 / np.sqrt(Dh))
    kt = k.transpose(1, 2, 0)                                  # (S, K, Dh) -> (K, Dh, S)
    vk = v.transpose(1, 0, 2)                                  # (S, K, Dh) -> (K, S, Dh)
    out = np.empty((T, H, Dh), dtype=q.dtype)
    for t0 in range(0, T, QUERY_BLOCK):
        qb = q[t0:t0 + QUERY_BLOCK]                            # (t, H, Dh)
        t = qb.shape[0]
        qg = qb.reshape(t, K, G, Dh).transpose(1, 2, 0, 3).reshape(K, G * t, Dh)   # (K, G*t, Dh)
        scores = (qg @ kt) * scale                             # (K, G*t, S)
        allowed = sliding_window_causal_mask(q_pos[t0:t0 + t], k_pos, window)     # (t, S)
        scores = np.where(np.tile(allowed, (G, 1))[None], scores, -np.inf)
        probs = softmax(scores, axis=-1)                       # (K, G*t, S)
        o = probs @ vk                                         # (K, G*t, Dh)
        out[t0:t0 + t] = o.reshape(K, G, t, Dh).transpose(2, 0, 1, 3).reshape(t, H, Dh)
    return out
