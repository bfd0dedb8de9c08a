"""Checkpoint loading: formats (HF single/sharded/prefix-less, consolidated), dtypes, strictness, errors."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from tools.hf_reference import build_hf_model, save_checkpoint, tiny_config
import mistral_np
from mistral_np.checkpoints.pipeline import LazyWeight
from mistral_np.errors import ConfigError
from mistral_np.checkpoints.safetensors import bf16_to_f32, f32_to_bf16
from mistral_np.errors import WeightsError

IDS = np.array([5, 17, 3, 88, 42, 1, 0, 96, 7, 7, 7, 64, 30, 2, 11, 50, 9, 70, 33, 21], dtype=np.int64)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    cfg = tiny_config("mistral", sliding_window=6)
    folder = str(tmp_path_factory.mktemp("hf"))
    save_checkpoint(build_hf_model(cfg, seed=3), folder, "float32")
    return folder


def copy_folder(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


# --- formats ------------------------------------------------------------------------------------------

def llama_cpp_style_unpermute(w, n_head):
    """HF half-split rows -> Meta interleaved rows, written from docs/references.md#rope (llama.cpp's converter),
    independently of mistral_np.rope, so our loader's permutation is checked against another author's."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_consolidated_format_loads_to_identical_logits(hf_folder, tmp_path):
    cfg = json.load(open(os.path.join(hf_folder, "config.json")))
    hf = load_file(os.path.join(hf_folder, "model.safetensors"))
    H, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    names = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "output.weight"}
    leaf = {"input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
            "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
            "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
            "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3"}
    out = {}
    for name, w in hf.items():
        if name in names:
            out[names[name]] = w
            continue
        i, rest = name.split(".")[2], ".".join(name.split(".")[3:-1])
        if rest == "self_attn.q_proj":
            w = llama_cpp_style_unpermute(w, H)
        elif rest == "self_attn.k_proj":
            w = llama_cpp_style_unpermute(w, K)
        out[f"layers.{i}.{leaf[rest]}.weight"] = np.ascontiguousarray(w)
    save_file(out, str(tmp_path / "consolidated.safetensors"))
    params = {"dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"], "head_dim": cfg["head_dim"],
              "hidden_dim": cfg["intermediate_size"], "n_heads": H, "n_kv_heads": K,
              "norm_eps": cfg["rms_norm_eps"], "vocab_size": cfg["vocab_size"],
              "sliding_window": cfg["sliding_window"], "rope_theta": 10000.0}
    json.dump(params, open(tmp_path / "params.json", "w"))
    ours = mistral_np.load_model(str(tmp_path)).forward(IDS)
    ref = mistral_np.load_model(hf_folder).forward(IDS)
    np.testing.assert_array_equal(ours, ref)
    # the un-permute is not the identity: loading without it changes the logits
    assert not np.array_equal(out["layers.0.attention.wq.weight"], hf["model.layers.0.self_attn.q_proj.weight"])


def test_sharded_and_prefixless_checkpoints(hf_folder, tmp_path):
    tensors = load_file(os.path.join(hf_folder, "model.safetensors"))
    ref = mistral_np.load_model(hf_folder).forward(IDS)
    # sharded with an index
    sharded = copy_folder(hf_folder, tmp_path / "sharded")
    os.remove(os.path.join(sharded, "model.safetensors"))
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for fname, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, os.path.join(sharded, fname))
    json.dump({"metadata": {}, "weight_map": {k: f for f, ks in parts.items() for k in ks}},
              open(os.path.join(sharded, "model.safetensors.index.json"), "w"))
    np.testing.assert_array_equal(mistral_np.load_model(sharded).forward(IDS), ref)
    # an embedding model saved as MistralModel: no "model." prefix and no lm_head
    bare = copy_folder(hf_folder, tmp_path / "bare")
    save_file({k.removeprefix("model."): v for k, v in tensors.items() if k != "lm_head.weight"},
              os.path.join(bare, "model.safetensors"))
    m = mistral_np.load_model(bare)
    assert m.params.lm_head is None
    with pytest.raises(ValueError, match="no lm_head"):
        m.forward(IDS)


def test_bf16_conversion_matches_torch():
    x = torch.randn(1000) * 10.0 ** torch.randint(-30, 30, (1000,)).float()
    bits = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(f32_to_bf16(x.numpy()), bits)                     # rounding as torch's
    np.testing.assert_array_equal(bf16_to_f32(bits), x.to(torch.bfloat16).float().numpy())


def test_large_bf16_models_convert_on_use(tmp_path, monkeypatch):
    """When the float model would not fit comfortably in memory, BF16 weights stay BF16 until used."""
    cfg = tiny_config("mistral")
    folder = str(tmp_path / "bf16")
    save_checkpoint(build_hf_model(cfg, seed=5), folder, "bfloat16")
    eager = mistral_np.load_model(folder)
    from mistral_np.checkpoints import pipeline
    monkeypatch.setattr(pipeline, "available_memory", lambda: 1000)
    with pytest.warns(UserWarning, match="converted when used.*mistral-np quantize"):
        lazy = mistral_np.load_model(folder)
    assert isinstance(lazy.params.layers[0].q_proj, LazyWeight)
    assert isinstance(lazy.params.embed_tokens, LazyWeight)
    np.testing.assert_array_equal(lazy.forward(IDS), eager.forward(IDS))


# --- strictness and errors ------------------------------------------------------------------------------

def test_truncated_safetensors(hf_folder, tmp_path):
    bad = copy_folder(hf_folder, tmp_path / "bad")
    path = os.path.join(bad, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 100])
    with pytest.raises(WeightsError, match=r"model\.safetensors: truncated: tensor '.*' ends at byte"):
        mistral_np.load_model(bad)
    open(path, "wb").write(data[:5])
    with pytest.raises(WeightsError, match="truncated safetensors file"):
        mistral_np.load_model(bad)


def test_missing_tensor(hf_folder, tmp_path):
    bad = copy_folder(hf_folder, tmp_path / "bad")
    t = load_file(os.path.join(bad, "model.safetensors"))
    del t["model.layers.1.mlp.up_proj.weight"]
    save_file(t, os.path.join(bad, "model.safetensors"))
    with pytest.raises(WeightsError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight' "
                                           r"\(expected shape \[80, 48\]\) in .*model\.safetensors"):
        mistral_np.load_model(bad)


def test_wrong_shape_and_unexpected_tensor(hf_folder, tmp_path):
    bad = copy_folder(hf_folder, tmp_path / "bad")
    t = load_file(os.path.join(bad, "model.safetensors"))
    t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:16]
    save_file(t, os.path.join(bad, "model.safetensors"))
    with pytest.raises(WeightsError, match=r"tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' has shape "
                                           r"\[16, 48\], expected \[32, 48\]"):
        mistral_np.load_model(bad)
    t = load_file(os.path.join(hf_folder, "model.safetensors"))
    t["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, dtype=np.float32)
    save_file(t, os.path.join(bad, "model.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'"):
        mistral_np.load_model(bad)


def test_config_errors(hf_folder, tmp_path):
    bad = copy_folder(hf_folder, tmp_path / "bad")
    cfg_path = os.path.join(bad, "config.json")
    cfg = json.load(open(cfg_path))
    json.dump(dict(cfg, model_type="gpt2"), open(cfg_path, "w"))
    with pytest.raises(ConfigError, match=r"config\.json: unsupported model_type 'gpt2'"):
        mistral_np.load_model(bad)
    open(cfg_path, "w").write('{"model_type": "mistral",')
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        mistral_np.load_model(bad)
    json.dump(dict(cfg, frobnication_factor=3), open(cfg_path, "w"))
    with pytest.raises(ConfigError, match="unknown config field.*frobnication_factor"):
        mistral_np.load_model(bad)
    json.dump(dict(cfg, rope_scaling={"rope_type": "yarn", "factor": 4.0}), open(cfg_path, "w"))
    with pytest.raises(ConfigError, match="rope_scaling"):
        mistral_np.load_model(bad)


def test_bad_token_ids(hf_folder):
    m = mistral_np.load_model(hf_folder)
    with pytest.raises(ValueError, match="token id 97 is outside the vocabulary"):
        m.forward([1, 97])
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        m.forward([])
