"""Exercise ``rolling_cache``: the rolling-buffer KV cache's update, the one call attention makes.

Solution: mistral_np/model/kv_cache.py:KVCache.update (a method: ``KVCache.update(cache, layer, k, v,
positions)`` is the function the learner writes). The learner's function gets a ``KVCache`` whose arrays it
reads and writes: ``cache.k``, ``cache.v`` (L, slots, K, Dh), ``cache.slot_pos`` (L, slots), the absolute
position in each slot (-1 = empty), ``cache.seen`` (L,), the positions stored so far per layer, and
``cache.slots``, ``cache.window``.

What the checks accept: the keys and values may come back in any order (the mask reads their positions), and
extra keys a query cannot see do no harm; but every key a query of the call needs must be there once,
labelled with its own position, and afterwards position p must sit in slot p % slots. The checks replay the
worked example of model/kv_cache.py (W = 3, chunks of 5, 7, 2, then two decoded tokens) as
tests/test_kv_cache.py does, decode past the window one token at a time, fill a cache without a window, and
finally run a random tiny model with the learner's update in place of the project's and compare its logits
with one pass without a cache.

next: q4_0.py
"""

from __future__ import annotations

import numpy as np

from ..model.config import MistralConfig
from ..model.forward import forward
from ..model.kv_cache import KVCache
from ..model.params import LayerParams, ModelParams
from .checker import Check, Exercise, Wrong, as_array, call

K, DH = 2, 4


def _config(window, layers=2):
    return MistralConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=K, head_dim=DH, sliding_window=window,
                         max_position_embeddings=256)


def _needed(positions, window):
    """Every position some query of the call may attend to."""
    lo = 0 if window is None else max(0, int(positions[0]) - window + 1)
    return set(range(lo, int(positions[-1]) + 1))


def _identify(vector, table):
    for p, known in table.items():
        if np.array_equal(vector, known):
            return p
    return None


def _returned(out):
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise Wrong(f"your update must return three things, (k_all, v_all, k_pos); it returned "
                    f"{type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    k_all, v_all, k_pos = (as_array(a, "your update") for a in out)
    if k_pos.ndim != 1 or k_all.shape != (len(k_pos), K, DH) or v_all.shape != k_all.shape:
        raise Wrong(f"expected k_all and v_all of shape (S, K, Dh) = (S, {K}, {DH}) and k_pos of shape (S,), with "
                    f"the same S; got {k_all.shape}, {v_all.shape} and {k_pos.shape}")
    return k_all, v_all, k_pos.astype(np.int64)


def _verify_call(fn, cache, twin, layer, positions, keys, values, call_no):
    """One update call of the learner (on ``cache``) and of the solution (on ``twin``); Wrong if they differ in
    anything that matters."""
    pos = np.asarray(positions, dtype=np.int64)
    k, v = np.stack([keys[p] for p in pos]), np.stack([values[p] for p in pos])
    label = f"call {call_no} (positions {pos[0]}..{pos[-1]}" + (f", after {pos[0]} stored)" if pos[0] else ")")
    k_all, v_all, k_pos = _returned(call(fn, cache, layer, k.copy(), v.copy(), pos.copy()))
    KVCache.update(twin, layer, k, v, pos)
    W, slots = cache.window, cache.slots
    real = k_pos[k_pos >= 0]
    future = real[real > pos[-1]]
    if len(future):
        raise Wrong(f"{label}: you returned a key labelled position {future[0]}, which has not been seen yet")
    values_of, counts = np.unique(real, return_counts=True)
    if (counts > 1).any():
        p = values_of[counts > 1][0]
        raise Wrong(f"{label}: position {p} comes back {counts[counts > 1][0]} times. A key returned twice is "
                    f"counted twice in the softmax: return each position once (the cached keys, then the new ones "
                    f"that are not cached yet).")
    for s, p in enumerate(k_pos):
        if p < 0:
            continue
        if not np.array_equal(k_all[s], keys[p]) or not np.array_equal(v_all[s], values[p]):
            which = "key" if not np.array_equal(k_all[s], keys[p]) else "value"
            actual = _identify(k_all[s] if which == "key" else v_all[s], keys if which == "key" else values)
            whose = f"the {which} of position {actual}" if actual is not None else "no position's " + which
            raise Wrong(f"{label}: the {which} you label position {p} is {whose}. Keep k_pos in step with the "
                        f"keys and values: entry s of k_pos is the position of k_all[s] and v_all[s].")
    missing = sorted(_needed(pos, W) - set(real.tolist()))
    if missing:
        p = missing[0]
        query = next(int(i) for i in pos if p <= i and (W is None or i - p < W))
        clash = [int(i) for i in pos if i % slots == p % slots and i != p]
        why = (f" Position {clash[0]} of this call goes to the same slot ({p} % {slots} = {clash[0]} % {slots} = "
               f"{p % slots}): writing the chunk before returning the cached keys destroyed it. Return the cached "
               f"keys and the chunk first, then write (mistral-inference's interleave_kv before update)."
               if clash else "")
        raise Wrong(f"{label}: the query at position {query} needs the key of position {p} (W = {W}), but your "
                    f"update returned no key labelled {p}.{why}")
    if not np.array_equal(cache.slot_pos[layer], twin.slot_pos[layer]):
        s = int(np.argwhere(cache.slot_pos[layer] != twin.slot_pos[layer])[0][0])
        raise Wrong(f"{label}: afterwards slot {s} holds position {cache.slot_pos[layer][s]}, expected "
                    f"{twin.slot_pos[layer][s]}. Position p lives in slot p % {slots}, and only the last {slots} "
                    f"positions stay (slot_pos now: {cache.slot_pos[layer].tolist()}, expected "
                    f"{twin.slot_pos[layer].tolist()}).")
    held = cache.slot_pos[layer] >= 0
    for s in np.flatnonzero(held):
        p = int(cache.slot_pos[layer][s])
        if not np.array_equal(cache.k[layer, s], keys[p]) or not np.array_equal(cache.v[layer, s], values[p]):
            raise Wrong(f"{label}: slot {s} says it holds position {p}, but cache.k / cache.v there are not that "
                        f"position's key and value: write the keys where you write their positions.")
    if int(cache.seen[layer]) != int(twin.seen[layer]):
        raise Wrong(f"{label}: cache.seen[{layer}] is {int(cache.seen[layer])} afterwards, expected "
                    f"{int(twin.seen[layer])} (the positions stored so far: the next call starts there, and "
                    f"cache.next_position reads it).")
    for other in range(cache.slot_pos.shape[0]):
        if other != layer and not np.array_equal(cache.slot_pos[other], twin.slot_pos[other]):
            raise Wrong(f"{label}: an update of layer {layer} changed layer {other}'s slots: each layer has its own.")


def _sequence(window, max_len, chunks, layers=2):
    """Check: chunks of (layer-0 ... layer-L-1) updates, as the model makes them, against the solution."""
    def run(fn):
        cfg = _config(window, layers)
        cache = KVCache(cfg, max_len=max_len, dtype=np.float64)
        twin = KVCache(cfg, max_len=max_len, dtype=np.float64)
        r = np.random.default_rng(0)
        total = sum(chunks)
        tables = [({p: r.standard_normal((K, DH)) for p in range(total)},
                   {p: r.standard_normal((K, DH)) for p in range(total)}) for _ in range(layers)]
        start = 0
        for n, c in enumerate(chunks, 1):
            for layer in range(layers):
                _verify_call(fn, cache, twin, layer, range(start, start + c), *tables[layer], n)
            start += c
    return run


def _random_params(cfg, seed=0):
    r = np.random.default_rng(seed)
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim

    def mat(o, i):
        return r.standard_normal((o, i)) * 1.5 / np.sqrt(i)

    layers = [LayerParams(1 + 0.2 * r.standard_normal(D), mat(q, D), mat(kv, D), mat(kv, D), mat(D, q),
                          1 + 0.2 * r.standard_normal(D), mat(F, D), mat(F, D), mat(D, F))
              for _ in range(cfg.num_hidden_layers)]
    return ModelParams(mat(V, D), layers, 1 + 0.2 * r.standard_normal(D), mat(V, D))


def _end_to_end(fn):
    cfg = _config(4)
    params = _random_params(cfg)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, 20)
    full = forward(params, cfg, ids, dtype=np.float64)

    class LearnersCache(KVCache):
        def update(self, layer, k, v, positions):
            return _returned(call(fn, self, layer, k, v, positions))

    cache = LearnersCache(cfg, max_len=len(ids), dtype=np.float64)
    at = 0
    for c in [5, 7, 2] + [1] * 6:
        with np.errstate(all="ignore"):
            got = forward(params, cfg, ids[at:at + c], dtype=np.float64, cache=cache)
            diff = np.abs(got - full[at:at + c]).max(axis=1)
        bad = ~(diff <= 1e-9 * np.abs(full).max())
        if bad.any():
            t = at + int(np.argmax(bad))
            what = ("NaN: one of its queries found no key it may see (every score masked), so the keys the call "
                    "needs did not come back" if np.isnan(diff).any() else f"off by up to {np.nanmax(diff):.3g}")
            raise Wrong(f"with your update, a random 2-layer model (W = 4) run in chunks of 5, 7, 2 and then one "
                        f"token at a time does not give the logits of one pass without a cache: from the token at "
                        f"position {t} on (the call for positions {at}..{at + c - 1}) they are {what}.")
        at += c


EXERCISE = Exercise(
    name="rolling_cache", title="rolling-buffer KV cache update", function="kv_cache_update",
    signature="kv_cache_update(cache, layer, k, v, positions)", aliases=("update",),
    solution="mistral_np/model/kv_cache.py:KVCache.update", solve=KVCache.update,
    task="""cache: a mistral_np KVCache. Read and write cache.k[layer], cache.v[layer] (slots, K, Dh),
cache.slot_pos[layer] (slots,): the absolute position each slot holds, -1 = empty; cache.seen[layer]: how
many positions this layer has stored. cache.slots = W with a window (cache.window), else max_len.
k, v (T, K, Dh): the keys (already rotated) and values of T new tokens; positions (T,): their absolute
positions, consecutive, starting at cache.seen[layer].
-> (k_all, v_all, k_pos): (S, K, Dh), (S, K, Dh), (S,): every key and value a query of this call may see
(0 <= i - j < W), in any order, each once, with its position. Afterwards position p sits in slot p % slots
(only the last `slots` positions stay) and cache.seen[layer] is positions[-1] + 1.
Careful: a chunk's first query may need a cached key that a later token of the same chunk overwrites.""",
    checks=[
        Check("the first chunk of an empty cache: W = 4, positions 0..2", _sequence(4, 32, [3])),
        Check("decoding one token at a time past the window: W = 4, positions 0..9", _sequence(4, 32, [1] * 10)),
        Check("the worked example of model/kv_cache.py: W = 3, chunks of 5, 7 and 2, then two decoded tokens",
              _sequence(3, 32, [5, 7, 2, 1, 1])),
        Check("no window: 8 slots filled in chunks of 3, 3 and 2", _sequence(None, 8, [3, 3, 2])),
        Check("end to end: a random model with your update gives the logits of one pass without a cache",
              _end_to_end),
    ],
)
