"""generation/batch.py: several sequences decoded together give each exactly the single-sequence loop's bits.

* the batched step's logits, row by row, equal generation/loop.py's one-token steps bit for bit, and the tokens
  equal ``generate_ids`` (greedy and seeded), for float weights and for Q4_0 weights with int8 and float decode
  activations, with sequences joining and leaving, prompts longer than the window;
* prefill chunks are fixed by absolute position, so a prefill resumed from a rewound cache equals the full one;
* a cache can be rewound only while nothing of it was overwritten;
* the stacking policy: one matmul for all rows only where it gives the one-row bits (a weight read once per step).
"""

import numpy as np
import pytest

from mistral_np.errors import InvalidArgumentError
from mistral_np.generation import generate_ids, pick_token
from mistral_np.generation.batch import (BatchDecoder, can_rewind, chunk_end, loop_defaults, prefill_chunk,
                                         prefill_together, prompts_stack, rewind, rows_agree)
from mistral_np.generation.fused import fused_decoder
from mistral_np.generation.loop import decode_params
from mistral_np.model.forward import hidden_states
from mistral_np.model.kv_cache import KVCache
from mistral_np.model.ops import linear
from mistral_np.model.params import map_weights
from mistral_np.quant.tensor import quantize
from tools.builders import random_model, tiny_config_np

CHUNK = 4


def tiny(kind):
    """Window 6, vocab 96; "q4_0": every matrix (embedding and head too) quantized to Q4_0."""
    cfg = tiny_config_np(vocab_size=96, intermediate_size=64, sliding_window=6, max_position_embeddings=128)
    model = random_model(cfg, np.float32, seed=3)
    if kind == "q4_0":
        model.params = map_weights(model.params, lambda w: quantize(w, "Q4_0") if w.ndim == 2 else w)
    return model


def single_step(model, weights, cache, ids, fused=None):
    """generation/loop.py's step, as it is written there."""
    ids = np.asarray(ids, dtype=np.int64)
    if fused is not None:
        h = fused.hidden_state(weights, ids, cache)
    else:
        h = hidden_states(weights, model.config, ids, None, model.dtype, cache)
    return linear(h[-1:], weights.lm_head)[0]


def test_chunk_end_is_fixed_by_absolute_position():
    assert [chunk_end(s, 10, 4) for s in (0, 4, 8)] == [4, 8, 10]
    assert chunk_end(5, 30, 4) == 8                       # a resumed prefill keeps the same boundaries
    assert chunk_end(0, 3, 4) == 3


@pytest.mark.parametrize("kind,activations,fused", [("float", "int8", True), ("q4_0", "int8", True),
                                                    ("q4_0", "int8", False), ("q4_0", "float", True)])
def test_batched_rows_equal_the_single_sequence_loop(kind, activations, fused):
    """fused: loop.py's compiled one-token step for Q4 layers (generation/fused.py), or the readable path."""
    model = tiny(kind)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 96, n).tolist() for n in (3, 9, 14, 25)]          # 14, 25 > window 6
    settings = [dict(temperature=0.0), dict(temperature=0.9, seed=5), dict(temperature=0.0),
                dict(temperature=1.1, top_p=0.8, seed=1)]
    steps, joins = 12, [0, 0, 3, 5]                                              # two join late, one leaves early
    stops = [steps, 7, steps, steps]
    dec = BatchDecoder(model, activations, max_rows=4, fused=fused)
    weights = decode_params(model.params, activations)
    one = fused_decoder(weights, model.config, activations) if fused else None
    assert (dec.fused is not None) == (one is not None) == (fused and kind == "q4_0")
    if kind == "q4_0":  # quantized matvecs give the one-row bits: every weight is read once a step, for all rows
        assert dec.stacked_rows("lm_head") == dec.stacked_rows("layers.1.down_proj") == frozenset({2, 3, 4})
    prompt_weights = decode_params(model.params, loop_defaults()["prompt_activations"])   # what generate_ids uses
    caches = [KVCache(model.config, max_len=64) for _ in prompts]
    refs = [KVCache(model.config, max_len=64) for _ in prompts]
    rngs = [np.random.default_rng(s.get("seed")) for s in settings]
    out, pending = [[] for _ in prompts], [None] * 4
    for t in range(steps + max(joins)):
        for b, p in enumerate(prompts):                                          # prefill, a chunk per call
            if t == joins[b]:
                for s in range(0, len(p), CHUNK):
                    ref = single_step(model, prompt_weights, refs[b], p[s:s + CHUNK])
                while (logits := prefill_chunk(model, caches[b], np.array(p), CHUNK, prompt_weights)) is None:
                    pass
                assert np.array_equal(logits, ref)
                pending[b] = _pick(logits, settings[b], rngs[b])
                out[b].append(pending[b])
        rows = [b for b in range(4) if pending[b] is not None and len(out[b]) < stops[b]]
        if not rows:
            continue
        logits = dec.step([caches[b] for b in rows], [pending[b] for b in rows])            # (B, V)
        for b, row in zip(rows, logits):
            ref = single_step(model, weights, refs[b], [pending[b]], one)
            assert np.array_equal(row, ref), f"sequence {b}, step {len(out[b])}: batched row != single step"
            pending[b] = _pick(row, settings[b], rngs[b])
            out[b].append(pending[b])
    for b, p in enumerate(prompts):
        expected = list(generate_ids(model, p, max_new_tokens=stops[b], stop_ids=(), chunk_size=CHUNK,
                                     decode_activations=activations, fused_decode=fused, **settings[b]))
        assert out[b][:stops[b]] == expected, f"sequence {b}"


def _pick(logits, setting, rng):
    return pick_token(logits, rng, setting["temperature"], 0, setting.get("top_p", 1.0))


def test_the_fused_step_of_more_rows_than_one_call_takes_equals_one_row_steps():
    """fused.py runs up to MAX_ROWS rows per compiled call (its caches go in as tuples of that length): 10 rows
    at different positions, two calls, each row the bits of its one-token step."""
    from mistral_np.generation.fused import MAX_ROWS
    model = tiny("q4_0")
    weights = decode_params(model.params, "int8")
    fused = fused_decoder(weights, model.config, "int8")
    n = MAX_ROWS + 2
    caches, refs = [[KVCache(model.config, max_len=32) for _ in range(n)] for _ in range(2)]
    for b in range(n):                                   # positions 1..10: some caches wrap the window of 6
        for cache in (caches[b], refs[b]):
            hidden_states(weights, model.config, np.arange(3, 4 + b), None, np.float32, cache)
    ids = np.arange(40, 40 + n)
    together = fused.hidden_states(weights, ids, caches)
    for b in range(n):
        assert np.array_equal(together[b], fused.hidden_state(weights, ids[b:b + 1], refs[b])[0]), f"row {b}"
        assert np.array_equal(caches[b].k, refs[b].k) and np.array_equal(caches[b].slot_pos, refs[b].slot_pos)


def test_a_resumed_prefill_equals_the_full_one():
    """Turn 1 (21 tokens, chunks 0-3 ... 20) and 6 decoded tokens; rewound to 16 (a multiple of the chunk, inside
    the full chunks), turn 2 (35 tokens sharing the first 27) resumes: cache and logits equal a fresh prefill."""
    model = tiny("q4_0")
    cfg = tiny_config_np(vocab_size=96, intermediate_size=64, sliding_window=None, max_position_embeddings=128)
    model.config = cfg                                                          # no window: nothing wraps
    rng = np.random.default_rng(1)
    turn1 = rng.integers(3, 96, 21)
    cache = KVCache(cfg, max_len=64)
    while (logits := prefill_chunk(model, cache, turn1, CHUNK)) is None:
        pass
    dec, tokens = BatchDecoder(model), []
    for _ in range(6):
        tokens.append(int(np.argmax(logits)))
        logits = dec.step([cache], [tokens[-1]])[0]
    turn2 = np.concatenate([turn1, tokens, rng.integers(3, 96, 8)])
    assert can_rewind(cache, 16)
    rewind(cache, 16)
    while (resumed := prefill_chunk(model, cache, turn2, CHUNK)) is None:
        pass
    fresh = KVCache(cfg, max_len=64)
    while (full := prefill_chunk(model, fresh, turn2, CHUNK)) is None:
        pass
    assert np.array_equal(resumed, full)
    n = len(turn2)
    assert np.array_equal(cache.slot_pos[:, :n], fresh.slot_pos[:, :n])
    assert np.array_equal(cache.k[:, :n], fresh.k[:, :n]) and np.array_equal(cache.v[:, :n], fresh.v[:, :n])
    with pytest.raises(InvalidArgumentError, match="outside the prompt"):
        prefill_chunk(model, cache, turn2, CHUNK)


def test_prompts_prefilled_together_equal_each_prompt_alone():
    """Four prompts (2, 9, 14 and 25 tokens: longer than the window 6, chunks of 4) prefilled chunk by chunk, the
    chunks of 2 tokens or more together (prefill_together), the last one-token chunks alone: after every round,
    each cache and each prompt's logits equal its own prefill_chunk calls bit for bit. One prompt resumes from a
    cache rewound to 4, as a server's prefix reuse does."""
    model = tiny("q4_0")
    weights = decode_params(model.params, "int8")
    assert prompts_stack(weights) and not prompts_stack(decode_params(model.params, "float"))
    assert not prompts_stack(tiny("float").params)
    rng = np.random.default_rng(4)
    prompts = [rng.integers(3, 96, n) for n in (2, 9, 14, 25)]
    together, alone = [KVCache(model.config, max_len=64) for _ in prompts], [KVCache(model.config, max_len=64)
                                                                            for _ in prompts]
    for c in (together[3], alone[3]):                      # a reused prefix: positions 0-3 in the cache already
        prefill_chunk(model, c, prompts[3], CHUNK, weights)
    done, rounds = [None] * 4, 0
    while any(d is None for d in done):
        rounds += 1
        todo = [b for b in range(4) if done[b] is None]
        stacked = [b for b in todo if chunk_end(together[b].next_position, len(prompts[b]), CHUNK)
                   - together[b].next_position >= 2]
        got = dict(zip(stacked, prefill_together(model, [together[b] for b in stacked], [prompts[b] for b in stacked],
                                                 CHUNK, weights))) if len(stacked) > 1 else {}
        for b in todo:
            if b not in got:
                got[b] = prefill_chunk(model, together[b], prompts[b], CHUNK, weights)
            ref = prefill_chunk(model, alone[b], prompts[b], CHUNK, weights)
            assert (got[b] is None) == (ref is None) and (ref is None or np.array_equal(got[b], ref)), (rounds, b)
            for field in ("k", "v", "slot_pos"):
                assert np.array_equal(getattr(together[b], field), getattr(alone[b], field)), (rounds, b, field)
            done[b] = got[b]
    assert rounds == 6                                     # 25 tokens from 4: 4-7, ..., 20-23, 24
    c = KVCache(model.config, max_len=64)
    for _ in range(6):                                     # 25 tokens, 0-23 prefilled: one left
        prefill_chunk(model, c, prompts[3], CHUNK, weights)
    with pytest.raises(InvalidArgumentError, match="one token"):
        prefill_together(model, [c, KVCache(model.config, max_len=64)], [prompts[3], prompts[1]], CHUNK, weights)
    with pytest.raises(InvalidArgumentError, match="int8 activations"):
        prefill_together(model, [KVCache(model.config, max_len=64)], [prompts[1]], CHUNK,
                         decode_params(model.params, "float"))


def test_a_cache_rewinds_only_while_nothing_was_overwritten():
    model = tiny("float")                                                       # window 6: a rolling buffer
    cache = KVCache(model.config, max_len=64)
    hidden_states(model.params, model.config, np.arange(5), None, np.float32, cache)
    assert can_rewind(cache, 2) and can_rewind(cache, 5)
    hidden_states(model.params, model.config, np.arange(5), None, np.float32, cache)  # positions 5..9: wrapped
    assert can_rewind(cache, 10) and not can_rewind(cache, 8) and not can_rewind(cache, 4)
    with pytest.raises(InvalidArgumentError, match="cannot rewind"):
        rewind(cache, 4)
    rewind(cache, 10)
    assert cache.next_position == 10


class RowByRow:
    """A weight whose several-row product repeats its one-row arithmetic (what a kernel may do)."""

    def __init__(self, w):
        self.w, self.shape, self.dtype, self.calls = w, w.shape, w.dtype, 0

    def matmul(self, x):
        self.calls += 1
        return np.concatenate([x[i:i + 1] @ self.w.T for i in range(len(x))])


class Blocked(RowByRow):
    """A weight whose several-row product differs in the last bits (as a gemm differs from a gemv)."""

    def matmul(self, x):
        self.calls += 1
        y = x @ self.w.T
        return y if len(x) == 1 else y * np.float32(1 + 2 ** -20)


@pytest.mark.parametrize("cls,stacked", [(RowByRow, True), (Blocked, False)])
def test_one_matmul_for_all_rows_only_where_it_gives_the_one_row_bits(cls, stacked):
    model = tiny("float")
    model.params = map_weights(model.params, lambda w: cls(w) if w.ndim == 2 and w.shape[0] != 96 else w)
    dec = BatchDecoder(model, max_rows=3)
    assert dec.stacked_rows("layers.1.down_proj") == (frozenset({2, 3}) if stacked else frozenset())
    caches = [KVCache(model.config, max_len=16) for _ in range(3)]
    q = model.params.layers[0].q_proj
    before = q.calls
    dec.step(caches, [5, 6, 7])
    assert q.calls - before == (1 if stacked else 3)             # the weight read once per step, or once per row
    assert rows_agree(q, 3, 32, np.float32) is stacked
    never = BatchDecoder(model, max_rows=3, stacking="never")
    assert never.stacked_rows("layers.0.q_proj") == frozenset()


def test_stacking_always_is_close_and_arguments_are_checked():
    model = tiny("q4_0")
    caches = [[KVCache(model.config, max_len=16) for _ in range(2)] for _ in range(2)]
    exact = BatchDecoder(model, "float", max_rows=2).step(caches[0], [5, 6])
    forced = BatchDecoder(model, "float", max_rows=2, stacking="always").step(caches[1], [5, 6])
    np.testing.assert_allclose(forced, exact, rtol=1e-4, atol=1e-4 * float(np.abs(exact).max()))
    with pytest.raises(InvalidArgumentError, match="stacking"):
        BatchDecoder(model, stacking="sometimes")
    with pytest.raises(InvalidArgumentError, match="distinct caches"):
        BatchDecoder(model, max_rows=2).step([caches[0][0]] * 2, [1, 2])
