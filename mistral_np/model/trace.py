"""Recording the intermediates of a forward pass by name: the golden values other backends compare against.

``forward(..., trace=Trace())`` fills ``trace.tensors`` with every named intermediate, in forward order::

    embeddings                                       (T, D)   the embedding rows of the ids
    layers.{l}.attn_input                            (T, D)   after input_layernorm
    layers.{l}.q / .k                                (T, H, Dh) / (T, K, Dh)   projections, before RoPE
    layers.{l}.q_rope / .k_rope / .v                 (T, H, Dh) / (T, K, Dh) / (T, K, Dh)
    layers.{l}.attn_probs                            (H, T, S)  softmax(q k^T / sqrt(Dh) + mask), only
                                                                when T * S <= ``max_probs`` (it is large)
    layers.{l}.attn_output                           (T, D)   after o_proj
    layers.{l}.attn_residual                         (T, D)   x + attention
    layers.{l}.mlp_output / .output                  (T, D)
    final_norm, logits                               (T, D), (T, V)

The model code records unconditionally (``trace.record(name, value)``); with ``NO_TRACE`` (the default)
recording does nothing, so the maths never branches on whether it is being watched. ``trace.layer(l)``
is a view that prefixes ``layers.{l}.`` to the names it records.

``mistral-np trace`` (cli/trace.py) prints these per layer: shape, mean, std, max |x|, with attention tables, a
logit lens and the cache map.

tests/test_model.py checks the names in forward order, that recording changes no number, and every recorded
tensor against the same points hooked in transformers; tests/test_trace_cli.py checks that ``mistral-np trace``
prints its numbers.

next: config.py is where the reading order starts; this file is a side road.
"""

from __future__ import annotations

import numpy as np


class Trace:
    """Keeps every recorded array (the arrays themselves: no copies; the model never modifies them)."""

    def __init__(self, max_probs: int = 4096 * 64):
        self.tensors: dict[str, np.ndarray] = {}
        self.max_probs = int(max_probs)      # record attn_probs when T * S is at most this
        self._prefix = ""

    def record(self, name: str, value: np.ndarray) -> None:
        self.tensors[self._prefix + name] = value

    def wants_probs(self, n_queries: int, n_keys: int) -> bool:
        return n_queries * n_keys <= self.max_probs

    def layer(self, index: int) -> "Trace":
        view = Trace.__new__(Trace)
        view.tensors, view.max_probs, view._prefix = self.tensors, self.max_probs, f"{self._prefix}layers.{index}."
        return view


class _NoTrace(Trace):
    def __init__(self):
        super().__init__(max_probs=0)

    def record(self, name: str, value: np.ndarray) -> None:
        pass

    def wants_probs(self, n_queries: int, n_keys: int) -> bool:
        return False

    def layer(self, index: int) -> "Trace":
        return self


NO_TRACE = _NoTrace()
