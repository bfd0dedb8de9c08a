"""The fast twin of ``gqa.grouped_query_attention`` for long inputs: the queries a block at a time.

Same inputs, same result (to float rounding; tests/test_attention.py compares them), four differences:

* memory: a block of ``QUERY_BLOCK`` queries holds H x QUERY_BLOCK x S scores, never H x T x S;
* threads: the blocks, and in a block the KV heads (each with its G query heads), are independent, so they run
  side by side on the thread pool (parallel.py:run_all): a 256-token prompt is one block, but K pieces of
  work (8 on Mistral-7B), and one thread no longer does all of its attention while the others wait;
* work: a block only looks at the keys it could see. Queries at positions p0..p1 see keys at positions
  p0 - W + 1 .. p1 (masks.py), so the keys outside that range are left out before the product. With a
  window of 4096 and a 32k-token prompt, each block reads 4096 + 256 keys instead of up to 32k;
* passes over the scores: the mask is applied only to the keys some query of the block cannot see (in a
  causal prompt, the block's own diagonal square), the exponentials are taken in place, and the division
  by each row's sum is done on the output, (G, B, Dh), not on the probabilities, (G, B, S):

      out = (exp(s - max s) v) / sum exp(s - max s)         per query row, the same value as softmax(s) v

Example, W = 3, queries at positions 4..5 over keys at positions 0..5: the block keeps keys 2..5 (key 2
for query 4, keys 3..5 for query 5); the mask inside the block does the rest (keys 2 and 5: key 3 and 4
are seen by both queries, so their columns are left alone).

The exponentials: NumPy's float32 exp is scalar code on CPUs without AVX-512 (3-6 ns a value on AMD Zen 3),
and a 512-token prompt of SmolLM2 takes 53 million of them; ``use_exp_rows`` takes a compiled twin of
``exp_rows`` (mistral_np/fastmath.py gives one at package import, ~0.8 ns a value). This file, like all of
model/, imports only NumPy.

next: back to gqa.py (this file is a side road).
"""

from __future__ import annotations

import numpy as np

from .masks import sliding_window_causal_mask
from .parallel import run_all

QUERY_BLOCK = 256  # queries per block


def exp_rows(x: np.ndarray) -> np.ndarray:
    """x (R, S), in place: x[r] <- exp(x[r] - max x[r]).  -> the row sums (R,)"""
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    return x.sum(axis=-1)


_compiled = {"exp_rows": None}  # a float32 twin of exp_rows (use_exp_rows), else NumPy's


def use_exp_rows(fn) -> None:
    """Compute the float32 blocks' exponentials with ``fn`` (same contract as exp_rows; None: NumPy)."""
    _compiled["exp_rows"] = fn


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
        out[t0:t0 + len(qp), heads] = _attend(q[t0:t0 + block, heads], k[idx, kv], v[idx, kv], qp, k_pos[idx], window)

    run_all(one_piece, [(t0, kv) for t0 in range(0, q.shape[0], block) for kv in range(K)])
    return out


def _attend(q, k, v, q_pos, k_pos, window):
    """The G query heads of one KV head over the keys they may see, in the passes drawn above.
    q (B, G, Dh), k/v (S, Dh), positions (B,), (S,) -> (B, G, Dh)"""
    B, G, Dh = q.shape
    S = k.shape[0]
    scores = (q * q.dtype.type(1.0 / np.sqrt(Dh))).transpose(1, 0, 2) @ k.T     # (G, B, S): scaled before the
    # product (B x G x Dh values to scale, not G x B x S; the same when sqrt(Dh) is a power of 2, as for Dh = 64)
    # keys every query of the block sees: in the past of the first query, and (window) in the window of the last
    everyone = k_pos <= q_pos.min()
    if window is not None:
        everyone &= k_pos > q_pos.max() - window
    some = np.flatnonzero(~everyone)
    if len(some):
        cols = slice(some[0], some[-1] + 1) if some[-1] - some[0] + 1 == len(some) else some
        hidden = ~sliding_window_causal_mask(q_pos, k_pos[cols], window)        # (B, n) for those keys only
        part = scores[:, :, cols]                                               # a view if cols is a slice
        np.copyto(part, -np.inf, where=hidden)
        if not isinstance(cols, slice):
            scores[:, :, cols] = part
    flat = scores.reshape(G * B, S)
    fast = _compiled["exp_rows"]
    sums = fast(flat) if fast is not None and flat.dtype == np.float32 else exp_rows(flat)
    mixed = scores @ v                                                          # (G, B, S) @ (S, Dh) -> (G, B, Dh)
    mixed /= sums.reshape(G, B, 1)
    return mixed.transpose(1, 0, 2)
