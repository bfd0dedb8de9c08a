"""Shared test helpers: comparisons that explain a failure, and the tolerances they use.

The builders of models and folders live in tools/builders.py (the benchmarks use them too); the
transformers side of every parity test is tools/hf_reference.py.

Tolerances (docs/conventions.md, "Tolerances, and why", has the derivation):
* float64 against a float64 reference: max |diff| <= F64_ABS.
* float32 against a float32 reference that may come from another library or another CPU: per tensor,
  ``f32_bound(ref, truth)`` = F32_K x (max |ref - truth| + eps32 x max |truth|), where ``truth`` is the float64
  computation of the same tensor: a multiple of the reference's own measured distance from the truth.
  Along a trace (``first_divergence``) that distance is taken at the layer's error level: the largest relative
  distance of the tensor, the tensors before it in its layer and the layer's input.
"""

import os

import numpy as np

# The Hugging Face Hub is never contacted: every reference model is built locally by the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

F64_ABS = 1e-10
F32_EPS = float(np.finfo(np.float32).eps)   # 2**-23
F32_K = 4.0
# Where no float64 truth is at hand (vectors from sentence-transformers, self-consistency of two float32 paths
# of mistral_np on one machine): 1e-5 of the tensor's largest value, i.e. 84 float32 epsilons, the bound the
# derived per-tensor bounds reach on the deepest tensors of the tiny models (docs/conventions.md).
F32_REL = 1e-5


def f32_bound(ref, truth) -> float:
    """The float32 bound for a tensor: F32_K x (the reference's distance from the float64 truth + one epsilon of
    its scale)."""
    ref, truth = np.asarray(ref, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    assert ref.shape == truth.shape, (ref.shape, truth.shape)
    if not ref.size:
        return 0.0
    return F32_K * (float(np.max(np.abs(ref - truth))) + F32_EPS * float(np.max(np.abs(truth))))


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


def _layer(key: str) -> str:
    """The traced tensor's layer ("layers.3.q" -> "layers.3"); other names stand alone ("logits")."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "layers" and len(parts) > 2 else key


def first_divergence(ours: dict, ref: dict, rel=None, atol=None, truth: dict | None = None):
    """Check every traced intermediate in forward order; the message names the first that diverges.

    With ``truth`` (the float64 trace of the same model), each float32 tensor gets the bound of ``f32_bound``
    with the reference's distance taken at its layer's error level: the largest relative distance
    max|ref - truth| / max|truth| of this tensor, the tensors before it in its layer and the layer's input (the
    previous tensor). The maximum of one tensor's error can be a lucky draw when a few outlier values set it
    (SmolLM2's layer-10 MLP output: transformers 1.5 eps32 of the scale there, 2-18 eps32 at the tensors before
    it in the layer; mistral_np 14 eps32 on an AMD Zen 4); docs/conventions.md has the measurement."""
    level, layer, prev = 0.0, None, 0.0
    for key in ref:
        assert key in ours, f"trace lacks {key}"
        bound = atol
        if truth is not None:
            distance, scale = _distance_and_scale(ref[key], truth[key])
            r = distance / scale if scale > 0 else 0.0
            if _layer(key) != layer:
                layer, level = _layer(key), prev
            level, prev = max(level, r), r
            # (an all-zero truth has no scale to carry a level: f32_bound's own distance)
            bound = F32_K * (level + F32_EPS) * scale if scale > 0 else F32_K * distance
        assert_close(key, ours[key], ref[key], rel=None if bound is not None else rel, atol=bound)


def _distance_and_scale(ref, truth) -> tuple[float, float]:
    """(max |ref - truth|, max |truth|), 0 for empty tensors."""
    ref, truth = np.asarray(ref, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    assert ref.shape == truth.shape, (ref.shape, truth.shape)
    if not ref.size:
        return 0.0, 0.0
    return float(np.max(np.abs(ref - truth))), float(np.max(np.abs(truth)))


def load_parts(path, dtype=np.float32):
    """(config, params, tokenizer) of a checkpoint, through the public loader."""
    import mistral_np
    model = mistral_np.load_model(path, dtype=dtype)
    return model.config, model.params, model.tokenizer
