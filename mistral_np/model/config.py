"""The model's blueprint: a frozen ``MistralConfig`` and the shape vocabulary used everywhere.

Shape glossary (used in the trailing ``# (T, D) -> (T, H, Dh)`` comments of every module)::

    T   new tokens in this call          S   keys visible to a query (cache + new)
    D   hidden_size            (4096)    V   vocab_size            (32000 / 32768)
    H   num_attention_heads    (32)      K   num_key_value_heads   (8)
    G   H // K, queries per KV head (4)  Dh  head_dim              (128)
    F   intermediate_size      (14336)   W   sliding_window        (4096 or None)
    L   num_hidden_layers      (32)      Q   quantization block    (32)

Field names are the Hugging Face ``config.json`` names, so a value can be grepped and diffed against a
checkpoint by name. Reading a config file (HF ``config.json``, Mistral's ``params.json``, GGUF metadata)
is the job of ``mistral_np.checkpoints``; this file only says what a valid configuration is.

Presets: Mistral-7B v0.1 (window 4096, theta 1e4; the e5/SFR/Linq embedders share it), v0.2
(no window, theta 1e6), v0.3 (vocabulary 32768). Values as in the checkpoints' own config.json
(docs/references.md#config). The same decoder, wider, with head_dim 128 != hidden_size / heads (5120 / 32 =
160) and the Tekken vocabulary of 131072: Mistral-Nemo-12B (theta 1e6, 40 layers) and Mistral-Small-24B
(theta 1e8, F = 32768), neither with a window (docs/references.md#nemo-small).

tests/test_config.py checks that the presets equal the real checkpoints' config.json and that a config
survives a round trip through transformers' ``MistralConfig``; tests/test_nemo_small.py checks the Nemo and
Small presets against their real files.

next: params.py (which tensors a model with this config has).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            _need(type(value) is int and value > 0, name, f"must be a positive integer, got {value!r}")
        _need(self.num_attention_heads % self.num_key_value_heads == 0, "num_attention_heads",
              f"({self.num_attention_heads}) must be a multiple of num_key_value_heads ({self.num_key_value_heads})")
        _need(self.head_dim % 2 == 0, "head_dim", f"must be even for RoPE, got {self.head_dim}")
        _need(self.sliding_window is None or (type(self.sliding_window) is int and self.sliding_window > 0),
              "sliding_window", f"must be a positive integer or null, got {self.sliding_window!r}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            _need(type(value) in (int, float) and 0 < value < float("inf"), name,
                  f"must be a finite positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        _need(type(self.tie_word_embeddings) is bool, "tie_word_embeddings",
              f"must be true or false, got {self.tie_word_embeddings!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            _need(value is None or (type(value) is int and 0 <= value < self.vocab_size), name,
                  f"must be null or a token id below vocab_size ({self.vocab_size}), got {value!r}")
        _need(self.model_type in ("mistral", "llama"), "model_type", f"{self.model_type!r} is not mistral or llama")

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


def _need(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config field {field} {message}")


# --- presets ---------------------------------------------------------------------------------------

MISTRAL_7B_V01 = MistralConfig()  # Mistral-7B-v0.1 and Instruct-v0.1; also e5/SFR/Linq (docs/references.md#config)
MISTRAL_7B_V02 = MistralConfig(rope_theta=1e6, sliding_window=None)            # Instruct-v0.2
MISTRAL_7B_V03 = MistralConfig(vocab_size=32768, rope_theta=1e6, sliding_window=None)  # v0.3
# Mistral-Nemo-Base-2407 (its config.json; Instruct-2407 has the same shape, docs/references.md#nemo-small)
MISTRAL_NEMO_12B = MistralConfig(vocab_size=131072, hidden_size=5120, intermediate_size=14336, num_hidden_layers=40,
                                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1e6,
                                 sliding_window=None, max_position_embeddings=128000)
# Mistral-Small-24B-Base-2501 / Instruct-2501 (Mistral's params.json: dim 5120, hidden_dim 32768, max_seq_len 32768)
MISTRAL_SMALL_24B = MistralConfig(vocab_size=131072, hidden_size=5120, intermediate_size=32768, num_hidden_layers=40,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1e8,
                                  sliding_window=None, max_position_embeddings=32768)
PRESETS = {"mistral-7b-v0.1": MISTRAL_7B_V01, "mistral-7b-v0.2": MISTRAL_7B_V02,
           "mistral-7b-v0.3": MISTRAL_7B_V03, "mistral-nemo-12b": MISTRAL_NEMO_12B,
           "mistral-small-24b": MISTRAL_SMALL_24B}
