"""The attention equation, with grouped-query heads (Ainslie et al. 2023, "GQA", sec. 2):

    p   = softmax(q k^T / sqrt(Dh) + mask)       (H, T, S), each row sums to 1 over the visible keys
    out = p v                                    (T, H, Dh)

with query head h reading KV head h // G (G = H / K query heads share one key/value head; transformers'
``repeat_kv`` order). The keys and values are never copied G times: the G query heads of one KV head are
stacked and multiplied with that head's keys in one product, (K, G, T, Dh) @ (K, 1, Dh, S) -> (K, G, T, S).
Mistral-7B: H = 32, K = 8, G = 4, so the KV cache is 4 times smaller than with one KV head per query head.

``mask`` is -inf where masks.py says a query may not see a key: exp(-inf) = 0 drops the key from the
softmax. Every query sees at least itself, so no row is all -inf.

docs/figures/gqa.png draws Mistral-7B's head sharing, found by running ``mix_values``.

tests/test_attention.py checks it against textbook multi-head attention with the KV heads repeated (G = 1,
2, 4, 8), and that each row of probabilities sums to 1 inside the window; tests/test_model.py compares
every layer's attn_probs with transformers'.

next: mlp.py (the other half of a layer).
"""

from __future__ import annotations

import numpy as np

from .masks import sliding_window_causal_mask
from .ops import softmax


def grouped_query_attention(q, k, v, q_pos, k_pos, window):
    """q (T, H, Dh), k/v (S, K, Dh), positions (T,), (S,) -> (T, H, Dh): the equation, all at once."""
    return mix_values(attention_probs(q, k, q_pos, k_pos, window), v)


def attention_probs(q, k, q_pos, k_pos, window):
    """softmax(q k^T / sqrt(Dh) + mask): q (T, H, Dh), k (S, K, Dh) -> (H, T, S), rows summing to 1."""
    T, H, Dh = q.shape
    S, K, _ = k.shape
    G = H // K
    assert H == K * G, (q.shape, k.shape)
    qg = q.reshape(T, K, G, Dh).transpose(1, 2, 0, 3)                 # (T, H, Dh) -> (K, G, T, Dh)
    kt = k.transpose(1, 2, 0)[:, None]                                 # (S, K, Dh) -> (K, 1, Dh, S)
    scores = (qg @ kt) * q.dtype.type(1.0 / np.sqrt(Dh))               # (K, G, T, S)
    allowed = sliding_window_causal_mask(q_pos, k_pos, window)         # (T, S), the same for every head
    scores = np.where(allowed, scores, -np.inf)
    return softmax(scores, axis=-1).reshape(H, T, S)                   # (K, G, T, S) -> (H, T, S)


def mix_values(probs, v):
    """Weighted sums of the values: probs (H, T, S), v (S, K, Dh) -> (T, H, Dh)."""
    H, T, S = probs.shape
    K, Dh = v.shape[1], v.shape[2]
    pg = probs.reshape(K, H // K, T, S)                                # (H, T, S) -> (K, G, T, S)
    out = pg @ v.transpose(1, 0, 2)[:, None]                           # (K, G, T, S) @ (K, 1, S, Dh)
    return out.reshape(H, T, Dh).transpose(1, 0, 2)                    # (K, G, T, Dh) -> (T, H, Dh)
