"""Picking the next token from a row of logits: the usual knobs, in Hugging Face's order.

    1. repetition penalty  every token already in prompt or output: logit / r if logit > 0, else logit * r
    2. temperature         logits / t; t == 0 means greedy: argmax, steps 3-5 skipped
    3. top-k               keep the k largest logits (ties with the k-th kept)
    4. top-p (nucleus)     keep the smallest set of most likely tokens whose probability mass is >= p
    5. draw                softmax in float64, inverse CDF with ``np.random.default_rng(seed)``

Each step matches the transformers logits processor of the same name (tests/test_generate.py).

next: stops.py.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidArgumentError
from ..model.ops import softmax


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """HF ``RepetitionPenaltyLogitsProcessor``: seen tokens' logits / penalty if > 0, else * penalty. (V,)"""
    out = logits.copy()
    s = out[seen]
    out[seen] = np.where(s < 0, s * penalty, s / penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits below the k-th largest -> -inf (HF ``TopKLogitsWarper``; k = 0: no filter). (V,)"""
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens with probability mass >= p; others -> -inf. (V,)

    Example: probabilities [0.1, 0.5, 0.3, 0.1], p = 0.7: sorted 0.5, 0.3, ... ; mass before each token
    0, 0.5, 0.8, 0.9; a token is kept while the mass before it is < p: {0.5, 0.3} (mass 0.8 >= 0.7).
    """
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")                  # most likely first
    probs = softmax(logits[order].astype(np.float64))
    before = np.cumsum(probs) - probs                           # mass of the tokens ranked above
    out = np.full_like(logits, -np.inf)
    keep = order[before < p]                                    # always includes the top token
    out[keep] = logits[keep]
    return out


def pick_token(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0) -> int:
    """Steps 2-5 of the pipeline on one row of logits (V,) -> a token id."""
    if temperature == 0:
        return int(np.argmax(logits))
    x = top_p_filter(top_k_filter(logits.astype(np.float64) / temperature, top_k), top_p)
    cdf = np.cumsum(softmax(x))
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))  # zero-mass tokens never drawn


def check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, chunk_size):
    """Raise InvalidArgumentError, naming the argument, for a value outside its range."""
    def number(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

    def integer(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    rules = [(max_new_tokens, "max_new_tokens", integer(max_new_tokens) and max_new_tokens >= -1,
              "an integer >= 0, or -1 (until EOS or the context is full)"),
             (temperature, "temperature", number(temperature) and temperature >= 0, ">= 0 (0 = greedy)"),
             (top_k, "top_k", integer(top_k) and top_k >= 0, "an integer >= 0 (0 = off)"),
             (top_p, "top_p", number(top_p) and 0 < top_p <= 1, "in (0, 1] (1 = off)"),
             (repetition_penalty, "repetition_penalty", number(repetition_penalty) and repetition_penalty > 0,
              "> 0 (1 = off)"),
             (chunk_size, "chunk_size", chunk_size is None or (integer(chunk_size) and chunk_size >= 1),
              "an integer >= 1")]
    for value, name, ok, want in rules:
        if not ok:
            raise InvalidArgumentError(f"{name} must be {want}, got {value!r}")
