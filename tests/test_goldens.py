"""Golden fixtures (tier c): committed transformers outputs, checked without torch, plus a live check
that the committed files still agree with transformers as installed (so the fixtures cannot drift).

Regenerate with ``python -m tools.make_goldens`` (the manifest records versions and tolerances).

The committed float32 references were computed on whatever CPU regenerated them, and this suite runs on
others (AVX-512 Xeons, AVX2 EPYCs): float32 comparisons use the per-tensor bound derived in
docs/conventions.md (``conftest.f32_bound``: 4 x the reference's own distance from the float64 truth, plus
one float32 epsilon of the tensor's scale); float64 results agree across CPUs to ~1e-15 and keep the tight
bounds.
"""

import json
import os

import numpy as np
import pytest

from conftest import F64_ABS, ROOT, first_divergence
import mistral_np

GOLDENS = os.path.join(ROOT, "tests", "goldens")
CASES = sorted(d for d in os.listdir(GOLDENS) if not d.startswith("."))


def manifest(case):
    with open(os.path.join(GOLDENS, case, "manifest.json")) as f:
        return json.load(f)


def reference(folder, dtype):
    ref = dict(np.load(os.path.join(folder, f"reference_{dtype}.npz")))
    return ref.pop("ids"), ref


def test_there_are_goldens():
    assert len(CASES) >= 2


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_golden(case, dtype):
    m = manifest(case)
    assert m["format_version"] == 2, f"{case}: golden format {m['format_version']}; run {m['regenerate']}"
    ids, ref = reference(os.path.join(GOLDENS, case), dtype)
    _, truth = reference(os.path.join(GOLDENS, case), "float64")
    assert list(ref) == m["tensors"]
    model = mistral_np.load_model(os.path.join(GOLDENS, case), dtype=np.dtype(dtype))
    _, trace = model.forward(ids, trace=True)
    if dtype == "float32":
        first_divergence(trace, ref, truth=truth)
    else:
        first_divergence(trace, ref, atol=F64_ABS)


def test_goldens_match_live_transformers(tmp_path):
    """Re-run the generator with the installed transformers: the committed references must agree, the float64
    truth to 1e-12 of its scale, the float32 reference within its derived cross-CPU bound."""
    import transformers
    from tools import make_goldens
    for case in CASES:
        m = manifest(case)
        assert m["versions"]["transformers"] == transformers.__version__, (
            f"{case} was made with transformers {m['versions']['transformers']}, installed is "
            f"{transformers.__version__}: run {m['regenerate']}")
        make_goldens.make_case(case, make_goldens.CASES[case], str(tmp_path))
        old_ids, old_truth = reference(os.path.join(GOLDENS, case), "float64")
        new_ids, new_truth = reference(os.path.join(tmp_path, case), "float64")
        np.testing.assert_array_equal(old_ids, new_ids)
        first_divergence(new_truth, old_truth, rel=1e-12)
        _, old32 = reference(os.path.join(GOLDENS, case), "float32")
        _, new32 = reference(os.path.join(tmp_path, case), "float32")
        first_divergence(new32, old32, truth=old_truth)
