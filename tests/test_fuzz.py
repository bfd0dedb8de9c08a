"""Untrusted files and text: mutated checkpoints, GGUF files, quantized folders, configs, tokenizers and API inputs,
each run in a child process under an address-space limit and a timeout (tools/fuzz.py), must be refused with a
one-line error of the project's family naming the file (or the argument), or accepted with finite results, or
accepted with non-finite results that a warning at load named. Crashes, hangs, MemoryError, RecursionError,
silent non-finite results and unclear refusals fail the test.

Hypothesis picks the family and the mutation's seed; a few hundred cases here, long campaigns with
``python -m tools.fuzz`` (docs/reliability.md).
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import fuzz

CASES_PER_FAMILY = 30


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    bases = fuzz.build_bases(str(tmp_path_factory.mktemp("fuzz-bases")))
    worker = fuzz.Worker(timeout=30.0, memory_gb=4.0)
    yield bases, worker, tmp_path_factory
    worker.close()


@pytest.mark.parametrize("family", fuzz.FAMILIES)
def test_family(harness, family):
    bases, worker, tmp_path_factory = harness
    seen = []

    @settings(max_examples=CASES_PER_FAMILY, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2 ** 32 - 1))
    def case(seed):
        work = str(tmp_path_factory.mktemp(family))
        job = fuzz.make_case(family, bases, random.Random(seed), work)
        result = worker.run(job)
        seen.append(result["class"])
        assert result["class"] in fuzz.OK, f"{family} (seed {seed}): {result}"

    case()
    assert len(seen) == CASES_PER_FAMILY


def test_the_harness_catches_what_it_must(harness, tmp_path):
    """The classifier itself: a hang, a crash and an unclear refusal are told apart from a clean refusal."""
    bases, worker, _ = harness
    assert worker.run({"kind": "load", "path": str(tmp_path / "nothing"), "files": [str(tmp_path)]})["class"] == \
        "refused"
    assert worker.run({"kind": "load", "path": bases["hf"]})["class"] == "accepted"
    assert fuzz.run_case({"kind": "nonsense"})["class"] == "unclear"
    quick = fuzz.Worker(timeout=2.0)
    try:
        assert quick.run({"kind": "selftest", "what": "hang"})["class"] == "hang"
        assert quick.run({"kind": "selftest", "what": "crash"})["class"] == "crash"
        assert quick.run({"kind": "selftest", "what": "memory"})["class"] == "memory"
        assert quick.run({"kind": "load", "path": bases["hf"]})["class"] == "accepted"     # restarted after both
    finally:
        quick.close()
