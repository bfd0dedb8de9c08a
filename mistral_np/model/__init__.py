"""The Mistral model as maths: NumPy, the standard library, and nothing else.

Read it in the order the data flows, each file's docstring pointing at the next:

    config.py    the blueprint (MistralConfig) and the shape glossary
    params.py    which tensors exist, under their Hugging Face names
    forward.py   embed -> L decoder layers -> final norm -> LM head
    block.py     one layer: two pre-norm residual branches
    attention.py the attention layer: project, rotate, cache, attend, project back
    rope.py      rotary position embeddings (half-split layout)
    kv_cache.py  the rolling-buffer KV cache
    masks.py     which keys a query sees: 0 <= i - j < W
    gqa.py       softmax(q k^T / sqrt(Dh) + mask) v with grouped KV heads
    mlp.py       SwiGLU
    rmsnorm.py   RMSNorm
    ops.py       linear, take_rows, softmax, silu

Side roads: trace.py (recording the intermediates by name), gqa_blocked.py (the block-by-block twin of
gqa.py used for long inputs) and parallel.py (the threads that float products and query blocks run on). Checkpoint formats, tokenizers, generation and quantization live in the
sibling packages and call into this one, never the other way round.
"""

from .config import PRESETS, MistralConfig
from .forward import forward, hidden_states
from .kv_cache import KVCache
from .params import LayerParams, ModelParams, build_params, expected_shapes, map_weights, named_weights
from .trace import NO_TRACE, Trace

__all__ = ["MistralConfig", "PRESETS", "forward", "hidden_states", "KVCache", "LayerParams", "ModelParams",
           "build_params", "expected_shapes", "map_weights", "named_weights", "Trace", "NO_TRACE"]
