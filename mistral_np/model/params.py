"""Which tensors a Mistral model has: parameter containers that only hold arrays.

Field names are the HF checkpoint's leaf names, so ``model.layers.3.self_attn.q_proj.weight`` is
``params.layers[3].q_proj``. Every matrix is stored as the checkpoint stores it, ``[out, in]``
(``nn.Linear`` orientation): a linear layer computes ``y = x @ w.T`` (ops.linear).

A "weight" here is either a NumPy array in the compute dtype, or an object with ``.shape``,
``.matmul(x)`` and ``.take_rows(ids)`` (a quantized tensor from ``mistral_np.quant``, or a BF16/F16
weight converted on use): the model code never needs to know which.

Checked against the checkpoints' own names and shapes by checkpoints/pipeline.py:check_tensors
(tests/test_checkpoint.py).

next: forward.py (the forward pass over these parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from .config import MistralConfig

Weight = Any  # np.ndarray | QuantTensor | a weight converted on use


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


def build_params(cfg: MistralConfig, tensors: dict[str, Weight]) -> ModelParams:
    """HF-named tensors (already checked against ``expected_shapes``) -> ModelParams.

    A tied head reuses embed_tokens; an untied config without ``lm_head.weight`` is an embedding-only
    checkpoint (``lm_head`` None)."""
    missing = [n for n in expected_shapes(cfg) if n not in tensors and n != "lm_head.weight"]
    if missing:
        raise ValueError(f"build_params: missing tensor {missing[0]!r}")
    layers = [LayerParams(**{f: tensors[f"model.layers.{i}.{leaf}"] for f, leaf in LAYER_TENSORS.items()})
              for i in range(cfg.num_hidden_layers)]
    head = tensors["model.embed_tokens.weight"] if cfg.tie_word_embeddings else tensors.get("lm_head.weight")
    return ModelParams(embed_tokens=tensors["model.embed_tokens.weight"], layers=layers,
                       norm=tensors["model.norm.weight"], lm_head=head)


def map_weights(params: ModelParams, fn: Callable[[Weight], Weight]) -> ModelParams:
    """The same parameters with ``fn`` applied to every weight (a tied head stays tied)."""
    head = params.lm_head
    new_embed = fn(params.embed_tokens)
    new_head = None if head is None else (new_embed if head is params.embed_tokens else fn(head))
    layers = [replace(layer, **{f: fn(getattr(layer, f)) for f in LAYER_TENSORS}) for layer in params.layers]
    return ModelParams(embed_tokens=new_embed, layers=layers, norm=fn(params.norm), lm_head=new_head)


def named_weights(params: ModelParams, cfg: MistralConfig) -> dict[str, Weight]:
    """HF name -> weight, in checkpoint order (the inverse of ``build_params``; a tied head is not repeated)."""
    named = {"model.embed_tokens.weight": params.embed_tokens}
    for i, layer in enumerate(params.layers):
        named.update({f"model.layers.{i}.{leaf}": getattr(layer, f) for f, leaf in LAYER_TENSORS.items()})
    named["model.norm.weight"] = params.norm
    if params.lm_head is not None and not cfg.tie_word_embeddings:
        named["lm_head.weight"] = params.lm_head
    return named
