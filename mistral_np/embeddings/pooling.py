"""Sentence pooling over a padded batch: last token or mean, then L2 normalization.

What it computes (B sequences padded to T tokens, hidden size D; ``mask`` is 1 on real tokens, 0 on padding)
    last_token_pool(h, mask) = h[b, t_b],  t_b = the LAST position whose mask is 1      (B, T, D) -> (B, D)
    mean_pool(h, mask)       = sum_t mask[b, t] h[b, t] / max(sum_t mask[b, t], 1e-9)   (B, T, D) -> (B, D)
    l2_normalize(x)          = x / max(||x||_2, 1e-12)                                   (B, D) -> (B, D)

Matches sentence-transformers' ``Pooling`` ("lasttoken", "mean") and ``Normalize`` (``F.normalize(p=2)``),
docs/references.md#embedders.  Worked example, T = 4, one row per padding side:

    right padding   mask = [1, 1, 1, 0]  ->  t = 2      left padding   mask = [0, 1, 1, 1]  ->  t = 3
    all padding     mask = [0, 0, 0, 0]  ->  t = T-1 = 3, and the row is multiplied by its mask: a zero vector

Searching for the last 1 (not "length - 1") is what makes one function right for both padding sides; the
e5 model card's ``last_token_pool`` instead assumes right padding unless *every* row ends with a real
token.  A row that is all padding gives zeros (never NaN): the mean divides by 1e-9, not by 0, and the
normalization divides by 1e-12 at least.

Checked against sentence-transformers' ``Pooling`` module in tests/test_embed.py (both padding sides, an
all-padding row included), which also checks the worked examples above.

next: that is the embedding path; quantization (mistral_np/quant/) is the next side road.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError


def pad_batch(rows: list[np.ndarray], side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence hidden states [(T_b, D)] -> padded (B, T, D) zeros-filled and mask (B, T) int64."""
    if side not in ("left", "right"):
        raise InvalidArgumentError(f"padding side must be 'left' or 'right', got {side!r}")
    assert rows and all(r.ndim == 2 and r.shape[1] == rows[0].shape[1] for r in rows)
    T, D = max(len(r) for r in rows), rows[0].shape[1]
    h = np.zeros((len(rows), T, D), dtype=rows[0].dtype)                        # (B, T, D)
    mask = np.zeros((len(rows), T), dtype=np.int64)                             # (B, T)
    for b, r in enumerate(rows):
        span = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        h[b, span], mask[b, span] = r, 1
    return h, mask


def last_token_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hidden state of each row's last real token (either padding side); all-padding rows give zeros."""
    B, T, D = h.shape
    assert mask.shape == (B, T)
    flipped = mask[:, ::-1]
    from_end = flipped.argmax(axis=1)                  # distance of the last 1 from the end (0 if none)
    has_real = flipped.max(axis=1) > 0
    t = np.where(has_real, T - 1 - from_end, T - 1)    # (B,)
    rows = h[np.arange(B), t]                                                   # (B, T, D) -> (B, D)
    return rows * mask[np.arange(B), t][:, None].astype(h.dtype)


def mean_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the real tokens' hidden states; all-padding rows give zeros."""
    B, T, D = h.shape
    assert mask.shape == (B, T)
    m = mask.astype(h.dtype)[:, :, None]                                       # (B, T, 1)
    total = (h * m).sum(axis=1)                                                 # (B, T, D) -> (B, D)
    count = np.maximum(m.sum(axis=1), 1e-9)                                     # (B, 1)
    return total / count


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))                      # (B, D) -> (B, 1)
    return x / np.maximum(norm, eps)


POOLING = {"lasttoken": last_token_pool, "mean": mean_pool}
