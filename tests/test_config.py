"""Config parsing: the real checkpoints' config.json / params.json (docs/references.md#config) and the presets."""

import pytest

from mistral_np.checkpoints.config_files import from_hf_dict, from_params_dict
from mistral_np.errors import ConfigError
from mistral_np.model.config import PRESETS

V01 = {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
       "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
       "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
       "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
       "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000}
V02 = dict(V01, rope_theta=1000000.0, sliding_window=None)
V03 = dict(V02, vocab_size=32768, attention_dropout=0.0, transformers_version="4.42.0.dev0")


@pytest.mark.parametrize("d, preset", [(V01, "mistral-7b-v0.1"), (V02, "mistral-7b-v0.2"), (V03, "mistral-7b-v0.3")])
def test_real_configs_equal_presets(d, preset):
    assert from_hf_dict(d) == PRESETS[preset]
    assert PRESETS[preset].head_dim == 128          # derived: no head_dim key in these files


def test_transformers5_spelling_and_defaults():
    d = dict(V01)
    del d["rope_theta"]
    d["rope_parameters"] = {"rope_theta": 1e6, "rope_type": "default"}
    d["head_dim"] = 64
    cfg = from_hf_dict(d)
    assert cfg.rope_theta == 1e6 and cfg.head_dim == 64
    no_theta = dict(V01)
    del no_theta["rope_theta"]
    assert from_hf_dict(no_theta).rope_theta == 10000.0
    no_eps = dict(V01)
    del no_eps["rms_norm_eps"]
    assert from_hf_dict(no_eps).rms_norm_eps == 1e-6    # transformers' MistralConfig default, not 1e-5


def test_params_json_v01_defaults_rope_theta_to_1e4():
    p = {"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32, "n_kv_heads": 8,
         "norm_eps": 1e-05, "sliding_window": 4096, "vocab_size": 32000}
    assert from_params_dict(p) == PRESETS["mistral-7b-v0.1"].replace(max_position_embeddings=32768)
    old = dict(p, ragged_attention="4096")
    del old["sliding_window"]
    assert from_params_dict(old).sliding_window == 4096
    with pytest.raises(ConfigError, match="params.json: unsupported field.*moe"):
        from_params_dict(dict(p, moe={"num_experts": 8}))


def test_llama_has_no_window_and_mistral_null_window():
    llama = dict(V01, model_type="llama")
    del llama["sliding_window"]
    assert from_hf_dict(llama).sliding_window is None
    assert from_hf_dict(dict(V01, sliding_window=None)).sliding_window is None


@pytest.mark.parametrize("bad, msg", [
    (dict(V01, num_key_value_heads=5), "multiple of num_key_value_heads"),
    (dict(V01, sliding_window=0), "sliding_window must be a positive integer"),
    ({k: v for k, v in V01.items() if k != "hidden_size"}, "missing required field 'hidden_size'"),
    (dict(V01, model_type="mixtral"), "unsupported model_type 'mixtral'"),
    (dict(V01, attention_bias=True), "attention_bias"),
    (dict(V01, hidden_act="gelu"), "hidden_act .gelu. is not silu"),
])
def test_bad_configs(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        from_hf_dict(bad)


def test_hf_dict_roundtrip_through_transformers():
    from transformers import MistralConfig as HFMistralConfig
    ours = PRESETS["mistral-7b-v0.2"]
    hf = HFMistralConfig(**{k: v for k, v in ours.to_hf_dict().items() if k not in ("model_type",)})
    d = hf.to_dict()
    assert from_hf_dict(d) == ours
