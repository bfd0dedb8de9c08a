"""The independent reference: tiny random Mistral/Llama checkpoints run by Hugging Face transformers.

Used by tools/make_goldens.py (to write the committed golden fixtures) and by the live parity tests.
Nothing here imports mistral_np: the reference side never depends on the code it checks.

* ``tiny_config(**overrides)``  an HF config.json dict for a small model
* ``build_hf_model(cfg_dict, seed)``  MistralForCausalLM / LlamaForCausalLM with random weights whose
  scale makes the logits far from uniform (HF's 0.02 init would make nearly any bug invisible)
* ``save_checkpoint(model, folder, dtype)``  save_pretrained as F32 or BF16 safetensors
* ``hf_trace(model, ids, exact=..., positions=...)``  logits and named intermediates, via forward hooks and
  the attention weights, named as mistral_np's ``forward(trace=True)`` names them (docs/conventions.md)
* ``exact_float64()``  a context manager that removes transformers' float32 casts (RMSNorm,
  rotary tables, eager softmax) so a float64 model computes in float64 throughout (docs/references.md#float64)
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import torch


def tiny_config(model_type="mistral", **overrides) -> dict:
    cfg = dict(model_type=model_type, vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0,
               max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    if model_type == "mistral":
        cfg["sliding_window"] = 8
    cfg.update(overrides)
    return cfg


def _config_object(cfg: dict):
    from transformers import LlamaConfig, MistralConfig
    cls = MistralConfig if cfg["model_type"] == "mistral" else LlamaConfig
    kw = {k: v for k, v in cfg.items() if k != "model_type"}
    return cls(**kw)


def build_hf_model(cfg: dict, seed: int = 0, attn="eager"):
    """A transformers causal LM with seeded random weights (std 0.3/sqrt(fan_in)·4, norms near 1)."""
    from transformers import LlamaForCausalLM, MistralForCausalLM
    cls = MistralForCausalLM if cfg["model_type"] == "mistral" else LlamaForCausalLM
    conf = _config_object(cfg)
    conf._attn_implementation = attn
    torch.manual_seed(seed)
    model = cls(conf).to(torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights: around 1, but not 1, so a missing multiply shows
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / np.sqrt(fan_in)))
        if cfg.get("tie_word_embeddings"):
            model.tie_weights()
    return model


def save_checkpoint(model, folder: str, dtype: str = "float32") -> None:
    """save_pretrained as safetensors in float32 or bfloat16 (the config says which)."""
    os.makedirs(folder, exist_ok=True)
    m = model.to(torch.bfloat16) if dtype == "bfloat16" else model
    m.save_pretrained(folder, safe_serialization=True)
    model.to(torch.float32)


def load_hf(folder: str, dtype=torch.float32, attn="eager"):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn).eval()


@contextlib.contextmanager
def exact_float64():
    """Patch transformers' Mistral/Llama RMSNorm, rotary tables and eager softmax to keep float64."""
    from transformers.models.llama import modeling_llama as ml
    from transformers.models.mistral import modeling_mistral as mm

    def rms_forward(self, h):
        var = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(var + self.variance_epsilon))

    def rotary_forward(self, x, position_ids):
        base = self.config.rope_parameters["rope_theta"]
        dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def make_eager(mod):
        def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
            key_states = mod.repeat_kv(key, module.num_key_value_groups)
            value_states = mod.repeat_kv(value, module.num_key_value_groups)
            w = torch.matmul(query, key_states.transpose(2, 3)) * scaling
            if attention_mask is not None:
                w = w + attention_mask
            w = torch.nn.functional.softmax(w, dim=-1)
            out = torch.matmul(w, value_states).transpose(1, 2).contiguous()
            return out, w
        return eager

    saved = []
    for mod, prefix in ((mm, "Mistral"), (ml, "Llama")):
        for obj, attr, new in ((getattr(mod, prefix + "RMSNorm"), "forward", rms_forward),
                               (getattr(mod, prefix + "RotaryEmbedding"), "forward", rotary_forward),
                               (mod, "eager_attention_forward", make_eager(mod))):
            saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, new)
    try:
        yield
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)


PER_LAYER = ("attn_input", "q", "k", "q_rope", "k_rope", "v", "attn_probs", "attn_output", "attn_residual",
             "mlp_output", "output")


def hf_trace(model, ids, exact=False, positions=None) -> dict[str, np.ndarray]:
    """Run ``model`` on one sequence of ids (at ``positions``, default 0..T-1); return its intermediates by
    mistral_np's trace names, in forward order (model/trace.py lists them): per layer the attention input, q and
    k before and after RoPE, v, the attention probabilities, the attention output, the residual, the MLP output,
    the layer output; then the final norm and (for a causal LM) the logits. Works on a causal LM or a headless
    backbone (``MistralModel``)."""
    trace: dict[str, torch.Tensor] = {}
    hooks = []
    base = getattr(model, "model", model)
    mod = __import__(type(model).__module__, fromlist=["apply_rotary_pos_emb"])
    layer_of_call = {"i": 0}
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def save(name, fn=lambda out: out):
        def hook(_m, _inp, out):
            trace[name] = fn(out[0] if isinstance(out, tuple) else out)
        return hook

    def heads(out):                                   # (1, T, n*Dh) -> (T, n, Dh)
        return out[0].reshape(out.shape[1], -1, head_dim)

    hooks.append(base.embed_tokens.register_forward_hook(save("embeddings")))
    for i, layer in enumerate(base.layers):
        p = f"layers.{i}."
        hooks.append(layer.input_layernorm.register_forward_hook(save(p + "attn_input")))
        hooks.append(layer.self_attn.q_proj.register_forward_hook(save(p + "q", heads)))
        hooks.append(layer.self_attn.k_proj.register_forward_hook(save(p + "k", heads)))
        hooks.append(layer.self_attn.v_proj.register_forward_hook(save(p + "v", heads)))
        hooks.append(layer.self_attn.o_proj.register_forward_hook(save(p + "attn_output")))
        hooks.append(layer.post_attention_layernorm.register_forward_hook(
            lambda _m, inp, _o, p=p: trace.__setitem__(p + "attn_residual", inp[0])))
        hooks.append(layer.mlp.register_forward_hook(save(p + "mlp_output")))
        hooks.append(layer.register_forward_hook(save(p + "output")))
        hooks.append(layer.self_attn.register_forward_pre_hook(
            lambda _m, _a, i=i: layer_of_call.__setitem__("i", i)))
    hooks.append(base.norm.register_forward_hook(save("final_norm")))

    original_rope = mod.apply_rotary_pos_emb

    def recording_rope(q, k, cos, sin, *a, **kw):
        qe, ke = original_rope(q, k, cos, sin, *a, **kw)
        p = f"layers.{layer_of_call['i']}."
        trace[p + "q_rope"], trace[p + "k_rope"] = qe[0].transpose(0, 1), ke[0].transpose(0, 1)  # (T, H, Dh)
        return qe, ke

    mod.apply_rotary_pos_emb = recording_rope
    ctx = exact_float64() if exact else contextlib.nullcontext()
    ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))[None]
    pos_t = None if positions is None else torch.as_tensor(np.asarray(positions, dtype=np.int64))[None]
    try:
        with ctx, torch.no_grad():
            out = model(ids_t, position_ids=pos_t, use_cache=False, output_attentions=True)
    finally:
        mod.apply_rotary_pos_emb = original_rope
        for h in hooks:
            h.remove()
    for i, att in enumerate(out.attentions or ()):
        if att is not None:
            trace[f"layers.{i}.attn_probs"] = att[0]                    # (H, T, S)
    if getattr(out, "logits", None) is not None:
        trace["logits"] = out.logits
    order = ["embeddings"] + [f"layers.{i}.{n}" for i in range(len(base.layers)) for n in PER_LAYER] + \
        ["final_norm", "logits"]
    result = {}
    for k in order:
        if k not in trace:
            continue
        v = trace[k]
        a = v.detach().to(torch.float64 if v.dtype == torch.float64 else torch.float32).numpy()
        if a.ndim == 3 and a.shape[0] == 1:                           # (1, T, D) -> (T, D)
            a = a[0]
        result[k] = a
    return result


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
