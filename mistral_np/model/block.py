"""One decoder layer: two pre-norm residual branches (attention, then the MLP).

    h   = x + attention(rms_norm(x, input_layernorm))
    out = h + mlp(rms_norm(h, post_attention_layernorm))

Shapes: (T, D) -> (T, D). Matches HF ``MistralDecoderLayer``. ``cache`` is this layer's view of the KV
cache and ``trace`` this layer's view of the trace (both may be the do-nothing defaults).

Checked against transformers' ``MistralDecoderLayer`` in tests/test_model.py, which compares each
layer's attn_residual and output with transformers'.

next: attention.py.
"""

from .attention import attention
from .mlp import swiglu_mlp
from .rmsnorm import rms_norm


def decoder_layer(x, layer, cfg, pos, cache, trace):
    """x (T, D), this layer's ``LayerParams``, the config, ``rope.Positions`` -> (T, D)."""
    a_in = rms_norm(x, layer.input_layernorm, cfg.rms_norm_eps)
    trace.record("attn_input", a_in)
    a_out = attention(a_in, layer, cfg, pos, cache, trace)
    h = x + a_out
    trace.record("attn_output", a_out)
    trace.record("attn_residual", h)
    m_out = swiglu_mlp(rms_norm(h, layer.post_attention_layernorm, cfg.rms_norm_eps),
                       layer.gate_proj, layer.up_proj, layer.down_proj)
    out = h + m_out
    trace.record("mlp_output", m_out)
    trace.record("output", out)
    return out
