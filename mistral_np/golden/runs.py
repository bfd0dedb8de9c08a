"""The computations a golden pack records, for one prompt: the traced forward pass, greedy decoding over the
rolling KV cache, and an embedder's pooling, at the model's compute dtype.

Known variants, for engineers who must match a specific reference (never the default):

    window+1      the sliding window one key wider (0 <= i - j <= W), as transformers 4.34 and 4.40 and
                  flash-attn paths up to 4.55 computed it (docs/references.md#window)
    bf16-act      activations rounded to bfloat16 (round to nearest even) at every layer boundary: after the
                  embedding lookup and after each decoder layer
    fp16-act      the same with float16

The rounding variants run the same layer functions as ``model.forward`` with a rounding step between layers
(``forward_layers``); the model itself has no such switch.

One more run, internal to the error budget (dump.py): ``float32-angles``, a float32 forward pass whose rotary
angles p * theta^(-2i/Dh) are computed in float32, as transformers and llama.cpp compute them (mistral_np
computes them in float64, then rounds): its distance from the truth is what a typical float32 backend's is,
and it grows with the position (an angle at position p is off by up to p * 2^-24 of itself).

tests/test_golden.py checks the plain runs against transformers candidates (tools/hf_golden.py) and the variants
against their references: ``window+1`` against transformers with a window one key wider, ``bf16-act`` falling
outside the float32 budget from the first tensor on.
tests/test_golden_cli.py checks ``fp16-act``: one float16 rounding of the embeddings, within the float16 budget,
outside the float32 one; its decode tensors are the plain run's (greedy_decode has no rounding variant).

next: dump.py.
"""

from __future__ import annotations

import numpy as np

from ..checkpoints.safetensors import bf16_to_f32, f32_to_bf16
from ..errors import InvalidArgumentError
from ..model.block import decoder_layer
from ..model.forward import forward, hidden_states
from ..model.kv_cache import NO_CACHE, KVCache
from ..model.ops import linear, log_softmax, take_rows
from ..model.rmsnorm import rms_norm
from ..model.rope import Positions
from ..model.rope import positions as rotary_positions
from ..model.trace import Trace

VARIANTS = ("window+1", "bf16-act", "fp16-act")
FLOAT32_ANGLES = "float32-angles"


def round_bf16(x: np.ndarray) -> np.ndarray:
    return bf16_to_f32(f32_to_bf16(x.astype(np.float32))).astype(x.dtype)


def round_fp16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(x.dtype)


ROUNDING = {"bf16-act": round_bf16, "fp16-act": round_fp16}


def variant_config(cfg, variant: str | None):
    """The config a variant runs with (window+1 widens the window; the others keep the config)."""
    if variant is None or variant in ROUNDING or variant == FLOAT32_ANGLES:
        return cfg
    if variant == "window+1":
        if cfg.sliding_window is None:
            raise InvalidArgumentError("variant window+1: this model has no sliding window to widen")
        return cfg.replace(sliding_window=cfg.sliding_window + 1)
    raise InvalidArgumentError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


def float32_angles(index: np.ndarray, head_dim: int, theta: float) -> Positions:
    """Rotation tables computed in float32 throughout (transformers' and llama.cpp's way)."""
    inv = (np.float32(1.0) / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    angles = index.astype(np.float32)[:, None] * inv.astype(np.float32)[None, :]
    return Positions(np.asarray(index, dtype=np.int64), np.cos(angles), np.sin(angles))


def forward_layers(params, cfg, ids, pos, dtype, trace, rounding=lambda x: x, head=True):
    """``model.forward`` spelled out over the layers, with ``rounding`` applied to the activations between
    layers and the rotation tables ``pos`` given by the caller."""
    x = rounding(take_rows(params.embed_tokens, ids).astype(dtype, copy=False))
    trace.record("embeddings", x)
    for i, layer in enumerate(params.layers):
        x = rounding(decoder_layer(x, layer, cfg, pos, NO_CACHE, trace.layer(i)))
    x = rms_norm(x, params.norm, cfg.rms_norm_eps)
    trace.record("final_norm", x)
    if not head:
        return x
    logits = linear(x, params.lm_head)
    trace.record("logits", logits)
    return logits


def traced_forward(params, cfg, ids, positions, dtype, variant=None, head=True, max_probs=1 << 22) -> dict:
    """Every named intermediate of one forward pass (model/trace.py names), as a dict in forward order."""
    trace = Trace(max_probs=max_probs)
    if variant == FLOAT32_ANGLES:
        forward_layers(params, cfg, ids, float32_angles(positions, cfg.head_dim, cfg.rope_theta), dtype, trace,
                       head=head)
        return trace.tensors
    cfg = variant_config(cfg, variant)
    if variant in ROUNDING:
        forward_layers(params, cfg, ids, rotary_positions(positions, cfg.head_dim, cfg.rope_theta, dtype), dtype,
                       trace, ROUNDING[variant], head)
    elif head:
        forward(params, cfg, ids, positions, dtype, trace=trace)
    else:
        hidden_states(params, cfg, ids, positions, dtype, trace=trace)
    return trace.tensors


def greedy_decode(params, cfg, ids, positions, dtype, steps: int, top_k: int = 5, forced=None,
                  variant=None) -> dict:
    """Prefill ``ids`` in chunks of W over a rolling KV cache, then ``steps`` greedy tokens, one at a time.

    -> decode.logits (steps, V): the logits each token was chosen from (row 0: the prompt's last position,
    from the cache); decode.tokens (steps,); decode.topk_ids / decode.topk_logprobs (steps, top_k).
    ``forced``: feed these tokens instead of the argmax (to measure another precision on the same path)."""
    cfg = variant_config(cfg, None if variant == FLOAT32_ANGLES else variant)
    if variant in ROUNDING:
        raise InvalidArgumentError(f"variant {variant}: decoding is recorded for the plain and window+1 runs only")
    if int(positions[0]) != 0:
        raise InvalidArgumentError("decoding is recorded for prompts starting at position 0 only")
    cache = KVCache(cfg, max_len=len(ids) + steps, dtype=dtype)
    chunk = cfg.sliding_window or 512
    for c in range(0, len(ids), chunk):
        h = hidden_states(params, cfg, ids[c:c + chunk], None, dtype, cache)
    logits = linear(h[-1:], params.lm_head)[0]
    rows, tokens = [], []
    for k in range(steps):
        rows.append(logits)
        token = int(np.argmax(logits)) if forced is None else int(forced[k])
        tokens.append(token)
        if k + 1 < steps:
            h = hidden_states(params, cfg, np.array([token], dtype=np.int64), None, dtype, cache)
            logits = linear(h, params.lm_head)[0]
    logits = np.stack(rows)                                                        # (steps, V)
    lp = log_softmax(logits.astype(np.float64))
    top = np.argsort(-lp, axis=-1, kind="stable")[:, :top_k]
    return {"decode.logits": logits, "decode.tokens": np.array(tokens, dtype=np.int64),
            "decode.topk_ids": top.astype(np.int64), "decode.topk_logprobs": np.take_along_axis(lp, top, -1)}


def embed_prompt(embedder, ids: list[int], n_prompt: int, dtype, variant=None) -> dict:
    """The embedder's forward pass (no LM head), its pooled vector and the normalized one."""
    from ..embeddings.pooling import POOLING, l2_normalize
    m = embedder.model
    ids = np.asarray(ids, dtype=np.int64)
    tensors = traced_forward(m.params, m.config, ids, np.arange(len(ids), dtype=np.int64), dtype, variant,
                             head=False)
    h = tensors["final_norm"][None]                                                # (1, T, D)
    mask = np.ones((1, len(ids)), dtype=np.int64)
    if not embedder.config.include_prompt:
        mask[0, :n_prompt] = 0
    pooled = POOLING[embedder.config.pooling](h, mask)[0]
    tensors["embedding.pooled"] = pooled
    tensors["embedding.normalized"] = l2_normalize(pooled[None])[0] if embedder.config.normalize else pooled
    return tensors
