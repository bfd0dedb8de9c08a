"""One decoder layer: two pre-norm residual branches (attention, then the MLP).

    h   = x + attention(rms_norm(x, input_layernorm))
    out = h + mlp(rms_norm(h, post_attention_layernorm))

Shapes: (T, D) -> (T, D). Matches HF ``MistralDecoderLayer``. With a ``trace`` dict, every named
intermediate of the layer is recorded under ``layers.{i}.<name>`` (docs/conventions.md lists them).

next: attention.py.
"""

from .attention import attention
from .mlp import swiglu_mlp
from .rmsnorm import rms_norm


def decoder_layer(x, layer, cfg, positions, cos, sin, layer_idx, cache=None, trace=None):
    p = f"layers.{layer_idx}."
    a_in = rms_norm(x, layer.input_layernorm, cfg.rms_norm_eps)
    a_out = attention(a_in, layer, cfg, positions, cos, sin, layer_idx, cache, trace, p)
    h = x + a_out
    m_out = swiglu_mlp(rms_norm(h, layer.post_attention_layernorm, cfg.rms_norm_eps),
                       layer.gate_proj, layer.up_proj, layer.down_proj)
    out = h + m_out
    if trace is not None:
        trace.update({p + "attn_input": a_in, p + "attn_output": a_out, p + "attn_residual": h,
                      p + "mlp_output": m_out, p + "output": out})
    return out
