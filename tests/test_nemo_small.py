"""Mistral-Nemo-12B and Mistral-Small-24B: the presets, parity with transformers on tiny random models of that family,
and chat through their Tekken tokenizer.

The family is Mistral-7B's decoder with head_dim fixed at 128 while hidden_size / heads is 160 (so q_proj is
(H*Dh, D) = (4096, 5120), not square), rope_theta 1e6 (Nemo) or 1e8 (Small 3), no sliding window, and Tekken's
131072-token vocabulary (docs/references.md#nemo-small). The tiny models keep those traits: head_dim != hidden/heads,
the real thetas, no window, the full 131072-token vocabulary (so the real tekken.json fits them). Parity as in
tests/test_model.py: float32 traces within the bound derived from transformers' own float32-vs-float64 distance,
float64 within 1e-10 of transformers with its float32 casts removed. The Nemo-like model is an HF folder with
Mistral's tekken.json (v3); the Small-like one is Mistral's consolidated layout (params.json,
consolidated.safetensors) with a tekken.json relabelled v7, as Mistral-Small-24B-2501's own file is.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from conftest import F64_ABS, first_divergence
from tools.builders import write_consolidated
from tools.hf_reference import build_hf_model, hf_trace, load_hf, save_checkpoint, tiny_config
import mistral_np
from mistral_np.checkpoints.config_files import from_hf_dict, from_params_dict
from mistral_np.model.config import PRESETS
from mistral_np.text.chat import chat_prompt_ids

MC_DATA = os.path.join(os.path.dirname(__import__("mistral_common").__file__), "data")

# config.json of mistralai/Mistral-Nemo-Base-2407 (docs/references.md#nemo-small)
NEMO_BASE_CONFIG = {"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
                    "eos_token_id": 2, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
                    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 128000,
                    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
                    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.3",
                    "use_cache": True, "vocab_size": 131072}
# params.json of Mistral-Small-24B-Instruct-2501, Mistral's own format (docs/references.md#nemo-small)
SMALL_24B_PARAMS = {"dim": 5120, "n_layers": 40, "head_dim": 128, "hidden_dim": 32768, "n_heads": 32, "n_kv_heads": 8,
                    "norm_eps": 1e-05, "vocab_size": 131072, "rope_theta": 100000000.0, "max_seq_len": 32768}

CASES = {
    # name: (config overrides, checkpoint layout, tokenizer file version, T)
    "nemo-like": (dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=1e6),
                  "hf", "v3", 24),
    "small-like": (dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=1, head_dim=16, rope_theta=1e8,
                        intermediate_size=96), "consolidated", "v7", 21),
}


def test_presets_equal_the_real_files():
    nemo, small = PRESETS["mistral-nemo-12b"], PRESETS["mistral-small-24b"]
    assert from_hf_dict(NEMO_BASE_CONFIG) == nemo
    assert from_params_dict(SMALL_24B_PARAMS) == small
    for cfg, billions in ((nemo, 12.2), (small, 23.6)):
        assert cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size and cfg.sliding_window is None
        assert round(cfg.n_params() / 1e9, 1) == billions       # "12B" and "24B"


def tekken_file(version: str, folder: str) -> None:
    """Mistral's tekken.json, as shipped (v3, Mistral-Nemo's) or relabelled v7 (Mistral-Small 3's version)."""
    src = os.path.join(MC_DATA, "tekken_240718.json")
    if version == "v3":
        shutil.copy(src, os.path.join(folder, "tekken.json"))
        return
    data = json.load(open(src, encoding="utf-8"))
    data["config"]["version"] = version
    with open(os.path.join(folder, "tekken.json"), "w", encoding="utf-8") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (name, (over, layout, version, T)) in enumerate(CASES.items()):
        cfg = tiny_config("mistral", vocab_size=131072, intermediate_size=over.pop("intermediate_size", 64),
                          num_hidden_layers=2, sliding_window=None, **over)
        hf_folder = str(tmp_path_factory.mktemp(name + "-hf"))
        save_checkpoint(build_hf_model(cfg, seed=20 + i), hf_folder)
        folder = hf_folder if layout == "hf" else write_consolidated(hf_folder, str(tmp_path_factory.mktemp(name)))
        tekken_file(version, folder)
        ids = np.random.default_rng(i).integers(0, cfg["vocab_size"], T)
        ref32 = hf_trace(load_hf(hf_folder, torch.float32), ids)
        ref64 = hf_trace(load_hf(hf_folder, torch.float64), ids, exact=True)
        out[name] = (folder, ids, cfg, ref32, ref64)
    return out


@pytest.fixture(scope="module")
def models(checkpoints):
    """Each case loaded once by mistral_np (float32)."""
    return {name: mistral_np.load_model(checkpoints[name][0]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_float32_parity_every_layer(checkpoints, models, name):
    folder, ids, cfg, ref32, ref64 = checkpoints[name]
    model = models[name]
    c = model.config
    assert (c.head_dim, c.rope_theta, c.sliding_window, c.vocab_size) == \
        (cfg["head_dim"], cfg["rope_theta"], None, 131072)
    assert c.head_dim * c.num_attention_heads != c.hidden_size
    logits, trace = model.forward(ids, trace=True)
    assert logits.dtype == np.float32
    first_divergence(trace, ref32, truth=ref64)


@pytest.mark.parametrize("name", list(CASES))
def test_float64_parity_every_layer(checkpoints, name):
    folder, ids, _, _, ref64 = checkpoints[name]
    logits, trace = mistral_np.load_model(folder, dtype=np.float64).forward(ids, trace=True)
    first_divergence(trace, ref64, atol=F64_ABS)


MESSAGES = [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4 "}, {"role": "user", "content": "And [INST] 3+3?"}]
MC_CLASS = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


@pytest.mark.parametrize("name, fmt", [("nemo-like", "mistral-v3"), ("small-like", "mistral-v7")])
def test_chat_uses_the_tekken_format(checkpoints, models, name, fmt):
    """model.chat on a folder with tekken.json encodes the conversation as mistral-common does for that file."""
    folder, model = checkpoints[name][0], models[name]
    assert model.tokenizer.mistral_version == fmt[-2:]
    reference = MistralTokenizer.from_file(os.path.join(folder, "tekken.json"))
    request = ChatCompletionRequest(messages=[MC_CLASS[m["role"]](content=m["content"]) for m in MESSAGES])
    want = reference.encode_chat_completion(request).tokens
    assert chat_prompt_ids(model.tokenizer, MESSAGES) == want
    pieces = list(model.chat(MESSAGES, max_new_tokens=3))
    assert model.last_stats.prompt_tokens == len(want)
    assert all(isinstance(p, str) for p in pieces)
