"""Which tensors a Mistral model has: parameter containers that only hold arrays.

Field names are the HF checkpoint's leaf names, so ``model.layers.3.self_attn.q_proj.weight`` is
``params.layers[3].q_proj``. Every matrix is stored as the checkpoint stores it, ``[out, in]``
(``nn.Linear`` orientation): a linear layer computes ``y = x @ w.T`` (ops.linear).

A "weight" here is either a NumPy array in the compute dtype, or an object with ``.shape``,
``.matmul(x)`` and ``.take_rows(ids)`` (a quantized tensor from ``mistral_np.quant``, or a
``LazyWeight`` that converts BF16/F16 storage on use): the model code never needs to know which.

next: weights.py (reading checkpoints into these containers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import MistralConfig

Weight = Any  # np.ndarray | QuantTensor | LazyWeight


@dataclass
class LayerParams:
    input_layernorm: Weight           # (D,)
    q_proj: Weight                    # (H*Dh, D)
    k_proj: Weight                    # (K*Dh, D)
    v_proj: Weight                    # (K*Dh, D)
    o_proj: Weight                    # (D, H*Dh)
    post_attention_layernorm: Weight  # (D,)
    gate_proj: Weight                 # (F, D)
    up_proj: Weight                   # (F, D)
    down_proj: Weight                 # (D, F)


@dataclass
class ModelParams:
    embed_tokens: Weight              # (V, D)
    layers: list[LayerParams]
    norm: Weight                      # (D,)
    lm_head: Weight | None            # (V, D); None for an embedding-only checkpoint (MistralModel)


# HF name (without the "model." prefix) of each LayerParams field.
LAYER_TENSORS = {
    "input_layernorm": "input_layernorm.weight",
    "q_proj": "self_attn.q_proj.weight",
    "k_proj": "self_attn.k_proj.weight",
    "v_proj": "self_attn.v_proj.weight",
    "o_proj": "self_attn.o_proj.weight",
    "post_attention_layernorm": "post_attention_layernorm.weight",
    "gate_proj": "mlp.gate_proj.weight",
    "up_proj": "mlp.up_proj.weight",
    "down_proj": "mlp.down_proj.weight",
}


def expected_shapes(cfg: MistralConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, for every tensor of a MistralForCausalLM with this config."""
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    per_layer = {
        "input_layernorm": (D,), "q_proj": (q, D), "k_proj": (kv, D), "v_proj": (kv, D), "o_proj": (D, q),
        "post_attention_layernorm": (D,), "gate_proj": (F, D), "up_proj": (F, D), "down_proj": (D, F),
    }
    shapes = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,)}
    for i in range(cfg.num_hidden_layers):
        for field, leaf in LAYER_TENSORS.items():
            shapes[f"model.layers.{i}.{leaf}"] = per_layer[field]
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def build_params(cfg: MistralConfig, tensors: dict[str, Weight], allow_missing_head: bool = False) -> ModelParams:
    """HF-named tensors (already shape-checked) -> ModelParams. Tied heads reuse embed_tokens."""
    layers = [LayerParams(**{f: tensors[f"model.layers.{i}.{leaf}"] for f, leaf in LAYER_TENSORS.items()})
              for i in range(cfg.num_hidden_layers)]
    if cfg.tie_word_embeddings:
        head = tensors["model.embed_tokens.weight"]
    else:
        head = tensors.get("lm_head.weight")
        assert head is not None or allow_missing_head
    return ModelParams(embed_tokens=tensors["model.embed_tokens.weight"], layers=layers,
                       norm=tensors["model.norm.weight"], lm_head=head)
