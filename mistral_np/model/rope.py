"""Rotary position embeddings (Su et al. 2021, RoFormer, eq. 34), in the HF half-split layout.

Each head vector x (Dh values) is cut into pairs, and pair number i is rotated by the angle
p * theta^(-2i/Dh) for a token at absolute position p. Which two values form "pair i" is a layout
choice, and the checkpoints disagree (docs/references.md#rope; docs/conventions.md):

    half-split (HF, ours):      pair i = (x[i], x[i + Dh/2])
    interleaved (Meta, GGUF):   pair i = (x[2i], x[2i + 1])

The two give identical attention scores once the q_proj/k_proj rows are permuted within each head:
HF row ``j*Dh/2 + i`` holds interleaved row ``2i + j`` (``permute_to_half_split``); loaders of Mistral's
consolidated files and of GGUF files apply it, so the model only ever sees the half-split layout.

    rotate(x)[:Dh/2] = x1*cos - x2*sin        x1 = x[:Dh/2], x2 = x[Dh/2:]
    rotate(x)[Dh/2:] = x2*cos + x1*sin        angles: positions (T,) x inv_freq (Dh/2,)

The angles and their cos/sin are computed in float64 and then rounded to the compute dtype.
``Positions`` bundles the absolute positions of the new tokens with their cos/sin tables: the one
positional argument every layer receives (attention rotates with the tables and masks with the positions).
Matches HF ``apply_rotary_pos_emb`` / ``MistralRotaryEmbedding`` (default rope type).

tests/test_rope.py checks that norms are kept, that scores depend on the position difference only, and the
permutation (its worked example and inverse; half-split on permuted weights equals interleaved on the
original); tests/test_model.py compares q_rope and k_rope with transformers'.

next: kv_cache.py (where the rotated keys are kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Positions:
    """Absolute positions of the T new tokens, and the cos/sin of their rotation angles."""
    index: np.ndarray   # (T,) int64
    cos: np.ndarray     # (T, Dh/2)
    sin: np.ndarray     # (T, Dh/2)


def positions(index: np.ndarray, head_dim: int, theta: float, dtype) -> Positions:
    """Positions (T,) -> ``Positions`` with the rotation tables in ``dtype``."""
    index = np.asarray(index, dtype=np.int64)
    return Positions(index, *rope_tables(index, head_dim, theta, dtype))


def inv_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """theta^(-2i/Dh) for i = 0 .. Dh/2-1.  -> (Dh/2,) float64"""
    return 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def rope_tables(positions: np.ndarray, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotation angles.  (T,) -> (T, Dh/2), (T, Dh/2)"""
    angles = positions.astype(np.float64)[:, None] * inv_frequencies(head_dim, theta)[None, :]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate every head of x, half-split layout.  x (T, n, Dh), cos/sin (T, Dh/2) -> (T, n, Dh)"""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]                      # (T, 1, Dh/2): same for every head
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def apply_rope_interleaved(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The Meta/Mistral-original layout, pairs (x[2i], x[2i+1]); used to test the permutation."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x2 * c + x1 * s
    return out


def permute_to_half_split(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of an interleaved-layout q/k projection -> HF half-split layout (HF's ``permute_for_rope``).

    w is (n_heads*Dh, D). Within each head, output row j*Dh/2 + i = input row 2i + j. Example, Dh = 8:
    input rows 0..7 (pairs (0,1) (2,3) (4,5) (6,7)) come out as 0 2 4 6 1 3 5 7.
    """
    rows, cols = w.shape
    dh = rows // n_heads
    assert rows == n_heads * dh and dh % 2 == 0, (w.shape, n_heads)
    return w.reshape(n_heads, dh // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def permute_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of ``permute_to_half_split`` (what llama.cpp's converter applies to HF q/k)."""
    rows, cols = w.shape
    dh = rows // n_heads
    assert rows == n_heads * dh and dh % 2 == 0, (w.shape, n_heads)
    return w.reshape(n_heads, 2, dh // 2, cols).swapaxes(1, 2).reshape(rows, cols)
