"""The attention mask, built from absolute positions: THE place the sliding-window rule lives.

Query at absolute position i may attend to key at absolute position j iff

    0 <= i - j < W        (W keys, the query itself included; docs/references.md#window)

and with ``window=None`` (no sliding window) iff 0 <= i - j. This is what current transformers
(``sliding_window_overlay``: ``kv_idx > q_idx - sliding_window``) and Mistral's own xformers code do.
Worked example, W = 3, positions 0..4 (rows: queries, columns: keys)::

    1 0 0 0 0
    1 1 0 0 0
    1 1 1 0 0
    0 1 1 1 0
    0 0 1 1 1

Because the mask only looks at positions, one function serves a full prefill, a chunk of a prefill
attending over a cache, and a single decoded token over a rolling buffer whose slots hold keys in
any order. Empty cache slots carry position -1 and a key position > i never passes.

docs/figures/window_mask.png draws it against the causal mask for W = 4 (docs/tour.md).

tests/test_masks.py checks the worked example above (the figure of Mistral's README), min(i + 1, W)
keys per row and slots in any order; tests/test_model.py checks the window against transformers on
sequences at least 3W long.

next: gqa.py (the scores this mask is added to).
"""

import numpy as np


def sliding_window_causal_mask(q_pos: np.ndarray, k_pos: np.ndarray, window: int | None) -> np.ndarray:
    """(T,) query positions, (S,) key positions (-1 = empty slot) -> (T, S) bool, True = may attend."""
    d = q_pos[:, None].astype(np.int64) - k_pos[None, :].astype(np.int64)   # (T, S): i - j
    allowed = (d >= 0) & (k_pos[None, :] >= 0)
    if window is not None:
        allowed &= d < window
    return allowed
