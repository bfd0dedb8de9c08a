"""The fused decode step (generation/fused.py) against the readable path it twins (model/ + generation/loop.py).

A tiny model whose layers mix Q4_0 and Q4_1 (rows of 96 and 160: 3 and 5 blocks, so every matmul has a
tail), grouped-query heads and a window of 6, prefilled with 5 tokens and then decoded for 17 more: the
rolling cache wraps twice. Tolerances, as everywhere (docs/conventions.md): the float64 computation is the
truth, and the fused step must be within F32_K x the readable float32 path's own distance from it.
"""

import os
import sys
import threading
import time

import numpy as np
import pytest

import mistral_np
from mistral_np.checkpoints.fetch import fetch_smollm2
from mistral_np.generation.fused import fused_decoder
from mistral_np.generation.loop import decode_params
from mistral_np.model.forward import hidden_states
from mistral_np.model.gqa import attention_probs, mix_values
from mistral_np.model.kv_cache import KVCache
from mistral_np.model.params import map_weights
from mistral_np.quant import QuantTensor, quantize
from mistral_np.quant.fast import kernels
from tools.builders import random_model, tiny_config_np

from conftest import ROOT, f32_bound

PROMPT, STEPS = 5, 17


@pytest.fixture(scope="module")
def models():
    cfg = tiny_config_np(vocab_size=60, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=24, sliding_window=6)
    base = random_model(cfg, np.float32, seed=3)
    kinds = ["Q4_0", "Q4_1", "Q4_0"]
    layers = [type(layer)(**{f: (quantize(getattr(layer, f), kinds[i]) if getattr(layer, f).ndim == 2
                                 else getattr(layer, f)) for f in layer.__dataclass_fields__})
              for i, layer in enumerate(base.params.layers)]
    params = type(base.params)(base.params.embed_tokens, layers, base.params.norm, base.params.lm_head)
    model = mistral_np.api.Model(cfg, params, dtype=np.float32, source="random")
    truth = map_weights(params, lambda w: w.dequantize(np.float64) if isinstance(w, QuantTensor)
                        else np.asarray(w, dtype=np.float64))
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, PROMPT + STEPS)
    r = hidden_states(truth, cfg, ids, dtype=np.float64)[PROMPT:]              # (STEPS, D), no cache
    return model, ids, r


def run(model, ids, activations, fused, prompt_len=PROMPT):
    """Prefill prompt_len tokens on the readable path, then one step per token; -> hidden states, cache."""
    cfg = model.config
    cache = KVCache(cfg, max_len=len(ids), dtype=np.float32)
    weights = decode_params(model.params, activations)
    hidden_states(weights, cfg, ids[:prompt_len], dtype=np.float32, cache=cache)
    dec = fused_decoder(weights, cfg, activations) if fused else None
    out = []
    for t in ids[prompt_len:]:
        one = np.array([t])
        out.append(dec.hidden_state(weights, one, cache) if fused
                   else hidden_states(weights, cfg, one, dtype=np.float32, cache=cache))
    return np.concatenate(out), cache


def test_float_activations_are_as_close_to_float64_as_the_readable_path(models):
    model, ids, truth = models
    readable, cache_r = run(model, ids, "float", fused=False)
    fused, cache_f = run(model, ids, "float", fused=True)
    bound = f32_bound(readable, truth)
    assert np.abs(fused - truth).max() <= bound, (np.abs(fused - truth).max(), bound)
    assert np.array_equal(cache_f.slot_pos, cache_r.slot_pos) and np.array_equal(cache_f.seen, cache_r.seen)
    assert cache_f.next_position == PROMPT + STEPS
    np.testing.assert_allclose(cache_f.k, cache_r.k, rtol=0, atol=f32_bound(cache_r.k, cache_r.k) + 1e-5 * np.abs(cache_r.k).max())


def test_int8_activations_are_as_close_to_float64_as_the_readable_int8_path(models):
    """The int8 variant runs the same integer kernels; only the norms' and attention's float32 sums differ,
    which can move an activation across a rounding step. It must stay within twice the readable int8 path's
    own distance from the float64 truth (and not be the float path)."""
    model, ids, truth = models
    readable, _ = run(model, ids, "int8", fused=False)
    fused, _ = run(model, ids, "int8", fused=True)
    dist = np.abs(readable - truth).max()
    assert np.abs(fused - truth).max() <= 2 * dist, (np.abs(fused - truth).max(), dist)
    assert not np.allclose(fused, run(model, ids, "float", fused=True)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("slots, dh, g, window", [(1, 24, 1, -1), (6, 24, 2, 6), (7, 20, 3, -1), (11, 64, 3, 5),
                                                  (13, 64, 1, -1), (16, 8, 2, 9)])
def test_the_steps_attention_reads_only_what_the_query_sees(slots, dh, g, window):
    """The compiled step's attention of one query over a rolling cache (its scores four slots at a time, then the
    last slots one by one), its query heads together or one at a time (the same bits): within the readable
    float32 path's own distance from float64 (model/gqa.py over the visible keys only), while the slots the
    query cannot see, an empty one and those past the window, hold NaN and inf that must not reach the output."""
    from mistral_np.generation.fused import _attend_group
    rng = np.random.default_rng(slots * 100 + dh)
    n_kv, p = 2, slots + 3                                    # the query at position p; slot s holds pos % slots
    kc = rng.standard_normal((slots, n_kv, dh)).astype(np.float32)
    vc = rng.standard_normal((slots, n_kv, dh)).astype(np.float32)
    q = rng.standard_normal(n_kv * g * dh).astype(np.float32)
    slot_pos = np.full(slots, -1, dtype=np.int64)
    for pos in range(p - slots + 1, p + 1):
        slot_pos[pos % slots] = pos
    if slots > 2:
        slot_pos[(p - 1) % slots] = -1                        # an empty slot among the others
    seen = (slot_pos >= 0) & ((window <= 0) | (p - slot_pos < window))
    kc[~seen], vc[~seen] = np.nan, np.inf
    out = np.full(n_kv * g * dh, np.nan, dtype=np.float32)
    for kv in range(n_kv):
        _attend_group(q, kc, vc, slot_pos, p, window, kv, kv * g, g, dh, out)
    one = np.full_like(out, np.nan)                           # one query head at a time: the same bits
    for h in range(n_kv * g):
        _attend_group(q, kc, vc, slot_pos, p, window, h // g, h, 1, dh, one)
    np.testing.assert_array_equal(one, out)
    args = (q.reshape(1, n_kv * g, dh), kc[seen], np.array([p]), slot_pos[seen], window if window > 0 else None)
    readable = mix_values(attention_probs(*args), vc[seen]).reshape(-1)
    truth = mix_values(attention_probs(args[0].astype(np.float64), args[1].astype(np.float64), *args[2:]),
                       vc[seen].astype(np.float64)).reshape(-1)
    assert np.all(np.isfinite(out))
    err, bound = np.abs(out - truth).max(), f32_bound(readable, truth)
    assert err <= bound, (err, bound)


def test_the_attentions_work_items_do_not_change_the_bits(models):
    """Query heads as work items (what long caches take, PER_HEAD_SLOTS) against KV heads as work items: the same
    hidden states, bit for bit, over a wrapping cache."""
    model, ids, _ = models
    out = {}
    for per_head in (0, 1 << 30):
        cfg = model.config
        cache = KVCache(cfg, max_len=len(ids), dtype=np.float32)
        weights = decode_params(model.params, "float")
        hidden_states(weights, cfg, ids[:PROMPT], dtype=np.float32, cache=cache)
        dec = fused_decoder(weights, cfg, "float")
        dec.per_head_slots = per_head
        out[per_head] = np.concatenate([dec.hidden_state(weights, np.array([t]), cache) for t in ids[PROMPT:]])
    np.testing.assert_array_equal(out[0], out[1 << 30])


def test_generation_uses_it_and_gives_the_same_tokens(models):
    model, ids, _ = models
    kw = dict(max_new_tokens=20, stop_ids=(), decode_activations="float", prompt_activations="float")
    assert list(model.generate_ids(ids[:PROMPT], fused_decode=True, **kw)) == \
        list(model.generate_ids(ids[:PROMPT], fused_decode=False, **kw))


def test_other_weights_keep_the_readable_path(models):
    model, _, _ = models
    cfg = model.config
    assert fused_decoder(decode_params(model.params, "int8"), cfg, "int8") is not None
    floats = map_weights(model.params, lambda w: w.dequantize() if isinstance(w, QuantTensor) else w)
    assert fused_decoder(floats, cfg, "int8") is None
    q8 = map_weights(floats, lambda w: quantize(w, "Q8_0") if w.ndim == 2 and w.shape[0] != cfg.vocab_size else w)
    assert fused_decoder(q8, cfg, "int8") is None
    assert fused_decoder(model.params, cfg, "int8", dtype=np.float64) is None


def test_smollm2_against_the_readable_path():
    """The real model (30 Q4_1 layers, no window). Float decode: the same 32 greedy tokens. int8 decode: two
    int8 runs whose inputs differ in the last bits differ by int8 rounding noise (an activation that crosses
    a rounding step moves the next layers' steps too), so greedy tokens may part at a near tie; on the float
    path's tokens (teacher forcing) the fused int8 logits must be as close to the float logits as the
    readable int8 ones (within 2x) and pick the same tokens as often."""
    model = mistral_np.load_model(fetch_smollm2(os.path.join(ROOT, "weights")))
    prompt = model.tokenizer.encode("The three primary colors are", bos=True)
    kw = dict(max_new_tokens=32, stop_ids=(), decode_activations="float", prompt_activations="float")
    tokens = list(model.generate_ids(prompt, fused_decode=True, **kw))
    assert tokens == list(model.generate_ids(prompt, fused_decode=False, **kw))

    seq = np.array(prompt + tokens)

    def logits(act, fused):
        model_ = type("M", (), {"params": model.params, "config": model.config})
        out, _ = run(model_, seq, act, fused, prompt_len=len(prompt))
        return out @ model.params.lm_head.dequantize().T

    exact = logits("float", False)
    readable, fused = logits("int8", False), logits("int8", True)
    assert np.abs(fused - exact).max() <= 2 * np.abs(readable - exact).max()
    agree = lambda z: np.mean(z.argmax(1) == exact.argmax(1))  # noqa: E731
    assert agree(fused) >= agree(readable) - 2 / len(tokens)


def turns_while(fn, seconds=0.3):
    """Call fn on another thread for about ``seconds``; -> how many turns this thread's Python loop made meanwhile.
    The switch interval is 10 s, so if fn held the GIL this thread would not run until the other one ended (0
    turns); if fn lets it go, this thread runs while fn computes (each turn sleeps 0 s to hand the GIL back)."""
    done, turns = threading.Event(), 0

    def work():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fn()
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    try:
        t = threading.Thread(target=work)
        t.start()
        while not done.is_set():
            turns += 1
            time.sleep(0)
        t.join()
    finally:
        sys.setswitchinterval(old)
    return turns


def test_the_compiled_step_and_kernels_release_the_gil(models, monkeypatch):
    """mistral-np serve runs the model on a worker thread and its event loop on another (serve.md): the fused
    step, the prompt GEMM and the decode kernels are compiled with nogil=True, so the event loop keeps sending
    tokens and accepting requests while they run. Each must let this thread run meanwhile."""
    model, ids, _ = models
    cfg = model.config
    weights = decode_params(model.params, "int8")
    dec = fused_decoder(weights, cfg, "int8")
    caches = [KVCache(cfg, max_len=4096, dtype=np.float32) for _ in range(2)]

    def step():
        for c in caches:
            if c.next_position > 4000:
                c.reset()
        dec.hidden_states(weights, ids[:2], caches)

    monkeypatch.setattr(kernels, "SERIAL_BYTES", 0)       # the row-group (parallel) kernels, even for tiny weights
    w = model.params.layers[0].gate_proj
    x = np.random.default_rng(0).standard_normal((16, cfg.hidden_size)).astype(np.float32)
    for name, fn in (("fused step", step), ("prompt GEMM", lambda: w.matmul(x, activations="int8")),
                     ("decode kernel", lambda: w.matvecs(x[:3], activations="int8"))):
        fn()                                              # compiled before the count
        assert turns_while(fn) > 100, name
