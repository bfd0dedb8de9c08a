"""Golden fixtures (tier c): committed transformers outputs, checked without torch, plus a live check
that the committed files still agree with transformers as installed (so the fixtures cannot drift).

Regenerate with ``python tools/make_goldens.py`` (the manifest records versions and tolerances).
"""

import json
import os

import numpy as np
import pytest

from conftest import ROOT, first_divergence
import mistral_np

GOLDENS = os.path.join(ROOT, "tests", "goldens")
CASES = sorted(d for d in os.listdir(GOLDENS) if not d.startswith("."))


def manifest(case):
    with open(os.path.join(GOLDENS, case, "manifest.json")) as f:
        return json.load(f)


def test_there_are_goldens():
    assert len(CASES) >= 2


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_golden(case, dtype):
    m = manifest(case)
    assert m["format_version"] == 1, f"{case}: golden format {m['format_version']}; run {m['regenerate']}"
    ref = dict(np.load(os.path.join(GOLDENS, case, f"reference_{dtype}.npz")))
    ids = ref.pop("ids")
    assert list(ref) == m["tensors"]
    model = mistral_np.load_model(os.path.join(GOLDENS, case), dtype=np.dtype(dtype))
    _, trace = model.forward(ids, trace=True)
    tol = m["tolerance"][dtype]
    first_divergence(trace, ref, rel=tol.get("rel_to_max_abs"), atol=tol.get("abs"))


def test_goldens_match_live_transformers(tmp_path):
    """Re-run the generator with the installed transformers: the committed references must agree."""
    import transformers
    import make_goldens
    for case in CASES:
        m = manifest(case)
        assert m["versions"]["transformers"] == transformers.__version__, (
            f"{case} was made with transformers {m['versions']['transformers']}, installed is "
            f"{transformers.__version__}: run {m['regenerate']}")
        make_goldens.make_case(case, make_goldens.CASES[case], str(tmp_path))
        for dtype, tol in (("float32", 1e-6), ("float64", 1e-12)):
            old = dict(np.load(os.path.join(GOLDENS, case, f"reference_{dtype}.npz")))
            new = dict(np.load(os.path.join(tmp_path, case, f"reference_{dtype}.npz")))
            np.testing.assert_array_equal(old.pop("ids"), new.pop("ids"))
            first_divergence(new, old, rel=tol)
