"""Generation (generate.py): greedy parity with transformers, the sampling pipeline, stops, text, chat, errors.

References: transformers 5.23 ``generate(do_sample=False)`` on tiny random Mistral (window 4, so the
output is several windows long) and Llama models (eager attention, its own sliding-window cache);
transformers' ``RepetitionPenaltyLogitsProcessor``, ``TopKLogitsWarper``, ``TopPLogitsWarper``.
Models are built once per module.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import mistral_common
import tokenizers
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.hf_reference import build_hf_model, save_checkpoint, tiny_config
from tools.builders import random_model, tiny_config_np as tiny, tiny_folder_with_v1_tokenizer
import mistral_np
from mistral_np.errors import ChatFormatError
from mistral_np.text.chat import chat_prompt_ids, encode_chat
from mistral_np.generation import (StopStrings, apply_repetition_penalty, generate_ids, pick_token,
                                 top_k_filter, top_p_filter)
from mistral_np.text.tokenizer import Tokenizer

PROMPT = [1, 5, 17, 33, 8, 60, 41]     # 7 tokens: longer than the window of 4
V1_MODEL = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"   # Mistral 7B v0.1's


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """name -> (transformers model, mistral_np model): a windowed Mistral and a Llama."""
    out = {}
    for name, cfg in (("mistral-w4", tiny_config("mistral", num_hidden_layers=2, sliding_window=4)),
                      ("llama", tiny_config("llama", num_hidden_layers=2))):
        hf = build_hf_model(cfg, seed=3)
        folder = str(tmp_path_factory.mktemp(name))
        save_checkpoint(hf, folder)
        out[name] = (hf, mistral_np.load_model(folder))
    return out


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory):
    """A tiny model (hidden 32, 2 layers) with Mistral v0.1's real 32000-piece tokenizer beside it."""
    folder = tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("v1-tiny"), seed=5, max_position_embeddings=64)
    return mistral_np.load_model(folder)


# ------------------------------------------------------------------------------------------------ greedy parity
@pytest.mark.parametrize("name", ["mistral-w4", "llama"])
def test_greedy_equals_transformers(hf_models, name):
    hf, model = hf_models[name]
    n = 20                                                       # >= 3W new tokens for W = 4
    with torch.no_grad():
        ref = hf.generate(torch.tensor([PROMPT]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                          pad_token_id=0)[0, len(PROMPT):].tolist()
    for chunk_size in (None, 1, 3, 5):                           # default (W / 512), token by token, < W, > W
        ours = list(model.generate_ids(PROMPT, max_new_tokens=n, stop_ids=(), chunk_size=chunk_size))
        assert ours == ref, f"chunk_size={chunk_size}"
        assert model.last_stats.generated_tokens == n and model.last_stats.stop_reason == "max_new_tokens"


def test_window_matters_for_greedy(hf_models):
    """Guard: the same Mistral weights without the window generate other tokens."""
    _, model = hf_models["mistral-w4"]
    windowed = list(model.generate_ids(PROMPT, max_new_tokens=20, stop_ids=()))
    model.config = model.config.replace(sliding_window=None)
    try:
        assert list(model.generate_ids(PROMPT, max_new_tokens=20, stop_ids=())) != windowed
    finally:
        model.config = model.config.replace(sliding_window=4)


# ------------------------------------------------------------------------------------------------ sampling
def test_seed_determinism_top_k_1_and_temperature_0(hf_models):
    _, model = hf_models["llama"]
    kw = dict(max_new_tokens=25, stop_ids=())
    greedy = list(model.generate_ids(PROMPT, **kw))
    a = list(model.generate_ids(PROMPT, temperature=1.0, seed=7, **kw))
    assert a == list(model.generate_ids(PROMPT, temperature=1.0, seed=7, **kw))
    assert a != list(model.generate_ids(PROMPT, temperature=1.0, seed=8, **kw))
    assert a != greedy
    assert list(model.generate_ids(PROMPT, temperature=1.5, top_k=1, seed=1, **kw)) == greedy
    assert list(model.generate_ids(PROMPT, temperature=0.0, top_p=0.5, seed=3, **kw)) == greedy
    assert list(model.generate_ids(PROMPT, temperature=1.0, top_p=1e-9, seed=3, **kw)) == greedy


def test_top_p_keeps_smallest_set_with_mass_p():
    logits = np.log(np.array([0.1, 0.5, 0.3, 0.06, 0.04]))
    kept = lambda p: set(np.flatnonzero(np.isfinite(top_p_filter(logits, p))).tolist())  # noqa: E731
    assert kept(0.45) == {1}
    assert kept(0.55) == kept(0.79) == {1, 2}
    assert kept(0.85) == {0, 1, 2}
    assert kept(0.93) == {0, 1, 2, 3}
    assert kept(0.97) == kept(1.0) == {0, 1, 2, 3, 4}


def test_top_k_keeps_k_largest():
    logits = np.array([0.0, 3.0, -1.0, 2.0, 2.5])
    assert np.flatnonzero(np.isfinite(top_k_filter(logits, 2))).tolist() == [1, 4]
    assert np.array_equal(top_k_filter(logits, 0), logits)


def test_draws_follow_the_distribution():
    logits = np.array([np.log(0.2), np.log(0.5), -np.inf, np.log(0.3)])   # token 2 has zero mass
    rng = np.random.default_rng(0)
    draws = np.bincount([pick_token(logits, rng, temperature=1.0) for _ in range(20000)], minlength=4) / 20000
    assert draws[2] == 0
    np.testing.assert_allclose(draws, [0.2, 0.5, 0.0, 0.3], atol=0.015)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 2**31), st.floats(0.05, 1.0), st.integers(1, 40), st.floats(0.3, 3.0))
def test_filters_and_penalty_match_transformers(seed, p, k, penalty):
    from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(40) * 3).astype(np.float32)
    seen_ids = rng.integers(0, 40, 15)                          # with repeats, as input_ids have
    seen = np.zeros(40, bool)
    seen[seen_ids] = True
    t = torch.tensor(logits)[None]
    ref = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor(seen_ids)[None], t.clone())[0].numpy()
    np.testing.assert_array_equal(apply_repetition_penalty(logits, seen, penalty), ref)
    ref_k = TopKLogitsWarper(k)(None, t.clone())[0].numpy()
    np.testing.assert_array_equal(np.isfinite(top_k_filter(logits, k)), np.isfinite(ref_k))
    ref_p = TopPLogitsWarper(p)(None, t.clone().double())[0].numpy()
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits.astype(np.float64), p)), np.isfinite(ref_p))


# ------------------------------------------------------------------------------------------------ stop strings
def run_stops(pieces, stop):
    s = StopStrings(stop)
    out = [s.push(p) for p in pieces]
    return out, s.flush(), s.stopped


def test_stop_string_split_across_pieces_never_leaks():
    assert run_stops(["a #", "#", "#b", "c"], "###") == (["a ", "", "", ""], "", True)
    assert run_stops(["x", "#", "#y"], "###") == (["x", "", "##y"], "", False)   # "##y" was not a stop after all
    assert run_stops(["ab", "c#"], "###") == (["ab", "c"], "#", False)           # held text released at the end
    assert run_stops(["Hello", " wor", "ld!"], ["world", "lo w"]) == (["Hel", "", ""], "", True)  # earliest cut
    assert run_stops(["abc"], None) == (["abc"], "", False)


def test_stop_string_in_generated_text(v1_model):
    kw = dict(max_new_tokens=30, temperature=1.0, seed=11, stop_ids=())
    full = "".join(v1_model.generate("Hello", **kw))
    ids = v1_model.last_stats.token_ids
    pieces = [v1_model.tokenizer.decode(ids[:i + 1]) for i in range(len(ids))]
    boundary = next(len(a) for a, b in zip(pieces[3:], pieces[4:]) if len(b) > len(a) + 1 and len(a) > 2)
    stop = full[boundary - 2:boundary + 2]                      # spans a token boundary
    cut = full[:full.find(stop)]
    got = list(v1_model.generate("Hello", stop=stop, **kw))
    assert "".join(got) == cut and stop not in "".join(got)
    assert v1_model.last_stats.stop_reason == "stop_string"


# ------------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_text_pieces_concatenate_to_decode(v1_model, seed):
    pieces = list(v1_model.generate("Hello", max_new_tokens=30, temperature=1.0, seed=seed))
    stats = v1_model.last_stats
    assert stats.prompt_tokens == 2                             # BOS + "▁Hello"
    assert "".join(pieces) == v1_model.tokenizer.decode(stats.token_ids)
    ids = list(generate_ids(v1_model, v1_model.tokenizer.encode("Hello", bos=True), max_new_tokens=30,
                            temperature=1.0, seed=seed))
    assert ids == stats.token_ids
    assert stats.prompt_tokens_per_s > 0 and stats.generated_tokens_per_s > 0


def test_ids_prompt_is_used_as_given(v1_model):
    """A list of ids gets no BOS (the project's rule: ids are the caller's exact sequence); a string gets one."""
    kw = dict(max_new_tokens=8, stop_ids=())
    with_bos = "".join(v1_model.generate("Hello", **kw))
    assert "".join(v1_model.generate([1, 22557], **kw)) == with_bos
    list(v1_model.generate([22557], **kw))
    assert v1_model.last_stats.prompt_tokens == 1


def test_stop_token_ends_generation(hf_models):
    _, model = hf_models["llama"]
    greedy = list(model.generate_ids(PROMPT, max_new_tokens=20, stop_ids=()))
    stop = greedy[5]
    got = list(model.generate_ids(PROMPT, max_new_tokens=20, stop_ids=(stop,)))
    assert got == greedy[:greedy.index(stop)] and model.last_stats.stop_reason == "stop_token"


# ------------------------------------------------------------------------------------------------ chat
def test_chat_uses_mistral_format(v1_model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    kw = dict(max_new_tokens=10, stop_ids=())
    ids = encode_chat(v1_model.tokenizer, messages)
    assert chat_prompt_ids(v1_model.tokenizer, messages) == ids
    assert "".join(v1_model.chat(messages, **kw)) == "".join(v1_model.generate(ids, **kw))
    assert v1_model.last_stats.prompt_tokens == len(ids)


def chatml_tokenizer(add_bos: bool) -> Tokenizer:
    """A word-level tokenizer with ChatML special tokens and a chat template, as a GGUF model carries."""
    words = ["<unk>", "<s>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "Hi", "there", "\n"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    pt = tokenizers.pre_tokenizers
    tok.pre_tokenizer = pt.Sequence([pt.Split(" ", "removed"), pt.Split("\n", "isolated")])
    tok.add_special_tokens(["<s>", "<|im_start|>", "<|im_end|>"])
    t = Tokenizer.from_tokenizers(tok, bos_id=1, eos_id=3)
    t.chat_template = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                       "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    t.add_bos_token = add_bos
    return t


@pytest.mark.parametrize("add_bos", [False, True])
def test_chat_template_path(add_bos):
    tok = chatml_tokenizer(add_bos)
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "Hi there"}])
    assert ids == [1, 2, 4, 9, 7, 8, 3, 9, 2, 5, 9]             # one BOS: the template's, never doubled
    model = random_model(tiny(vocab_size=tok.vocab_size, max_position_embeddings=64), np.float32)
    model.tokenizer = tok
    list(model.chat([{"role": "user", "content": "Hi there"}], max_new_tokens=5))
    assert model.last_stats.prompt_tokens == len(ids)
    with pytest.raises(ChatFormatError, match="does not match this tokenizer"):
        chat_prompt_ids(tok, [{"role": "user", "content": "Hi"}], fmt="mistral-v3")


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_messages(v1_model, hf_models):
    _, no_tok = hf_models["llama"]
    assert no_tok.tokenizer is None
    cases = [
        (lambda: v1_model.generate(list(range(3, 70))), "prompt of 67 tokens does not fit the model's context of 64"),
        (lambda: v1_model.generate(list(range(3, 67))), "prompt of 64 tokens does not fit"),
        (lambda: v1_model.generate(""), "empty prompt"),
        (lambda: v1_model.generate([]), "empty prompt"),
        (lambda: v1_model.generate("Hi", temperature=-1), "temperature must be >= 0"),
        (lambda: v1_model.generate("Hi", top_p=0), r"top_p must be in \(0, 1\]"),
        (lambda: v1_model.generate([5, 40000]), "token id 40000 is outside the vocabulary"),
        (lambda: no_tok.generate("Hello"), "has no tokenizer, so a text prompt cannot be encoded"),
        (lambda: no_tok.generate([1, 2, 3]), "has no tokenizer, so there is no text to yield"),
        (lambda: no_tok.chat([{"role": "user", "content": "Hi"}]), "has no tokenizer, so it cannot chat"),
        (lambda: v1_model.chat([{"role": "user", "content": "Hi"}], fmt="mistral-v3"),
         "'mistral-v3' does not match this tokenizer"),
        (lambda: v1_model.chat([{"role": "user", "content": "Hi"}], fmt="template"), "has no chat template"),
        (lambda: v1_model.chat([{"role": "assistant", "content": "Hi"}]), "expected role 'user'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()                                              # raised at the call, before any iteration


def test_context_limit_ends_generation(v1_model):
    ids = [1] + list(range(100, 160))                           # 61 tokens, context 64: room for 3
    got = list(v1_model.generate_ids(ids, max_new_tokens=10, stop_ids=()))
    assert len(got) == 3 and v1_model.last_stats.stop_reason == "context"


@pytest.mark.parametrize("add_bos", [False, True])
def test_text_prompt_follows_gguf_add_bos_token(add_bos):
    """A Mistral tokenizer always gets BOS for a string; a GGUF tokenizer only if its file says so."""
    tok = chatml_tokenizer(add_bos)
    model = random_model(tiny(vocab_size=tok.vocab_size, max_position_embeddings=64), np.float32)
    model.tokenizer = tok
    list(model.generate("Hi there", max_new_tokens=2))
    assert model.last_stats.prompt_tokens == 2 + add_bos
