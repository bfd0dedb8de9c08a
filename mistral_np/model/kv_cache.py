"""The KV cache: the keys and values of past tokens, kept beside the model (never inside it).

What it computes
    ``cache.layer(l).update(k, v, positions) -> (k_all, v_all, k_pos)``: store the new keys/values of layer
    l and return every key/value the new queries may need, each labelled with its absolute position,
    so that ``masks.sliding_window_causal_mask`` decides visibility from positions alone.
    k, v (T, K, Dh), positions (T,)  ->  k_all, v_all (S, K, Dh), k_pos (S,)   (S = visible-key candidates)
    Without a cache, the model uses ``NO_CACHE``, whose ``update`` returns the new keys themselves.

Layout (per layer): ``slots`` rows of keys and values, and ``slot_pos`` (slots,), the absolute position
held by each slot (-1 = empty). Position p always lives in slot ``p % slots``. Keys are stored after
RoPE (rotated by their absolute position), so the order of the slots never matters.

* ``sliding_window`` W set: a rolling buffer of W slots (mistral-inference's ``RotatingBufferCache``,
  docs/references.md#rolling-cache). A query at i sees keys i-W+1 .. i, so once position p is written, p - W is never needed
  again and its slot is reused. (If the cache is made for fewer than W positions in total, it holds just
  ``max_len`` slots and never wraps.)
* ``sliding_window`` None: ``max_len`` slots, preallocated; slot p holds position p, nothing wraps.

Two ways to update, chosen per call:

1. The write cannot destroy a key that a query of this chunk still needs (always for decoding one
   token, and for every chunk of a cache that does not wrap): write first, then return the buffer
   itself (views, no copy), as mistral-inference decodes.
2. Otherwise (a chunk of several tokens on a wrapped rolling buffer, or a chunk longer than the buffer):
   return the previously cached keys (valid slots, slot order) followed by the chunk's keys, THEN write
   only the last ``slots`` keys of the chunk, as mistral-inference's chunked prefill does
   (``interleave_kv`` before ``update``).

Worked example, W = 3, one sequence, a prompt of 14 tokens prefilled in chunks of 5, 7 and 2 (the lengths
of mistral-inference's ``get_input_metadata`` example, there three sequences of one batch; its
``to_cache_mask = [0 0 1 1 1 | ...]`` says the same thing: only the last W tokens of a chunk are written),
then two decoded tokens::

    call            positions   attends over (k_pos: cached | chunk)   slot_pos after   way
    chunk (T=5)     0..4        - | 0 1 2 3 4                           [3, 4, 2]        2 (T > W)
    chunk (T=7)     5..11       3 4 2 | 5 6 7 8 9 10 11                 [9, 10, 11]      2 (T > W)
    chunk (T=2)     12 13       9 10 11 | 12 13                         [12, 13, 11]     2 (query 12 needs 10)
    decode          14          12 13 14 (the buffer)                   [12, 13, 14]     1 (11 = 14-W: not needed)
    decode          15          15 13 14 (the buffer)                   [15, 13, 14]     1

The mask then hides what the window excludes: in the third call query 12 sees 10 11 12 (key 9 masked),
query 13 sees 11 12 13.

Memory: 2 (keys, values) x L x slots x K x Dh x itemsize bytes, plus L x slots int64 positions.
Mistral-7B v0.1 (L=32, W=4096, K=8, Dh=128) in float32: 2 x 32 x 4096 x 8 x 128 x 4 = 1 GiB.

docs/figures/rolling_buffer.png draws the slots over a chunked prefill and decode (docs/tour.md);
``mistral-np trace MODEL "..." --cache`` prints them for a real prompt.

tests/test_kv_cache.py replays the worked example above and checks that a prompt prefilled in random chunks and
then decoded gives the logits of one full pass without a cache, on random tiny models whose rolling buffer wraps.

next: masks.py (which of these keys a query may see).
"""

from __future__ import annotations

import numpy as np

from .config import MistralConfig


class KVCache:
    """Per-layer key/value buffers for one sequence. ``dtype`` must be the model's compute dtype."""

    def __init__(self, cfg: MistralConfig, max_len: int | None = None, dtype=np.float32):
        max_len = cfg.max_position_embeddings if max_len is None else int(max_len)
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        W = cfg.sliding_window
        L, K, Dh = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
        self.window, self.max_len, self.dtype = W, max_len, np.dtype(dtype)
        self.slots = max_len if W is None else min(W, max_len)
        self.k = np.zeros((L, self.slots, K, Dh), dtype=self.dtype)       # keys after RoPE
        self.v = np.zeros((L, self.slots, K, Dh), dtype=self.dtype)
        self.slot_pos = np.full((L, self.slots), -1, dtype=np.int64)       # absolute position per slot
        self.seen = np.zeros(L, dtype=np.int64)                            # positions written, per layer

    @property
    def next_position(self) -> int:
        """The absolute position of the next token (= tokens seen so far)."""
        return int(self.seen[-1])

    @property
    def nbytes(self) -> int:
        """Memory held by the cache, in bytes."""
        return self.k.nbytes + self.v.nbytes + self.slot_pos.nbytes

    def reset(self) -> None:
        """Forget everything (the buffers are kept and reused)."""
        self.slot_pos.fill(-1)
        self.seen.fill(0)

    def layer(self, index: int) -> "LayerCache":
        """Layer ``index``'s view of the cache: what the attention of that layer talks to."""
        return LayerCache(self, index)

    def update(self, layer: int, k: np.ndarray, v: np.ndarray, positions: np.ndarray):
        """Store one layer's new keys/values; -> keys, values and positions to attend over."""
        T = len(positions)
        assert k.shape == v.shape == (T,) + self.k.shape[2:], (k.shape, v.shape, self.k.shape)
        if k.dtype != self.dtype:
            raise ValueError(f"KV cache dtype {self.dtype} != activation dtype {k.dtype}: make the cache with "
                             "the model's dtype")
        start = int(self.seen[layer])
        if T == 0 or positions[0] != start or np.any(np.diff(positions) != 1):
            raise ValueError(f"cache layer {layer}: expected consecutive positions from {start}, got "
                             f"{np.asarray(positions)[:5].tolist()}...")
        if start + T > self.max_len:
            raise ValueError(f"KV cache full: positions up to {start + T - 1} do not fit in max_len={self.max_len}")
        keep = slice(max(0, T - self.slots), T)            # only the last `slots` tokens are stored
        slots = positions[keep] % self.slots
        old = self.slot_pos[layer, slots]                  # positions about to be overwritten
        oldest_needed = -1 if self.window is None else start - self.window + 1
        write_first = T <= self.slots and not np.any((old >= 0) & (old >= oldest_needed))
        if write_first:                                    # way 1: write, then attend over the buffer
            self._write(layer, k[keep], v[keep], positions[keep], slots)
            end = min(self.slots, start + T)               # a buffer that has not wrapped yet: its prefix
            out = self.k[layer, :end], self.v[layer, :end], self.slot_pos[layer, :end]
        else:                                              # way 2: cached + chunk, then write
            valid = self.slot_pos[layer] >= 0
            out = (np.concatenate([self.k[layer][valid], k]), np.concatenate([self.v[layer][valid], v]),
                   np.concatenate([self.slot_pos[layer][valid], positions]))    # (S, K, Dh) x2, (S,)
            self._write(layer, k[keep], v[keep], positions[keep], slots)
        self.seen[layer] = start + T
        return out

    def _write(self, layer, k, v, positions, slots):
        self.k[layer, slots], self.v[layer, slots], self.slot_pos[layer, slots] = k, v, positions

    def __repr__(self):
        return (f"KVCache(slots={self.slots}, window={self.window}, max_len={self.max_len}, dtype={self.dtype}, "
                f"next_position={self.next_position}, {self.nbytes / 2**20:.1f} MiB)")


class LayerCache:
    """One layer's view of a ``KVCache``: ``update(k, v, positions)`` stores and returns what to attend over."""

    def __init__(self, cache: KVCache, index: int):
        self.cache, self.index = cache, index

    def update(self, k: np.ndarray, v: np.ndarray, positions: np.ndarray):
        return self.cache.update(self.index, k, v, positions)


class _NoCache:
    """No cache: the new tokens attend to each other only; nothing is stored."""

    def update(self, k: np.ndarray, v: np.ndarray, positions: np.ndarray):
        return k, v, positions


NO_CACHE = _NoCache()
