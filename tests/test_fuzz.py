"""Untrusted files and text: mutated checkpoints, GGUF files, quantized folders, configs, tokenizers and API inputs,
each run in a child process under an address-space limit and a timeout (tools/fuzz.py), must be refused with a
one-line error of the project's family naming the file and the field, key or tensor the mutation changed (or,
for API inputs, the argument), or accepted with finite results, or accepted with non-finite results that a
warning at load named with the tensor. Crashes, hangs, MemoryError, RecursionError, silent non-finite results and
unclear refusals fail the test.

Hypothesis chooses each case: ``DrawnRandom`` hands every choice the mutation makes (its operation, the field or
tensor, the value, the byte positions) to hypothesis, so it explores and shrinks them, and a drawn integer seed
supplies the rest (file names). The family is not drawn: it is the test's parameter, so that every family gets its
30 cases in every run (a drawn family would leave some families with a handful). A few hundred cases here, long
campaigns with ``python -m tools.fuzz`` (docs/reliability.md).
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import fuzz

CASES_PER_FAMILY = 30


class DrawnRandom(random.Random):
    """The ``random.Random`` that tools/fuzz.py's mutations take, with its choices drawn from hypothesis's ``data``
    (choice, randrange, randint, random); anything else (getrandbits) comes from ``seed``."""

    def __init__(self, data, seed: int):
        super().__init__(seed)
        self.data = data

    def choice(self, seq):
        return self.data.draw(st.sampled_from(list(seq)))

    def randrange(self, start, stop=None, step=1):
        if stop is None:
            start, stop = 0, start
        return start + step * self.data.draw(st.integers(0, (stop - start - 1) // step))

    def randint(self, a, b):
        return self.data.draw(st.integers(a, b))

    def random(self):
        return self.data.draw(st.floats(0.0, 1.0, exclude_max=True))


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

    # derandomize: the same cases on every run, so that CI is red for a regression and never by the luck of the
    # draw; new cases come from the long runs of tools/fuzz.py (docs/reliability.md), whose finds become tests here.
    @settings(max_examples=CASES_PER_FAMILY, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2 ** 32 - 1), data=st.data())
    def case(seed, data):
        work = str(tmp_path_factory.mktemp(family))
        job = fuzz.make_case(family, bases, DrawnRandom(data, seed), work)
        result = worker.run(job)
        seen.append(result["class"])
        assert result["class"] in fuzz.OK, f"{family} (seed {seed}, fault {job.get('fault')}): {result}"

    case()
    assert len(seen) == CASES_PER_FAMILY


def test_the_harness_catches_what_it_must(harness, tmp_path):
    """The classifier itself: a hang, a crash, a MemoryError, a RecursionError, an unclear refusal (no file, or
    no field or tensor at fault) and a warning that does not name the tensor are told apart from a clean
    refusal and a named warning."""
    bases, worker, _ = harness
    assert worker.run({"kind": "load", "path": str(tmp_path / "nothing"), "files": [str(tmp_path)]})["class"] == \
        "refused"
    assert worker.run({"kind": "load", "path": bases["hf"]})["class"] == "accepted"
    assert fuzz.run_case({"kind": "nonsense"})["class"] == "unclear"
    vague = {"kind": "selftest", "what": "vague", "path": str(tmp_path / "model.safetensors")}
    assert fuzz.run_case(vague)["class"] == "refused"                              # nothing more is known
    assert fuzz.run_case(dict(vague, fault=["model.norm.weight"]))["class"] == "unclear"
    warned = {"kind": "selftest", "what": "warning", "path": "m.gguf", "warn": "blk.0.attn_q.weight"}
    assert fuzz.run_case(dict(warned, fault=["blk.0.attn_q.weight"]))["class"] == "reported"
    assert fuzz.run_case(dict(warned, fault=["output_norm.weight"]))["class"] == "unclear"
    quick = fuzz.Worker(timeout=2.0)
    try:
        assert quick.run({"kind": "selftest", "what": "hang"})["class"] == "hang"
        assert quick.run({"kind": "selftest", "what": "crash"})["class"] == "crash"
        assert quick.run({"kind": "selftest", "what": "memory"})["class"] == "memory"
        assert quick.run({"kind": "selftest", "what": "recursion"})["class"] == "recursion"
        assert quick.run({"kind": "load", "path": bases["hf"]})["class"] == "accepted"     # restarted after all
    finally:
        quick.close()
