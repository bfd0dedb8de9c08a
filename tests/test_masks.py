"""The sliding-window mask (model/masks.py): Mistral's worked example, row counts, positions not slots."""

import numpy as np
from hypothesis import given, settings, strategies as st

from mistral_np.model.masks import sliding_window_causal_mask

SET = settings(deadline=None, max_examples=40)


def test_mask_worked_example_w3():
    m = sliding_window_causal_mask(np.arange(5), np.arange(5), 3).astype(int)
    assert m.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]


@SET
@given(st.integers(1, 40), st.integers(1, 120))
def test_mask_rows_hold_min_i_plus_1_W_keys(W, T):
    m = sliding_window_causal_mask(np.arange(T), np.arange(T), W)
    assert m.sum(axis=1).tolist() == [min(i + 1, W) for i in range(T)]
    full = sliding_window_causal_mask(np.arange(T), np.arange(T), None)
    assert full.sum(axis=1).tolist() == [i + 1 for i in range(T)]


def test_mask_uses_positions_not_slots():
    """A rolling buffer's slots hold positions out of order; empty slots (-1) never pass."""
    k_pos = np.array([6, 7, 4, 5, -1])
    m = sliding_window_causal_mask(np.array([7]), k_pos, 3)
    assert m.tolist() == [[True, True, False, True, False]]
