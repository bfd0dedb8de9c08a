"""Parity with Hugging Face transformers (the independent reference), live, on tiny random models.

Each case builds a transformers model, saves it as a checkpoint, loads that checkpoint with
mistral_np and compares logits and every traced intermediate (docs/conventions.md names them):
float32 within the per-tensor bound derived from transformers' own float32-vs-float64 distance
(conftest.f32_bound, docs/conventions.md), float64 within 1e-10 against transformers with its float32 casts
patched away (docs/references.md#float64). Sequences are at least 3W long, so the window bites.
"""

import numpy as np
import pytest
import torch

from conftest import F64_ABS, first_divergence
from tools.hf_reference import build_hf_model, hf_trace, load_hf, save_checkpoint, tiny_config
import mistral_np

CASES = {
    # name: (config overrides, checkpoint dtype, T)
    "mha-w8-f32": (dict(num_attention_heads=4, num_key_value_heads=4, sliding_window=8), "float32", 30),
    "gqa2-w5-theta1e6-tied-bf16": (dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=5,
                                        rope_theta=1e6, tie_word_embeddings=True), "bfloat16", 20),
    "gqa4-w6-headdim8": (dict(num_attention_heads=8, num_key_value_heads=2, head_dim=8, sliding_window=6),
                         "float32", 25),
    "gqa8-window-null-theta1e6": (dict(num_attention_heads=8, num_key_value_heads=1, sliding_window=None,
                                       rope_theta=1e6), "bfloat16", 33),
    "llama-gqa2-tied": (dict(model_type="llama", num_attention_heads=6, num_key_value_heads=3, head_dim=8,
                             tie_word_embeddings=True), "float32", 21),
    "llama-gqa4-bf16": (dict(model_type="llama", num_attention_heads=4, num_key_value_heads=1, rope_theta=1e6),
                        "bfloat16", 17),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Each case's checkpoint folder, ids, and transformers' float32 and exact float64 traces, built once."""
    out = {}
    for i, (name, (over, ckpt_dtype, T)) in enumerate(CASES.items()):
        over = dict(over)
        cfg = tiny_config(over.pop("model_type", "mistral"), **over)
        model = build_hf_model(cfg, seed=i)
        folder = str(tmp_path_factory.mktemp(name))
        save_checkpoint(model, folder, ckpt_dtype)
        ids = np.random.default_rng(i).integers(0, cfg["vocab_size"], T)
        ref32 = hf_trace(load_hf(folder, torch.float32), ids)
        ref64 = hf_trace(load_hf(folder, torch.float64), ids, exact=True)
        out[name] = (folder, ids, cfg, ref32, ref64)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_float32_parity_every_layer(checkpoints, name):
    folder, ids, cfg, ref32, ref64 = checkpoints[name]
    w = cfg.get("sliding_window")
    assert w is None or len(ids) >= 3 * w
    logits, trace = mistral_np.load_model(folder).forward(ids, trace=True)
    assert logits.dtype == np.float32
    first_divergence(trace, ref32, truth=ref64)


@pytest.mark.parametrize("name", list(CASES))
def test_float64_parity_every_layer(checkpoints, name):
    folder, ids, _, _, ref64 = checkpoints[name]
    logits, trace = mistral_np.load_model(folder, dtype=np.float64).forward(ids, trace=True)
    assert logits.dtype == np.float64
    first_divergence(trace, ref64, atol=F64_ABS)


def test_window_changes_the_result(checkpoints):
    """Guard against a vacuous window: the same weights with sliding_window=None give other logits."""
    folder, ids = checkpoints["mha-w8-f32"][:2]
    m = mistral_np.load_model(folder)
    windowed = m.forward(ids)
    m.config = m.config.replace(sliding_window=None)
    unwindowed = m.forward(ids)
    np.testing.assert_array_equal(windowed[:8], unwindowed[:8])       # first W tokens: no difference
    assert np.abs(windowed[8:] - unwindowed[8:]).max() > 1e-3


def test_trace_names_in_forward_order_and_tracing_changes_nothing(checkpoints):
    """The trace holds the documented names in forward order (model/trace.py); recording changes no number."""
    folder, ids, cfg = checkpoints["gqa4-w6-headdim8"][:3]
    model = mistral_np.load_model(folder)
    logits, trace = model.forward(ids, trace=True)
    per_layer = ["attn_input", "q", "k", "q_rope", "k_rope", "v", "attn_probs", "attn_output", "attn_residual",
                 "mlp_output", "output"]
    expected = ["embeddings"] + [f"layers.{i}.{n}" for i in range(cfg["num_hidden_layers"]) for n in per_layer] + \
        ["final_norm", "logits"]
    assert list(trace) == expected
    np.testing.assert_array_equal(model.forward(ids), logits)
    T, H, K, Dh = len(ids), cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    assert trace["layers.0.q"].shape == (T, H, Dh) and trace["layers.0.k"].shape == (T, K, Dh)
    probs = trace["layers.1.attn_probs"]
    assert probs.shape == (H, T, T)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    i, j = np.indices((T, T))
    assert np.all(probs[:, (i - j >= cfg["sliding_window"]) | (j > i)] == 0)   # outside the window: exactly 0


def test_forward_refuses_an_embedding_only_checkpoint(checkpoints, tmp_path):
    """A checkpoint saved as MistralModel (no lm_head) loads, but has no logits to give."""
    import shutil
    folder = checkpoints["mha-w8-f32"][0]
    headless = tmp_path / "headless"
    shutil.copytree(folder, headless)
    from safetensors.numpy import load_file, save_file
    t = load_file(str(headless / "model.safetensors"))
    save_file({k[len("model."):]: v for k, v in t.items() if k != "lm_head.weight"}, str(headless / "model.safetensors"))
    m = mistral_np.load_model(str(headless))
    assert m.params.lm_head is None
    with pytest.raises(mistral_np.InvalidArgumentError, match="no lm_head"):
        m.forward([1, 2, 3])
