"""Grouped-query self-attention (Ainslie et al. 2023, "GQA") with the sliding-window mask.

    q, k, v = x Wq^T, x Wk^T, x Wv^T           (T, D) -> (T, H, Dh), (T, K, Dh), (T, K, Dh)
    q, k    = rope(q, pos), rope(k, pos)       keys are cached AFTER rotation (absolute positions)
    p       = softmax(q k^T / sqrt(Dh) + mask) per query head h, using KV head h // G      (H, T, S)
    out     = (p v) Wo^T                       (T, H, Dh) -> (T, D)

The scores, the mask and the softmax are gqa.py; this file is the layer around them. The cache view
(kv_cache.py) stores this call's keys and values and returns every key the new queries may need, each
labelled with its absolute position; masks.py decides visibility from positions alone, so one code path
serves a full prefill, a chunk of a prefill over a cache, and decoding one token.

For calls of more than ``QUERY_BLOCK`` tokens the same computation runs block by block over the queries
(gqa_blocked.py, the tested twin), so the score matrix never holds T x S entries at once; so does any call of
``PARALLEL_QUERIES`` tokens or more that no trace asks probabilities of, because the twin runs its blocks and
KV heads on the thread pool (a 256-token prompt's attention on one thread was 17 % of a 142M embedder's
time). Only the plain path here records the probabilities in a trace. Matches HF ``MistralAttention``
(eager/SDPA).

Checked against transformers' ``MistralAttention`` in tests/test_model.py (q, k, v, q_rope, k_rope,
attn_probs and attn_output of every layer, on sequences at least 3W long); tests/test_kv_cache.py runs
it over a cache, chunk by chunk, against one full pass.

next: rope.py.
"""

from __future__ import annotations

from .gqa import attention_probs, mix_values
from .gqa_blocked import QUERY_BLOCK, grouped_query_attention_blocked
from .ops import linear, linears
from .rope import apply_rope

PARALLEL_QUERIES = 32  # from this many queries, untraced calls take the blocked twin, on the thread pool


def attention(x, layer, cfg, pos, cache, trace):
    """x (T, D) normalized hidden states -> (T, D) attention output (after o_proj)."""
    T, H, K, Dh = x.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q, k, v = linears(x, layer.q_proj, layer.k_proj, layer.v_proj)   # linear(x, w) for each w (ops.py)
    q = q.reshape(T, H, Dh)                          # (T, D) -> (T, H, Dh)
    k = k.reshape(T, K, Dh)                          # (T, D) -> (T, K, Dh)
    v = v.reshape(T, K, Dh)                          # (T, D) -> (T, K, Dh)
    out = attend(q, k, v, cfg, pos, cache, trace)                            # (T, H, Dh)
    return linear(out.reshape(T, H * Dh), layer.o_proj)                     # (T, H*Dh) -> (T, D)


def attend(q, k, v, cfg, pos, cache, trace):
    """The part between the projections: q (T, H, Dh), k, v (T, K, Dh) of T tokens at ``pos`` -> (T, H, Dh).
    (generation/batch.py calls it for each of several prompts whose projections ran together.)"""
    T = q.shape[0]
    trace.record("q", q)
    trace.record("k", k)
    q, k = apply_rope(q, pos.cos, pos.sin), apply_rope(k, pos.cos, pos.sin)
    trace.record("q_rope", q)
    trace.record("k_rope", k)
    trace.record("v", v)
    k_all, v_all, k_pos = cache.update(k, v, pos.index)                     # (S, K, Dh) x2, (S,)
    if T < PARALLEL_QUERIES or (T <= QUERY_BLOCK and trace.wants_probs(T, len(k_pos))):
        probs = attention_probs(q, k_all, pos.index, k_pos, cfg.sliding_window)   # (H, T, S)
        if trace.wants_probs(T, len(k_pos)):
            trace.record("attn_probs", probs)
        return mix_values(probs, v_all)                                     # (T, H, Dh)
    return grouped_query_attention_blocked(q, k_all, v_all, pos.index, k_pos, cfg.sliding_window)
