"""Shared test helpers: the reference builders in tools/, and comparisons that explain a failure."""

import os
import sys

import numpy as np

# The Hugging Face Hub is never contacted: every reference model is built locally by the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

# float32 parity budget, relative to the largest |value| of the reference tensor; docs/conventions.md
# justifies it (measured worst case ~2e-6 on the tiny configs; BLAS summation order differs).
F32_REL = 1e-5
F64_ABS = 1e-10


def assert_close(name, ours, ref, rel=None, atol=None):
    """max|ours - ref| <= rel * max|ref| (or <= atol); on failure print where and by how much."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    bound = atol if atol is not None else rel * max(scale, 1e-30)
    worst = float(diff.max()) if diff.size else 0.0
    if not worst <= bound:
        idx = np.unravel_index(np.argsort(diff, axis=None)[::-1][:5], diff.shape)
        pairs = ", ".join(f"{tuple(int(i) for i in ix)}: {ours[ix]:.8g} vs {ref[ix]:.8g}"
                          for ix in zip(*idx))
        raise AssertionError(f"{name}: max |diff| {worst:.3g} > bound {bound:.3g} (max |ref| {scale:.3g}); "
                             f"worst: {pairs}")


def first_divergence(ours: dict, ref: dict, rel=None, atol=None):
    """Check every traced intermediate in forward order; the message names the first that diverges."""
    for key in ref:
        assert key in ours, f"trace lacks {key}"
        assert_close(key, ours[key], ref[key], rel=rel, atol=atol)
