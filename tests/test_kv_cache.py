"""KVCache (kv_cache.py): the docstring's worked example, and cached == uncached on random tiny models.

The consistency property: prefill a prompt in random chunks (sizes 1..2W, so chunks longer than the
window are covered too), decode the rest one token at a time, and compare every logit with one full
``forward`` (sliding-window mask, no cache). Sequences are always longer than the window (W+1 .. 4W),
so the rolling buffer wraps and the window bites.

float32 tolerance: the cached path sums the same terms as the full pass (masked keys contribute an exact
0), only in another order and with other matrix shapes (hence other BLAS blockings): two float32
computations of one value, held to the derived bound of conftest.f32_bound (4 x the full pass's distance
from the float64 computation on the same weights, docs/conventions.md).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import F64_ABS, assert_close, f32_bound
from tools.builders import random_model, tiny_config_np as tiny
from mistral_np.model.kv_cache import KVCache
from mistral_np.api import Model
from mistral_np.model.forward import forward
from mistral_np.model.params import map_weights


# ------------------------------------------------------------------------------------------------ example
def test_docstring_worked_example():
    """W=3, chunks of 5, 7, 2 then two decoded tokens: what each call sees and what the slots hold."""
    cache = KVCache(tiny(num_hidden_layers=1, num_key_value_heads=1, num_attention_heads=1, head_dim=2,
                         sliding_window=3), dtype=np.float64)
    expected = [  # (positions, k_pos returned, slot_pos after)
        (range(0, 5), [0, 1, 2, 3, 4], [3, 4, 2]),
        (range(5, 12), [3, 4, 2, 5, 6, 7, 8, 9, 10, 11], [9, 10, 11]),
        (range(12, 14), [9, 10, 11, 12, 13], [12, 13, 11]),
        (range(14, 15), [12, 13, 14], [12, 13, 14]),
        (range(15, 16), [15, 13, 14], [15, 13, 14]),
    ]
    for positions, k_pos, slots_after in expected:
        pos = np.array(positions, dtype=np.int64)
        k = np.repeat(pos.astype(np.float64), 2).reshape(-1, 1, 2)   # key value = its position
        k_all, v_all, got_pos = cache.update(0, k, -k, pos)
        assert got_pos.tolist() == k_pos
        assert k_all[:, 0, 0].tolist() == k_pos and v_all[:, 0, 0].tolist() == [-p for p in k_pos]
        assert cache.slot_pos[0].tolist() == slots_after
        assert cache.next_position == pos[-1] + 1


def test_window_longer_than_max_len_never_wraps():
    cache = KVCache(tiny(sliding_window=16), max_len=6, dtype=np.float32)
    assert cache.slots == 6
    k = np.zeros((6, 2, 8), np.float32)
    _, _, k_pos = cache.update(0, k, k, np.arange(6))
    assert k_pos.tolist() == list(range(6))


# ------------------------------------------------------------------------------------------------ consistency
@st.composite
def cases(draw, with_window=True):
    W = draw(st.integers(3, 16)) if with_window else None
    span = W or draw(st.integers(3, 16))
    T = draw(st.integers(span + 1, 4 * span))
    prefill = draw(st.integers(1, T))
    chunks, done = [], 0
    while done < prefill:
        c = min(draw(st.integers(1, 2 * span)), prefill - done)
        chunks.append(c)
        done += c
    K = draw(st.sampled_from([1, 2, 4]))
    cfg = tiny(sliding_window=W, num_key_value_heads=K, num_attention_heads=K * draw(st.sampled_from([1, 2])),
               head_dim=draw(st.sampled_from([8, 16])), num_hidden_layers=draw(st.integers(1, 2)),
               rope_theta=draw(st.sampled_from([10000.0, 1e6])))
    return cfg, T, chunks, draw(st.integers(0, 2**31))


def chunked_then_decoded(model, ids, chunks, max_len=None):
    cache = KVCache(model.config, max_len=max_len, dtype=model.dtype)
    out, at = [], 0
    for c in chunks + [1] * (len(ids) - sum(chunks)):           # prefill chunks, then one token at a time
        out.append(forward(model.params, model.config, ids[at:at + c], dtype=model.dtype, cache=cache))
        at += c
    assert cache.next_position == len(ids)
    return np.concatenate(out)


@settings(deadline=None, max_examples=60)
@given(cases())
def test_chunked_prefill_and_decode_equal_full_forward_float64(case):
    cfg, T, chunks, seed = case
    model = random_model(cfg, np.float64, seed % 1000)
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, T)
    assert_close("logits", chunked_then_decoded(model, ids, chunks), model.forward(ids), atol=F64_ABS)


@settings(deadline=None, max_examples=40)
@given(cases())
def test_chunked_prefill_and_decode_equal_full_forward_float32(case):
    cfg, T, chunks, seed = case
    model = random_model(cfg, np.float32, seed % 1000)
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, T)
    got = chunked_then_decoded(model, ids, chunks)
    assert got.dtype == np.float32
    full = model.forward(ids)
    truth = Model(cfg, map_weights(model.params, lambda w: w.astype(np.float64)), dtype=np.float64).forward(ids)
    assert_close("logits", got, full, atol=f32_bound(full, truth))


@settings(deadline=None, max_examples=25)
@given(cases(with_window=False))
def test_no_window_cache_equals_full_forward(case):
    cfg, T, chunks, seed = case
    model = random_model(cfg, np.float64, seed % 1000)
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, T)
    assert_close("logits", chunked_then_decoded(model, ids, chunks, max_len=T), model.forward(ids), atol=F64_ABS)


def test_window_matters_in_these_cases():
    """Guard against a vacuous property: the same model without the window gives other logits."""
    model = random_model(tiny(sliding_window=3))
    ids = np.random.default_rng(0).integers(0, 50, 12)
    windowed = chunked_then_decoded(model, ids, [2, 3])
    model.config = model.config.replace(sliding_window=None)
    assert np.abs(windowed[3:] - model.forward(ids)[3:]).max() > 1e-3


# ------------------------------------------------------------------------------------------------ bookkeeping
def test_memory_formula_and_reset():
    cfg = tiny(sliding_window=5, num_hidden_layers=3)
    cache = KVCache(cfg, dtype=np.float32)
    L, K, Dh = 3, cfg.num_key_value_heads, cfg.head_dim
    assert cache.nbytes == 2 * L * 5 * K * Dh * 4 + L * 5 * 8
    assert KVCache(cfg.replace(sliding_window=None), max_len=40, dtype=np.float64).nbytes == \
        2 * L * 40 * K * Dh * 8 + L * 40 * 8
    model = random_model(cfg)
    cache = KVCache(cfg, dtype=np.float64)
    ids = np.arange(12) % 50
    first = forward(model.params, cfg, ids, dtype=np.float64, cache=cache)
    cache.reset()
    assert cache.next_position == 0 and (cache.slot_pos == -1).all()
    np.testing.assert_array_equal(forward(model.params, cfg, ids, dtype=np.float64, cache=cache), first)


def test_errors_are_clear():
    cfg = tiny(sliding_window=None)
    cache = KVCache(cfg, max_len=4, dtype=np.float32)
    k = np.zeros((3, 2, 8), np.float32)
    with pytest.raises(ValueError, match="dtype float32 != activation dtype float64"):
        cache.update(0, k.astype(np.float64), k.astype(np.float64), np.arange(3))
    with pytest.raises(ValueError, match="consecutive positions from 0"):
        cache.update(0, k, k, np.arange(1, 4))
    cache.update(0, k, k, np.arange(3))
    with pytest.raises(ValueError, match="KV cache full.*max_len=4"):
        cache.update(0, k, k, np.arange(3, 6))
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        KVCache(cfg, max_len=0)
