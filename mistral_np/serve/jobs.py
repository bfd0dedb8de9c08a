"""The requests the worker runs, and what they send back: ``GenerateJob`` and ``EmbedJob``.

A job crosses threads once each way: the event loop makes it and hands it to the worker (worker.py); the
worker fills it and calls ``job.emit(event)``, which puts the event on the request's asyncio queue through
``loop.call_soon_threadsafe``. Events:

    ("token", text, logprob_entry | None)      text may be "" (a piece held back: half a character, a
                                               possible stop string)
    ("end", finish_reason, usage)              "stop" (EOS or a stop string) or "length"
    ("embeddings", vectors (N, D), prompt_tokens)
    ("error", status, message)

``GenerateJob.take(logits)`` is generation/loop.py's loop body for one token: logit bias, repetition
penalty, ``pick_token`` with the job's own ``np.random.default_rng(seed)``, stop token, stop strings through
the tokenizer's ``StreamDecoder``, the token budget; so the text equals ``model.generate``/``model.chat``'s at
the same settings whenever the logits are the same (generation/batch.py says when they are).

tests/test_serve.py checks through the real ``openai`` client that streamed and plain answers equal
``model.chat``/``model.generate`` at the same settings (greedy and seeded, with stop strings and logprobs) and
that /v1/embeddings equals ``Embedder.encode``; tests/test_serve_smollm2.py does the same for chat on a real
model.

next: worker.py.
"""

from __future__ import annotations

import time

import numpy as np

from ..generation.sampling import apply_repetition_penalty, pick_token
from ..generation.stops import StopStrings
from ..model.ops import log_softmax
from .protocol import Sampling
from .responses import token_logprobs, usage


class Job:
    """What every job has: ``emit``, a ``cancelled`` flag the event loop may set, and timings."""

    def __init__(self, emit):
        self._emit = emit
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_start = self.t_first = self.t_end = None

    def emit(self, event: tuple) -> None:
        try:
            self._emit(event)
        except RuntimeError:          # the request's event loop is closed: nobody is listening any more
            self.cancelled = True

    def fail(self, status: int, message: str) -> None:
        self.t_end = time.perf_counter()
        self.emit(("error", status, message))


class EmbedJob(Job):
    def __init__(self, emit, texts: list[str], instruction: str | None, prompt_name: str | None):
        super().__init__(emit)
        self.texts, self.instruction, self.prompt_name = texts, instruction, prompt_name
        self.prompt_tokens = 0


class GenerateJob(Job):
    """A prompt (token ids) and its ``Sampling``; ``budget`` tokens at most; ``stop_ids`` end it (not shown)."""

    def __init__(self, emit, prompt: list[int], sampling: Sampling, budget: int, stop_ids: frozenset):
        super().__init__(emit)
        self.prompt, self.prompt_array = list(prompt), np.asarray(prompt, dtype=np.int64)
        self.sampling, self.budget, self.stop_ids = sampling, budget, stop_ids
        self.cached_tokens = self.generated = 0
        self.finish_reason = None

    def begin(self, tokenizer, vocab_size: int, cached_tokens: int) -> None:
        """Worker side, when the job gets its slot."""
        s = self.sampling
        self.tokenizer, self.cached_tokens, self.t_start = tokenizer, cached_tokens, time.perf_counter()
        self.rng = np.random.default_rng(s.seed)
        self.seen = np.zeros(vocab_size, dtype=bool)
        self.seen[self.prompt_array] = True
        self.stream, self.stops = tokenizer.stream(), StopStrings(s.stop)
        self.bias_ids = np.array(list(s.logit_bias), dtype=np.int64)
        self.bias = np.array(list(s.logit_bias.values()), dtype=np.float32)

    def take(self, logits: np.ndarray) -> int | None:
        """Pick the next token from ``logits`` (V,) and send its text. -> the token to feed to the next decode
        step, or None when the job has ended (its "end" event sent)."""
        s = self.sampling
        if self.t_first is None:
            self.t_first = time.perf_counter()
        picked = logits
        if self.bias_ids.size:
            picked = picked.copy()
            picked[self.bias_ids] += self.bias
        if s.repetition_penalty != 1.0:
            picked = apply_repetition_penalty(picked, self.seen, s.repetition_penalty)
        token = pick_token(picked, self.rng, s.temperature, s.top_k, s.top_p)
        self.generated += 1
        if token in self.stop_ids:
            return self._finish("stop", flush=True)
        self.seen[token] = True
        entry = None if s.logprobs is None else \
            token_logprobs(self.tokenizer, token, log_softmax(logits.astype(np.float64)), s.logprobs)
        self.emit(("token", self.stops.push(self.stream.push(token)), entry))
        if self.stops.stopped:
            return self._finish("stop", flush=False)
        if self.generated == self.budget:
            return self._finish("length", flush=True)
        return token

    def _finish(self, reason: str, flush: bool) -> None:
        if flush:                                    # generation/loop.py's _text: release what was held back
            piece = self.stops.push(self.stream.flush()) + self.stops.flush()
            if self.stops.stopped:
                reason = "stop"
            if piece:
                self.emit(("token", piece, None))
        self.finish_reason, self.t_end = reason, time.perf_counter()
        self.emit(("end", reason, usage(len(self.prompt), self.generated, self.cached_tokens)))
        return None
