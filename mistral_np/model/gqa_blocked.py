"""The fast twin of ``gqa.grouped_query_attention`` for long inputs: the queries a block at a time.

Same inputs, same result (to float rounding; tests/test_attention.py compares them), two differences:

* memory: a block of ``QUERY_BLOCK`` queries holds H x QUERY_BLOCK x S scores, never H x T x S;
* threads: the blocks, and in a block the KV heads (each with its G query heads), are independent, so they run
  side by side on the thread pool (parallel.py:run_all): a 256-token prompt is one block, but K pieces of
  work (8 on Mistral-7B), and one thread no longer does all of its attention while the others wait;
* work: a block only looks at the keys it could see. Queries at positions p0..p1 see keys at positions
  p0 - W + 1 .. p1 (masks.py), so the keys outside that range are left out before the product. With a
  window of 4096 and a 32k-token prompt, each block reads 4096 + 256 keys instead of up to 32k.

Example, W = 3, queries at positions 4..5 over keys at positions 0..5: the block keeps keys 2..5 (key 2
for query 4, keys 3..5 for query 5); the mask inside the block does the rest.

next: back to gqa.py (this file is a side road).
"""

from __future__ import annotations

import numpy as np

from .parallel import run_all
from .gqa import grouped_query_attention

QUERY_BLOCK = 256  # queries per block


def grouped_query_attention_blocked(q, k, v, q_pos, k_pos, window, block=QUERY_BLOCK):
    """q (T, H, Dh), k/v (S, K, Dh), positions (T,), (S,) -> (T, H, Dh)."""
    out = np.empty_like(q)
    K = k.shape[1]
    G = q.shape[1] // K                                         # query heads h = kv * G .. kv * G + G - 1 read KV head kv

    def one_piece(piece):
        t0, kv = piece
        qp = q_pos[t0:t0 + block]
        seen = (k_pos >= 0) & (k_pos <= qp.max())
        if window is not None:
            seen &= k_pos > qp.min() - window
        idx = np.flatnonzero(seen)
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):      # a contiguous run: a view, no copy
            idx = slice(idx[0], idx[-1] + 1)
        heads = slice(kv * G, kv * G + G)
        out[t0:t0 + len(qp), heads] = grouped_query_attention(q[t0:t0 + block, heads], k[idx, kv:kv + 1],
                                                              v[idx, kv:kv + 1], qp, k_pos[idx], window)

    run_all(one_piece, [(t0, kv) for t0 in range(0, q.shape[0], block) for kv in range(K)])
    return out
