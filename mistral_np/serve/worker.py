"""The worker thread: it alone touches the model, the slots and their caches.

The event loop (app.py) only ``submit``s jobs and sets their ``cancelled`` flag; everything else happens here,
one iteration at a time:

    admit      waiting jobs, oldest first, into free slots (slots.py: the longest reusable prefix wins);
               at most one embedding job runs per iteration, whole
    prefill    ONE chunk of the prompt admitted first, so running streams wait one chunk at most; where prompts
               stack (int8 prompt matmuls), the next chunks of other prompts join it in one pass over the weights
               up to ``chunk`` tokens in all (generation/batch.py:prefill_together): four prompts that arrive
               together read the weights once, not four times
    decode     one batched step for every slot that has a token to feed (generation/batch.py)

A job whose prompt is complete samples its first token from the prefill's logits and joins the decode steps
from the next iteration on; a job that ends (stop, length) or is cancelled (its client went away) frees its
slot at once, keeping the slot's tokens and cache for the next request that extends them.

The queue is bounded: ``submit`` refuses a job (app.py answers 503 with Retry-After) when the jobs waiting
and running already number ``slots + max_queue``.

tests/test_serve.py checks it through the running server: four concurrent streams each equal the stream alone,
a full queue gives 503, and a disconnect frees the slot at once; tests/test_serve_smollm2.py runs the
concurrent streams on a real model.

next: app.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from ..errors import MistralNPError
from ..generation.batch import BatchDecoder, chunk_end, prefill_chunk, prefill_together, prompts_stack, rewind
from ..generation.loop import decode_params
from ..model.kv_cache import KVCache
from .jobs import EmbedJob, GenerateJob
from .slots import Slot, choose_slot, touch

log = logging.getLogger("mistral_np.serve")


class Worker:
    """Owns ``model`` (None for an embedder-only server), ``embedder`` (or None) and ``slots`` KV caches of
    ``ctx`` positions each; prefill chunks of ``chunk`` tokens; ``max_queue`` jobs may wait beyond the slots."""

    def __init__(self, model, embedder=None, slots: int = 4, max_queue: int = 16, ctx: int = 4096,
                 chunk: int = 128, prompt_activations: str = "float", decode_activations: str = "int8",
                 stacking: str = "auto", reuse: bool = True, threads: int | None = None):
        self.model, self.embedder, self.ctx, self.chunk, self.reuse = model, embedder, ctx, chunk, reuse
        self.max_queue, self.threads = max_queue, threads
        self._decoder_args = (decode_activations, slots, stacking)
        self.prompt_weights = None if model is None else decode_params(model.params, prompt_activations)
        self.stack_prompts = model is not None and prompts_stack(self.prompt_weights)
        self.slots = [] if model is None else \
            [Slot(i, KVCache(model.config, max_len=ctx, dtype=model.dtype)) for i in range(slots)]
        self.capacity = max(1, len(self.slots)) + max_queue
        self.waiting: deque = deque()
        self.embedding = None                      # the embedding job running now
        self.cond = threading.Condition()
        self.stopping = False
        self.decoder = None
        self.ready, self.startup_error = threading.Event(), None
        self.thread = threading.Thread(target=self._main, name="mistral-np-worker", daemon=True)

    # ---------------------------------------------------------------------------- the event loop's side
    def start(self) -> None:
        """Start the thread and wait until the model is warm (kernels compiled, batching probed)."""
        self.thread.start()
        self.ready.wait()
        if self.startup_error is not None:
            raise self.startup_error

    def submit(self, job) -> bool:
        """Queue ``job``; False if the queue is full (or the worker stopping)."""
        with self.cond:
            if self.stopping or self._pending() >= self.capacity:
                return False
            self.waiting.append(job)
            self.cond.notify()
            return True

    def cancel(self, job) -> None:
        """The client went away: stop the job at the next iteration and free its slot."""
        job.cancelled = True
        with self.cond:
            self.cond.notify()

    def counts(self) -> dict:
        with self.cond:
            return {"slots": len(self.slots), "busy": sum(s.job is not None for s in self.slots),
                    "queued": len(self.waiting), "max_queue": self.max_queue}

    def stop(self, timeout: float = 10.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _pending(self) -> int:
        return len(self.waiting) + sum(s.job is not None for s in self.slots) + (self.embedding is not None)

    # ---------------------------------------------------------------------------- the worker's side
    def _main(self) -> None:
        try:
            self._warm_up()
        except Exception as e:                              # reported by start() in the calling thread
            self.startup_error = e
            self.ready.set()
            return
        self.ready.set()
        while True:
            with self.cond:
                while not self.stopping and not self.waiting and not any(s.job for s in self.slots):
                    self.cond.wait()
                if self.stopping:
                    break
                self._admit()
            if self.embedding is not None:
                self._embed(self.embedding)
                continue
            self._step()
        self._shut_down()

    def _warm_up(self) -> None:
        if self.threads is not None:
            from ..threads import set_threads              # Numba's thread count is per thread: set it here too
            set_threads(self.threads)
        if self.model is not None:
            activations, rows, stacking = self._decoder_args
            self.decoder = BatchDecoder(self.model, activations, max_rows=rows, stacking=stacking)
            slot = self.slots[0]
            prefill_chunk(self.model, slot.cache, _warm_up_ids(self.model), self.chunk, self.prompt_weights)
            self.decoder.step([slot.cache], [0])   # compiles the step for every row count (fused.py: MAX_ROWS)
            slot.cache.reset()
        if self.embedder is not None:
            self.embedder.encode(["warm up"])

    def _admit(self) -> None:
        """Under the lock: cancelled jobs leave the queue, generation jobs take free slots in order, and the
        first embedding job is taken to run now."""
        for job in list(self.waiting):
            if job.cancelled:
                self.waiting.remove(job)
            elif isinstance(job, EmbedJob):
                if self.embedding is None:
                    self.waiting.remove(job)
                    self.embedding = job
            else:
                slot, reuse = choose_slot(self.slots, job.prompt, self.chunk, self.reuse)
                if slot is None:
                    continue
                self.waiting.remove(job)
                self._start(job, slot, reuse)

    def _start(self, job: GenerateJob, slot: Slot, reuse: int) -> None:
        if reuse:
            rewind(slot.cache, reuse)
        else:
            slot.cache.reset()
        slot.tokens, slot.canonical, slot.job, slot.pending = job.prompt[:reuse], reuse, job, None
        touch(slot)
        job.slot = slot.index
        job.begin(self.model.tokenizer, self.model.config.vocab_size, reuse)

    def _release(self, slot: Slot) -> None:
        with self.cond:
            slot.job, slot.pending = None, None
            touch(slot)
            self.cond.notify()

    def _step(self) -> None:
        for slot in self.slots:                               # clients that went away
            if slot.job is not None and slot.job.cancelled:
                slot.job.t_end = time.perf_counter()
                self._release(slot)
        prefilling = sorted((s for s in self.slots if s.job is not None and s.pending is None),
                            key=lambda s: s.job.t_start)
        if prefilling:
            self._guarded(self._prefill_group(prefilling), self._prefill)
        decoding = [s for s in self.slots if s.job is not None and s.pending is not None]
        if decoding:
            self._guarded(decoding, self._decode)

    def _guarded(self, slots, fn) -> None:
        """Run ``fn(slots)``; a failure (a bug, not user input: requests are checked before they get here) ends
        those requests with HTTP 500 and clears their slots, and the server goes on."""
        try:
            fn(slots)
        except Exception:
            log.exception("model step failed")
            for s in slots:
                if s.job is not None:
                    s.job.fail(500, "internal error in the model step (see the server log)")
                s.cache.reset()
                s.tokens, s.canonical = [], 0
                self._release(s)

    def _prefill_group(self, prefilling):
        """The slots whose next prompt chunk runs now: the oldest job's, and, where prompts stack (int8 prompt
        matmuls, generation/batch.py:prompts_stack), the next ones' too while all of them together are at most
        ``chunk`` tokens (a running stream still waits for one chunk's worth at most), each chunk of 2 tokens or
        more (one token goes through the decode kernel: alone)."""
        group, total = [], 0
        for s in prefilling:
            start = s.cache.next_position
            n = chunk_end(start, len(s.job.prompt), self.chunk) - start
            if n < 2 or not self.stack_prompts or total + n > self.chunk:
                if not group:
                    return [s]
                continue
            group.append(s)
            total += n
        return group

    def _prefill(self, slots) -> None:
        starts = [s.cache.next_position for s in slots]
        if len(slots) == 1:
            logits = [prefill_chunk(self.model, slots[0].cache, slots[0].job.prompt_array, self.chunk,
                                    self.prompt_weights)]
        else:                                    # one pass over the weights, each prompt's bits as alone
            logits = prefill_together(self.model, [s.cache for s in slots], [s.job.prompt_array for s in slots],
                                      self.chunk, self.prompt_weights)
        for slot, start, row in zip(slots, starts, logits):
            end = slot.cache.next_position
            slot.tokens.extend(slot.job.prompt[start:end])
            if slot.canonical == start and end % self.chunk == 0:     # a full chunk at its absolute place
                slot.canonical = end
            if row is not None:
                self._took(slot, slot.job.take(row))

    def _decode(self, slots) -> None:
        logits = self.decoder.step([s.cache for s in slots], [s.pending for s in slots])     # (B, V)
        for s, row in zip(slots, logits):
            s.tokens.append(s.pending)
            if s.job.cancelled:
                self._release(s)
            else:
                self._took(s, s.job.take(row))

    def _took(self, slot: Slot, token: int | None) -> None:
        if token is None:
            self._release(slot)
        else:
            slot.pending = token

    def _embed(self, job: EmbedJob) -> None:
        job.t_start = time.perf_counter()
        try:
            vectors = self.embedder.encode(job.texts, instruction=job.instruction, prompt_name=job.prompt_name)
            prompt = self.embedder.prompt(job.instruction, job.prompt_name)
            job.prompt_tokens = sum(len(self.embedder.token_ids(t, prompt)[0]) for t in job.texts)
        except MistralNPError as e:
            job.fail(400, str(e))
        except Exception:
            log.exception("embedding failed")
            job.fail(500, "internal error while embedding (see the server log)")
        else:
            job.t_end = time.perf_counter()
            job.emit(("embeddings", vectors, job.prompt_tokens))
        with self.cond:
            self.embedding = None
            self.cond.notify()

    def _shut_down(self) -> None:
        with self.cond:
            jobs = list(self.waiting) + [s.job for s in self.slots if s.job is not None]
            self.waiting.clear()
        for job in jobs:
            job.fail(503, "the server is shutting down")


def _warm_up_ids(model) -> np.ndarray:
    """The two tokens prefilled at start-up to load the compiled kernels (two, so that the prompt kernels load
    too: with one, the first request paid for them, 7 s on the 7B shape when they had to compile): BOS if the
    model has one, else id 0."""
    bos = model.tokenizer.bos_id if model.tokenizer is not None else None
    return np.full(2, 0 if bos is None else bos, dtype=np.int64)
