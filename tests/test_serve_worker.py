"""serve/worker.py in process: prompts that wait together are prefilled in one pass, each stream as alone.

In the first test the jobs are queued before the worker starts, so its first iteration admits all of them: the
short prompts' chunks go through the layers together (generation/batch.py:prefill_together), the long one's
first chunk does not fit the iteration's ``chunk`` tokens and runs alone next; every stream's text equals
``model.generate`` at the same settings. The others start the worker first and send the jobs apart in time, as
HTTP requests arrive: an idle worker waits up to ``gather`` seconds for company, stops waiting as soon as the
waiting jobs fill the slots, and a busy worker does not wait at all. (tests/test_serve.py runs the worker
through the HTTP server.)
"""

import threading
import time

import numpy as np
import pytest

import mistral_np
from mistral_np.model.params import map_weights
from mistral_np.quant.tensor import quantize
from mistral_np.serve import worker as worker_module
from mistral_np.serve.jobs import GenerateJob
from mistral_np.serve.protocol import Sampling
from tools.builders import tiny_folder_with_v1_tokenizer

CHUNK, NEW = 16, 12
LONG_WAIT = 60.0          # seconds: a gather window no test may sit out (each finishes in well under half of it)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = mistral_np.load_model(tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("tiny"), seed=2,
                                                            sliding_window=4))
    m.params = map_weights(m.params, lambda w: quantize(w, "Q4_0") if w.ndim == 2 else w)
    return m


@pytest.fixture
def stacked(monkeypatch):
    """The prompt lengths of every pass prefill_together makes."""
    together = []
    original = worker_module.prefill_together

    def spy(model_, caches, prompts_, chunk, weights=None):
        together.append([len(p) for p in prompts_])
        return original(model_, caches, prompts_, chunk, weights)

    monkeypatch.setattr(worker_module, "prefill_together", spy)
    return together


class Streams:
    """Jobs for ``prompts`` (greedy, NEW tokens each); ``texts[b]`` collects stream b's pieces and its end."""

    def __init__(self, prompts, new=NEW):
        self.prompts, self.new = prompts, new
        self.texts, self.ended = [[] for _ in prompts], threading.Semaphore(0)
        self.jobs = [GenerateJob(self._emitter(b), p, Sampling(max_tokens=new, temperature=0.0), new, frozenset())
                     for b, p in enumerate(prompts)]

    def _emitter(self, b):
        def emit(event):
            if event[0] == "token":
                self.texts[b].append(event[1])
            elif event[0] in ("end", "error"):
                self.texts[b].append(event)
                self.ended.release()
        return emit

    def wait(self, n=None):
        for _ in range(len(self.prompts) if n is None else n):
            assert self.ended.acquire(timeout=600)

    def check(self, model):
        for b, p in enumerate(self.prompts):
            assert self.texts[b][-1][:2] == ("end", "length")
            expected = "".join(model.generate(p, max_new_tokens=self.new, temperature=0.0, stop_ids=(),
                                              chunk_size=CHUNK, prompt_activations="int8",
                                              decode_activations="int8"))
            assert "".join(self.texts[b][:-1]) == expected, b


def worker(model, gather=0.0, ctx=64):
    w = worker_module.Worker(model, slots=4, max_queue=0, ctx=ctx, chunk=CHUNK, prompt_activations="int8",
                             decode_activations="int8", gather=gather)
    assert w.stack_prompts
    return w


def prompts_of(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 32000, n).tolist() for n in lengths]       # longer than the window 4, some


def test_prompts_waiting_together_are_prefilled_in_one_pass_each_equal_to_generate(model, stacked):
    streams = Streams(prompts_of((5, 7, 3, 20)))
    w = worker(model)
    for job in streams.jobs:
        assert w.submit(job)
    w.start()
    try:
        streams.wait()
    finally:
        w.stop()
    assert stacked == [[5, 7, 3]]                  # 5 + 7 + 3 tokens in one pass; the 20-token prompt's 16 alone
    streams.check(model)


def test_an_idle_worker_waits_for_requests_sent_together_and_stops_waiting_when_they_fill_the_slots(model,
                                                                                                   stacked):
    streams = Streams(prompts_of((5, 3, 4, 2), seed=1))
    w = worker(model, gather=LONG_WAIT)
    w.start()
    try:
        assert w.submit(streams.jobs[0])
        time.sleep(0.3)                             # the first is not started alone meanwhile
        assert streams.jobs[0].t_start is None
        for job in streams.jobs[1:]:
            assert w.submit(job)
        streams.wait()
    finally:
        w.stop()
    assert stacked == [[5, 3, 4, 2]]
    waited = streams.jobs[0].t_start - streams.jobs[0].t_submit
    assert 0.3 <= waited < LONG_WAIT / 2           # the four filled the slots: no waiting out the window
    streams.check(model)


def test_a_lone_request_waits_the_window_once_and_a_busy_worker_does_not_wait(model, stacked):
    gather = 0.5
    lone = Streams(prompts_of((6,), seed=2), new=1000)
    w = worker(model, gather=gather, ctx=1100)
    w.start()
    try:
        assert w.submit(lone.jobs[0])
        while lone.jobs[0].t_first is None:         # the lone request is decoding: the worker is busy
            time.sleep(0.01)
        second = Streams(prompts_of((3,), seed=3))  # (a job's t_submit is when it is made)
        assert w.submit(second.jobs[0])
        second.wait()
        assert lone.jobs[0].t_end is None           # still busy when the second came and went
        w.cancel(lone.jobs[0])                      # (a cancelled job ends without an event: its client left)
    finally:
        w.stop()
    assert lone.jobs[0].t_start - lone.jobs[0].t_submit >= gather
    assert second.jobs[0].t_start - second.jobs[0].t_submit < gather
    assert stacked == []
    second.check(model)
