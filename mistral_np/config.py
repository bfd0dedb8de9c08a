"""The model's blueprint: a frozen ``MistralConfig`` and the shape vocabulary used everywhere.

Shape glossary (used in the trailing ``# (T, D) -> (T, H, Dh)`` comments of every module)::

    T   new tokens in this call          S   keys visible to a query (cache + new)
    D   hidden_size            (4096)    V   vocab_size            (32000 / 32768)
    H   num_attention_heads    (32)      K   num_key_value_heads   (8)
    G   H // K, queries per KV head (4)  Dh  head_dim              (128)
    F   intermediate_size      (14336)   W   sliding_window        (4096 or None)
    L   num_hidden_layers      (32)      Q   quantization block    (32)

Field names are the Hugging Face ``config.json`` names, so a value can be grepped and diffed
against a checkpoint by name. Two sources are understood:

* ``config.json`` of an HF checkpoint (``model_type`` ``mistral`` or ``llama``), transformers 4.x and
  5.x spellings (``rope_theta`` or ``rope_parameters``);
* ``params.json`` of Mistral's own consolidated format (``dim``, ``n_layers``, ...). A missing
  ``rope_theta`` there means 10000, as transformers' converter does (SPEC.md §1.2).

A key we do not understand is an error unless it is listed in ``_IGNORED_HF_KEYS`` (keys that do
not change the forward pass: training knobs, token ids handled by the tokenizer, bookkeeping).

next: params.py (which tensors a model with this config has).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config.json / params.json that we cannot turn into a MistralConfig."""


@dataclass(frozen=True)
class MistralConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int | None = 4096   # None: plain causal attention
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    model_type: str = "mistral"

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"invalid config: {msg}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0,
                 f"{name} must be a positive integer, got {getattr(self, name)!r}")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
             f"num_key_value_heads ({self.num_key_value_heads})")
        need(self.head_dim % 2 == 0, f"head_dim must be even for RoPE, got {self.head_dim}")
        need(self.sliding_window is None or (isinstance(self.sliding_window, int) and self.sliding_window > 0),
             f"sliding_window must be a positive integer or null, got {self.sliding_window!r}")
        need(self.rms_norm_eps > 0, f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        need(self.rope_theta > 0, f"rope_theta must be > 0, got {self.rope_theta}")
        need(self.model_type in ("mistral", "llama"), f"model_type {self.model_type!r} is not mistral or llama")

    @property
    def n_rep(self) -> int:
        """G: query heads served by one KV head."""
        return self.num_attention_heads // self.num_key_value_heads

    def replace(self, **changes) -> "MistralConfig":
        return dataclasses.replace(self, **changes)

    def to_hf_dict(self) -> dict:
        """The config as an HF config.json dict (what transformers' MistralConfig/LlamaConfig accept)."""
        d = dataclasses.asdict(self)
        d["architectures"] = ["MistralForCausalLM" if self.model_type == "mistral" else "LlamaForCausalLM"]
        d["hidden_act"] = "silu"
        if self.model_type == "llama":
            d.pop("sliding_window")
        return d

    def n_params(self) -> int:
        D, F, L, V = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = D * q + 2 * D * kv + q * D + 3 * D * F + 2 * D
        return V * D * (1 if self.tie_word_embeddings else 2) + L * per_layer + D


# --- presets ---------------------------------------------------------------------------------------

MISTRAL_7B_V01 = MistralConfig()  # Mistral-7B-v0.1 and Instruct-v0.1 (SPEC.md §1.2); also e5/SFR/Linq
MISTRAL_7B_V02 = MistralConfig(rope_theta=1e6, sliding_window=None)            # Instruct-v0.2
MISTRAL_7B_V03 = MistralConfig(vocab_size=32768, rope_theta=1e6, sliding_window=None)  # v0.3
PRESETS = {"mistral-7b-v0.1": MISTRAL_7B_V01, "mistral-7b-v0.2": MISTRAL_7B_V02,
           "mistral-7b-v0.3": MISTRAL_7B_V03}


# --- from HF config.json -------------------------------------------------------------------------

_FIELDS = {f.name for f in dataclasses.fields(MistralConfig)}
# Keys that do not change the forward pass (or are handled elsewhere, like token ids for padding).
_IGNORED_HF_KEYS = {
    "architectures", "hidden_act", "initializer_range", "use_cache", "pad_token_id", "torch_dtype", "dtype",
    "transformers_version", "attention_dropout", "_name_or_path", "attention_bias_dropout", "output_attentions",
    "output_hidden_states", "return_dict", "pretraining_tp", "mlp_bias", "attention_bias", "rope_scaling",
    "rope_parameters", "rope_theta", "is_llama_config", "rope_interleaved", "quantization_config",
    "_attn_implementation_autoset", "id2label", "label2id", "problem_type", "layer_types", "max_window_layers",
    "use_sliding_window", "tokenizer_class", "bos_token_id", "eos_token_id", "sliding_window", "head_dim",
    "chunk_size_feed_forward", "is_decoder", "model_type", "tie_word_embeddings", "is_encoder_decoder",
}


def from_hf_dict(d: dict, source: str = "config.json") -> MistralConfig:
    """Build a MistralConfig from an HF config.json dict. ``source`` names the file in errors."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
    model_type = d.get("model_type")
    if model_type not in ("mistral", "llama"):
        raise ConfigError(f"{source}: unsupported model_type {model_type!r} (mistral_np reads 'mistral' and 'llama')")
    unknown = sorted(k for k in d if k not in _FIELDS and k not in _IGNORED_HF_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown config field(s) {', '.join(unknown)}; refusing to guess their meaning")
    if d.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ConfigError(f"{source}: hidden_act {d['hidden_act']!r} is not silu (SwiGLU)")
    if d.get("is_encoder_decoder"):
        raise ConfigError(f"{source}: is_encoder_decoder = true is not a decoder-only Mistral")
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise ConfigError(f"{source}: attention_bias/mlp_bias = true is not part of the Mistral architecture")
    rope_theta = _rope_theta(d, source)
    try:
        n_heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        kw = dict(
            vocab_size=int(d["vocab_size"]), hidden_size=hidden, intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]), num_attention_heads=n_heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or n_heads),
            head_dim=int(d.get("head_dim") or hidden // n_heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),  # transformers' default when absent
            rope_theta=rope_theta,
            max_position_embeddings=int(d.get("max_position_embeddings", 131072 if model_type == "mistral" else 2048)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            bos_token_id=_first_id(d.get("bos_token_id", 1)), eos_token_id=_first_id(d.get("eos_token_id", 2)),
            model_type=model_type,
        )
    except KeyError as e:
        raise ConfigError(f"{source}: missing required field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value: {e}") from None
    if model_type == "mistral":
        sw = d.get("sliding_window", 4096)  # MistralConfig's default when the key is absent
        if d.get("use_sliding_window") is False:
            sw = None
        kw["sliding_window"] = None if sw is None else int(sw)
    else:
        if d.get("sliding_window") not in (None,):
            raise ConfigError(f"{source}: model_type 'llama' with a sliding_window is not a llama model")
        kw["sliding_window"] = None
    return MistralConfig(**kw)


def _rope_theta(d: dict, source: str) -> float:
    params = d.get("rope_parameters")
    scaling = d.get("rope_scaling")
    if scaling is not None and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ConfigError(f"{source}: rope_scaling {scaling!r} is not supported (only default RoPE)")
    if params is not None:
        if params.get("rope_type", "default") != "default":
            raise ConfigError(f"{source}: rope_parameters.rope_type {params.get('rope_type')!r} is not supported "
                              "(only default RoPE)")
        if "rope_theta" in params:
            return float(params["rope_theta"])
    return float(d.get("rope_theta", 10000.0))


def _first_id(v):
    if isinstance(v, list):
        return int(v[0]) if v else None
    return None if v is None else int(v)


# --- from Mistral's params.json ------------------------------------------------------------------

_PARAMS_KEYS = {"dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "norm_eps", "vocab_size",
                "rope_theta", "sliding_window", "max_seq_len", "ragged_attention"}
_PARAMS_IGNORED = {"max_batch_size", "model_type"}


def from_params_dict(p: dict, source: str = "params.json") -> MistralConfig:
    """Mistral's consolidated params.json -> MistralConfig (names as transformers' converter maps them)."""
    if not isinstance(p, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    unknown = sorted(k for k in p if k not in _PARAMS_KEYS and k not in _PARAMS_IGNORED)
    if unknown:
        raise ConfigError(f"{source}: unsupported field(s) {', '.join(unknown)} (e.g. moe/lora/vision are not "
                          "part of Mistral-7B)")
    try:
        dim, n_heads = int(p["dim"]), int(p["n_heads"])
        sw = p.get("sliding_window", p.get("ragged_attention"))  # old files: a string, sometimes
        return MistralConfig(
            vocab_size=int(p["vocab_size"]), hidden_size=dim, intermediate_size=int(p["hidden_dim"]),
            num_hidden_layers=int(p["n_layers"]), num_attention_heads=n_heads,
            num_key_value_heads=int(p.get("n_kv_heads", n_heads)), head_dim=int(p.get("head_dim", dim // n_heads)),
            rms_norm_eps=float(p["norm_eps"]),
            rope_theta=float(p.get("rope_theta") or 10000.0),  # HF converter's default (SPEC.md §1.2 pitfall)
            sliding_window=None if sw is None else int(sw),
            max_position_embeddings=int(p.get("max_seq_len", 32768)), tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, model_type="mistral")
    except KeyError as e:
        raise ConfigError(f"{source}: missing required field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value: {e}") from None


def read_json(path: str) -> dict:
    """json.load with an error that names the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def load_config(folder: str) -> MistralConfig:
    """config.json (HF) or params.json (consolidated) in ``folder``."""
    hf, params = os.path.join(folder, "config.json"), os.path.join(folder, "params.json")
    if os.path.exists(hf):
        return from_hf_dict(read_json(hf), source=hf)
    if os.path.exists(params):
        return from_params_dict(read_json(params), source=params)
    raise ConfigError(f"{folder}: no config.json or params.json")
