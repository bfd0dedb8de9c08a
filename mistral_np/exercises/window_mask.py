"""Exercise ``window_mask``: which keys a query may see, from absolute positions: 0 <= i - j < W.

Solution: mistral_np/model/masks.py:sliding_window_causal_mask. The checks follow tests/test_masks.py (the
figure of Mistral's README, min(i + 1, W) keys per row, slots in any order with empty ones) and add a chunk
over a cache and the window-free case.

next: rolling_cache.py
"""

from __future__ import annotations

import numpy as np

from ..model.masks import sliding_window_causal_mask
from .checker import Check, Exercise, expect


def _d(q, k):
    return q[:, None].astype(np.int64) - k[None, :].astype(np.int64)


def _mask(rule):
    def variant(q, k, w):
        d = _d(q, k)
        return rule(d, w if w is not None else 1 << 62) & (k[None, :] >= 0)
    return variant


MISTAKES = [
    ("allow i - j = W, a window one key too wide (W + 1 keys). Mistral's rule is 0 <= i - j < W: W keys, the "
     "query's own included. transformers 4.34 and 4.40 and mistral-inference's one_file_ref prefill had the same "
     "slip (docs/references.md#window).", _mask(lambda d, w: (d >= 0) & (d <= w))),
    ("stop one key short: 0 <= i - j < W - 1 sees only W - 1 keys. W keys, the query included.",
     _mask(lambda d, w: (d >= 0) & (d < w - 1))),
    ("leave out the query itself (0 < i - j): a token always sees its own key.",
     _mask(lambda d, w: (d > 0) & (d <= w))),
    ("leave out the query itself (0 < i - j): a token always sees its own key.",
     _mask(lambda d, w: (d > 0) & (d < w))),
    ("let a query see later keys: the mask is causal, j <= i, as well as windowed.",
     _mask(lambda d, w: np.abs(d) < w)),
    ("let empty cache slots through: a key position of -1 marks an empty slot, which no query may see.",
     lambda q, k, w: (_d(q, k) >= 0) & (True if w is None else _d(q, k) < w)),
    ("build it from indices 0, 1, 2 ... instead of the positions you are given: the keys of a rolling buffer "
     "sit in any slot order, and a chunk's queries start after the cached tokens.",
     lambda q, k, w: sliding_window_causal_mask(np.arange(len(q)) + (len(k) - len(q)), np.arange(len(k)), w)),
    ("invert it: True means the query MAY attend to the key.",
     lambda q, k, w: ~sliding_window_causal_mask(q, k, w)),
]


def _where_for(q, k, w):
    def where(index):
        t, s = index
        i, j = int(q[t]), int(k[s])
        key = f"key at position {j} (an empty slot)" if j < 0 else f"key at position {j}"
        rule = "" if j < 0 else f", i - j = {i - j}" + ("" if w is None else f", W = {w}")
        return f"query at position {i} (row {t}), {key} (column {s}{rule})"
    return where


def _check(q, k, w):
    q, k = np.asarray(q, dtype=np.int64), np.asarray(k, dtype=np.int64)

    def run(fn):
        expect(fn, (q, k, w), ("q_pos", "k_pos", "window"), sliding_window_causal_mask, axes=("query", "key"),
               where=_where_for(q, k, w), mistakes=MISTAKES, boolean=True)
    return run


EXERCISE = Exercise(
    name="window_mask", title="sliding-window causal mask", function="sliding_window_causal_mask",
    signature="sliding_window_causal_mask(q_pos, k_pos, window)",
    solution="mistral_np/model/masks.py:sliding_window_causal_mask", solve=sliding_window_causal_mask,
    task="""q_pos (T,): absolute positions of the queries; k_pos (S,): absolute positions of the keys, in
any order, -1 for an empty cache slot; window: W, or None for no window.
-> (T, S) bool: True where query i may attend to key j, that is 0 <= i - j < W (W keys, the query's own
included); with window None, 0 <= i - j. An empty slot (-1) is never visible.""",
    checks=[
        Check("the figure of Mistral's README: W = 3, positions 0..4 (rows 10000 11000 11100 01110 00111)",
              _check(np.arange(5), np.arange(5), 3)),
        Check("no window (None): plain causal attention, 6 positions", _check(np.arange(6), np.arange(6), None)),
        Check("longer than the window: 20 positions, W = 6, so row i sees min(i + 1, W) keys",
              _check(np.arange(20), np.arange(20), 6)),
        Check("positions, not slots: a rolling buffer holding positions 6 7 4 5 and an empty slot, query 7, W = 3",
              _check([7], [6, 7, 4, 5, -1], 3)),
        Check("an empty slot is never seen: 4 slots holding positions 0, 1, 2 and an empty one (-1), queries 0..2, "
              "W = 4", _check([0, 1, 2], [0, 1, 2, -1], 4)),
        Check("a chunk over a cache: queries at positions 12, 13 over keys 9..13, W = 3",
              _check([12, 13], np.arange(9, 14), 3)),
        Check("a window longer than the text changes nothing: 7 positions, W = 4096",
              _check(np.arange(7), np.arange(7), 4096)),
    ],
)
