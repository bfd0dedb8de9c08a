"""Slots: a KV cache each, the tokens it holds, and which of them a new prompt may reuse.

A slot keeps its tokens and its cache after a request ends (or is cancelled), so the next turn of a chat,
whose prompt repeats the conversation so far, can continue from the cache instead of running it again.

What may be reused, exactly (the output must not change: reuse on and off give the same tokens):

* only the **canonical** prefix: positions that went through full prefill chunks, fixed by absolute position
  (generation/batch.py). A fresh prefill of the new prompt would run those very chunks with those very tokens,
  so the cached keys and values are bit for bit what it would compute. The last, partial chunk of a prompt and
  every decoded token were computed otherwise (a shorter product; a one-row decode step, maybe with int8
  activations), so they are recomputed;
* so the reused length is a multiple of the chunk: ``min(common prefix, canonical, len(prompt) - 1)`` rounded
  down to one (at least one prompt token must run, for the logits of the first answer token);
* and only what the rolling buffer still holds: a windowed cache that wrapped has overwritten keys the resumed
  position would need, so it can only continue from its very end (``batch.can_rewind``); otherwise 0.

Example, chunk 8: turn 1 is a 21-token prompt (chunks 0-7, 8-15, 16-20: canonical 16) and a 6-token answer;
turn 2 is 35 tokens starting with those 27. Reuse 16, prefill 16-23, 24-31, 32-34: exactly the chunks a fresh
prefill of the 35 tokens runs from 16 on.

Which slot: the one with the longest reusable prefix; among equals, the least recently used, so that the
conversations other slots hold survive longest.

tests/test_serve_units.py checks the reuse rule (the common canonical prefix rounded down to the chunk) and
the choice of slot (the longest reuse, then the least recently used); tests/test_serve.py and
tests/test_serve_smollm2.py check that a second chat turn reuses the cache and equals the answer computed
without it.

next: jobs.py.
"""

from __future__ import annotations

import time

from ..generation.batch import can_rewind


class Slot:
    """One sequence's place: ``cache`` (a KVCache), ``tokens`` (exactly the positions the cache holds),
    ``canonical`` (how many leading tokens are reusable), the ``job`` running in it (or None)."""

    def __init__(self, index: int, cache):
        self.index, self.cache = index, cache
        self.tokens: list[int] = []
        self.canonical = 0
        self.job = None
        self.last_used = 0.0

    def reusable(self, prompt: list[int], chunk: int) -> int:
        """How many leading tokens of ``prompt`` this slot's cache can serve exactly (a multiple of ``chunk``)."""
        n, limit = 0, min(self.canonical, len(prompt) - 1)
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        n -= n % chunk
        return n if n > 0 and can_rewind(self.cache, n) else 0

    def __repr__(self):
        return (f"Slot({self.index}, tokens={len(self.tokens)}, canonical={self.canonical}, "
                f"busy={self.job is not None})")


def choose_slot(slots: list[Slot], prompt: list[int], chunk: int, reuse: bool = True) -> tuple[Slot | None, int]:
    """-> (the free slot for ``prompt``, how many of its tokens to reuse); (None, 0) if every slot is busy."""
    free = [s for s in slots if s.job is None]
    if not free:
        return None, 0
    scored = [(s.reusable(prompt, chunk) if reuse else 0, -s.last_used, s) for s in free]
    n, _, slot = max(scored, key=lambda t: (t[0], t[1]))
    return slot, n


def touch(slot: Slot) -> None:
    slot.last_used = time.monotonic()
