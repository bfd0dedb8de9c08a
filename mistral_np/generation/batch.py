"""Several sequences at once: prefill in chunks fixed by absolute position, and a batched decode step.

What it computes
    ``prefill_chunk(model, cache, ids, chunk, weights)``  the next chunk of a prompt into its cache -> logits (V,)
                                                          once the prompt is complete
    ``BatchDecoder(model).step(caches, tokens)``          one new token for each of B sequences -> logits (B, V)
    ``rewind(cache, n)``                                  forget positions >= n (``can_rewind``: when that is exact)
    ``loop_defaults()``                                   the activations and decode path loop.py uses by default

This is generation/loop.py's arithmetic, rearranged so that a server can interleave many sequences; a server
(mistral_np/serve/) owns the caches and the sampling.

Prefill chunks are fixed by absolute position: a chunk never crosses a multiple of ``chunk``. A prompt of 300
tokens with chunk 128 runs as 0-127, 128-255, 256-299, and a prompt resumed at 256 from a cache that holds
0-255 runs 256-299: the same calls as the full prefill, so the same numbers. (Split 0-199 then 200-299 instead,
the rows of each matmul would be multiplied in differently shaped products; the bits of the cache and of the
logits would move by ~1e-7 relative, and with int8 decode activations that is enough to change a greedy token
a few steps later.) ``loop.py`` with ``chunk_size=chunk`` splits a prompt exactly so.

The decode step advances B sequences together, each by one token, at its own position:

    x = embed_tokens[tokens]                                    (B,) -> (B, D)
    for each layer:
        q, k, v = x Wq^T, x Wk^T, x Wv^T                        (B, D) -> (B, H, Dh), (B, K, Dh) x2   all rows
        per sequence b: RoPE at its position, its cache's ``update``, the attention (model/attention.py:attend)
        x = x + out Wo^T ;  x = x + swiglu_mlp(rms_norm(x))     all rows
    logits = rms_norm(x) lm_head^T                              (B, D) -> (B, V)                      all rows

with the model's own functions (model/rmsnorm.py, attention.py, mlp.py, ops.py, the cache's layer views): a
layer is ``stacked_layer``, which ``prefill_together`` runs too, a chunk of rows per sequence.

Which numbers. Each row gets exactly the bits the single-sequence loop gives (``loop.py`` with the same
activations for the prompt and the decode steps, the same ``fused_decode`` and ``chunk_size=chunk``), and each
weight is read once per step for all rows where that keeps those bits:

* where loop.py decodes with fused.py's compiled one-token step (every layer matrix Q4_0/Q4_1, float32), all B
  tokens go through that step in one call (``FusedDecoder.hidden_states``): its matmuls take the B rows through
  the one-row decode kernel, which does each row's arithmetic as for one row (quant/fast/decode.py);
* elsewhere the readable path above: everything but the matmuls row by row or element by element.

A weight is multiplied by all B rows in one call (``several_rows``: a quantized weight's ``matvecs``, else
``linear``) only where that call is known to give, row for row, the bits of one-row calls. ``BatchDecoder`` finds
out once per kind of weight (type, activations, shape) and row count by trying it on random rows
(``rows_agree``); elsewhere it multiplies one row at a time. Quantized weights pass (their ``matvecs`` is the
decode kernel); float weights do not: NumPy's one-row product is a gemv and its several-row product a gemm, and
OpenBLAS's sgemm itself picks another micro-kernel from 4 rows on, all with other last bits. ``stacking="always"``
forces one call for every weight (for float weights no longer exact), ``"never"`` takes the rows one at a time
(also through the fused step).

tests/test_batch_decode.py checks that each row of a batched step equals loop.py's one-token steps bit for bit
(float weights, Q4_0 with int8 and float activations, sequences joining and leaving), that a resumed prefill equals
the full one, when a cache may be rewound, and the stacking policy; tests/test_serve.py runs it inside the server.

next: back to loop.py, or on to mistral_np/serve/ (the server built on this file).
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np

from ..errors import InvalidArgumentError
from ..model.attention import attend
from ..model.forward import hidden_states
from ..model.mlp import swiglu_mlp
from ..model.ops import linear, linears, take_rows
from ..model.rmsnorm import rms_norm
from ..model.rope import positions as rotary_positions
from ..model.trace import NO_TRACE
from .fused import fused_decoder
from .loop import decode_params, generate_ids

STACKING = ("auto", "always", "never")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------------------ prefill
def chunk_end(start: int, total: int, chunk: int) -> int:
    """End of the prefill chunk that starts at ``start``: the next multiple of ``chunk``, or ``total``."""
    return min(total, (start // chunk + 1) * chunk)


def prefill_chunk(model, cache, ids: np.ndarray, chunk: int, weights=None) -> np.ndarray | None:
    """Run the next chunk of the prompt ``ids`` (all of it, from position 0) through the model into ``cache``,
    from ``cache.next_position`` to ``chunk_end``. -> logits of the last prompt token (V,) once the prompt is
    complete, else None. ``weights``: the prompt's weights, as loop.py makes them (``decode_params(params,
    prompt activations)``); default the weights as loaded (float activations)."""
    weights = model.params if weights is None else weights
    start = cache.next_position
    if not 0 <= start < len(ids):
        raise InvalidArgumentError(f"the cache is at position {start}, outside the prompt of {len(ids)} tokens")
    end = chunk_end(start, len(ids), chunk)
    h = hidden_states(weights, model.config, ids[start:end], None, model.dtype, cache)      # (T, D)
    if end < len(ids):
        return None
    return linear(h[-1:], weights.lm_head)[0]                                              # (1, D) -> (V,)


def prompts_stack(weights) -> bool:
    """Whether several prompts' chunks may go through the layers as one (``prefill_together``) and each get the bits
    of its own pass: every layer matrix is quantized and multiplied with int8 activations, whose prompt GEMMs
    give each token's row the same bits whatever the rows around it (tests/test_quant_kernels.py,
    ``test_a_prompt_tokens_result_does_not_depend_on_the_others``). Float activations go through BLAS, whose
    sgemm picks its blocking by the row count: no such promise there."""
    return all(getattr(getattr(layer, f), "activations", None) == "int8" for layer in weights.layers
               for f in PROJECTIONS)


def prefill_together(model, caches: list, prompts: list, chunk: int, weights=None) -> list:
    """``prefill_chunk`` for several sequences in one pass over the weights: the next chunk of ``prompts[b]`` into
    ``caches[b]`` for every b, each chunk at least 2 tokens (one token alone would take the decode kernel, other
    bits). -> for each b, the logits of its last prompt token (V,) once its prompt is complete, else None.

    The chunks' rows are stacked for the embedding, the norms, the matmuls and the MLP (all row by row or, for the
    matmuls, row-independent where ``prompts_stack(weights)``); RoPE, the cache update and the attention run per
    sequence (model/attention.py:attend). Each sequence gets exactly the bits of its own ``prefill_chunk`` call
    (tests/test_batch_decode.py), so a server may prefill the prompts that arrive together in one pass: a
    25-token chunk reads every weight for 25 tokens' work, four of them together read it once."""
    weights = model.params if weights is None else weights
    cfg, dtype = model.config, model.dtype
    if not prompts_stack(weights):
        raise InvalidArgumentError("prefill_together needs every layer matrix quantized with int8 activations")
    if len(caches) != len(prompts) or len({id(c) for c in caches}) != len(caches):
        raise InvalidArgumentError(f"prefill_together takes one distinct cache per prompt: {len(prompts)} prompts, "
                                   f"{len(caches)} caches")
    spans = []                                                               # (start, end) of each chunk
    for cache, ids in zip(caches, prompts):
        start = cache.next_position
        if not 0 <= start < len(ids):
            raise InvalidArgumentError(f"the cache is at position {start}, outside the prompt of {len(ids)} tokens")
        spans.append((start, chunk_end(start, len(ids), chunk)))
        if spans[-1][1] - start < 2:
            raise InvalidArgumentError(f"a chunk of one token (position {start}) must be prefilled alone")
    rows = np.cumsum([0] + [e - s for s, e in spans])                       # chunk b: rows rows[b]..rows[b+1]
    pos = [rotary_positions(np.arange(s, e, dtype=np.int64), cfg.head_dim, cfg.rope_theta, dtype) for s, e in spans]
    ids = np.concatenate([p[s:e] for p, (s, e) in zip(prompts, spans)])
    x = take_rows(weights.embed_tokens, ids).astype(dtype, copy=False)       # (T,) -> (T, D), T = all chunks
    for i, layer in enumerate(weights.layers):
        x = stacked_layer(x, layer, cfg, rows, pos, [c.layer(i) for c in caches])
    x = rms_norm(x, weights.norm, cfg.rms_norm_eps)
    return [linear(x[b - 1:b], weights.lm_head)[0] if e == len(p) else None      # (1, D) -> (V,), as prefill_chunk
            for b, (s, e), p in zip(rows[1:], spans, prompts)]


def stacked_layer(x, layer, cfg, rows, pos, views):
    """model/block.py's decoder_layer for the stacked rows of several sequences: sequence b's rows are
    rows[b]..rows[b+1] of x (T, D), at ``pos[b]``, over its cache view ``views[b]``. The norms, the projections
    and the MLP take all rows; RoPE, the cache update and the attention run per sequence
    (model/attention.py:attend).  -> (T, D)"""
    T, H, K, Dh = len(x), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    a_in = rms_norm(x, layer.input_layernorm, cfg.rms_norm_eps)
    q, k, v = linears(a_in, layer.q_proj, layer.k_proj, layer.v_proj)
    q, k, v = q.reshape(T, H, Dh), k.reshape(T, K, Dh), v.reshape(T, K, Dh)   # (T, D) -> (T, H, Dh), (T, K, Dh) x2
    out = np.concatenate([attend(q[a:b], k[a:b], v[a:b], cfg, p, view, NO_TRACE)
                          for a, b, p, view in zip(rows[:-1], rows[1:], pos, views)])   # (T, H, Dh)
    h = x + linear(out.reshape(T, H * Dh), layer.o_proj)                     # (T, H*Dh) -> (T, D)
    return h + swiglu_mlp(rms_norm(h, layer.post_attention_layernorm, cfg.rms_norm_eps),
                          layer.gate_proj, layer.up_proj, layer.down_proj)


def loop_defaults() -> dict:
    """``generate_ids``' defaults for ``prompt_activations``, ``decode_activations`` and ``fused_decode``, read
    from its signature, so that a caller of this file computes what ``model.generate`` computes unless told
    otherwise, and keeps doing so when those defaults change."""
    params = inspect.signature(generate_ids).parameters
    return {name: params[name].default for name in ("prompt_activations", "decode_activations", "fused_decode")}


def can_rewind(cache, n: int) -> bool:
    """Whether ``rewind(cache, n)`` leaves the cache exactly as if only positions 0..n-1 had been written:
    true for n = the cache's length, and for any shorter n as long as no slot has been written twice (a rolling
    buffer that wrapped has lost keys that position n would need)."""
    seen = cache.next_position
    return n == seen or (0 <= n < seen and seen <= cache.slots)


def rewind(cache, n: int) -> None:
    """Forget positions >= n: their slots are marked empty and the next token goes to position n."""
    if not can_rewind(cache, n):
        raise InvalidArgumentError(f"cannot rewind a cache holding {cache.next_position} positions in "
                                   f"{cache.slots} slots to {n}")
    cache.slot_pos[cache.slot_pos >= n] = -1
    cache.seen[:] = n


# ------------------------------------------------------------------------------------------------ decode
def several_rows(w):
    """The product of a few rows with ``w`` in one call: a quantized weight's ``matvecs`` (its one-row
    kernel for each row, the weight read once), else ``linear``."""
    return w.matvecs if hasattr(w, "matvecs") else (lambda x: linear(x, w))


def rows_agree(w, rows: int, in_dim: int, dtype, seeds=(0, 1)) -> bool:
    """Whether ``several_rows(w)`` of ``rows`` random rows gives, row for row, the bits of ``linear`` of each
    row alone."""
    several = several_rows(w)
    for seed in seeds:
        x = np.random.default_rng(seed).standard_normal((rows, in_dim)).astype(dtype)
        y = several(x)                                                            # (rows, out)
        if not all(np.array_equal(y[i], linear(x[i:i + 1], w)[0]) for i in range(rows)):
            return False
    return True


def _kind(w) -> tuple:
    """What decides a weight's kernel: its type, block type, activations, shape and dtype."""
    base = w if isinstance(w, np.ndarray) else getattr(w, "base", w)
    return (type(w).__name__, type(base).__name__, getattr(w, "qtype", None), getattr(w, "activations", None),
            tuple(w.shape), str(getattr(w, "dtype", "")))


class RowwiseWeight:
    """A weight whose ``matmul`` of several rows is one call (``several_rows``) where ``stacked`` holds that row
    count, else one call per row. ``calls`` counts the calls made to the weight (a test sees the weight read
    once per step)."""

    def __init__(self, w, stacked: frozenset):
        self.w, self.stacked, self.calls = w, stacked, 0
        self.shape = w.shape
        self._several = several_rows(w)

    def matmul(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1:
            self.calls += 1
            return linear(x, self.w)                                              # (1, in) -> (1, out)
        if len(x) in self.stacked:
            self.calls += 1
            return self._several(x)                                               # (B, in) -> (B, out)
        self.calls += len(x)
        return np.concatenate([linear(x[i:i + 1], self.w) for i in range(len(x))])


class BatchDecoder:
    """The decode step for up to ``max_rows`` sequences, on ``decode_params(model.params, decode_activations)``.

    ``stacking``: "auto" (one call per weight where it gives the one-row bits, see the module docstring),
    "always", "never". ``fused``: use fused.py's one-token step where it applies (default: as loop.py).
    ``stacked_rows(name)`` reports the choice for a weight (e.g. "layers.0.q_proj", "lm_head"); ``describe()``
    sums it up in a line."""

    def __init__(self, model, decode_activations: str = "int8", max_rows: int = 4, stacking: str = "auto",
                 fused: bool | None = None):
        if stacking not in STACKING:
            raise InvalidArgumentError(f"stacking must be one of {', '.join(STACKING)}, got {stacking!r}")
        if not isinstance(max_rows, int) or max_rows < 1:
            raise InvalidArgumentError(f"max_rows must be a positive integer, got {max_rows!r}")
        if model.params.lm_head is None:
            raise InvalidArgumentError("this checkpoint has no lm_head (an embedding model): it cannot generate")
        self.model, self.max_rows, self.stacking = model, max_rows, stacking
        self.weights = weights = decode_params(model.params, decode_activations)
        fused = loop_defaults()["fused_decode"] if fused is None else fused
        self.fused = fused_decoder(weights, model.config, decode_activations, model.dtype) if fused else None
        self._agree: dict[tuple, frozenset] = {}
        wrap = self._rowwise
        self.lm_head = wrap(weights.lm_head)
        self.embed_tokens, self.norm = weights.embed_tokens, weights.norm
        self.layers = [] if self.fused is not None else \
            [replace(layer, **{f: wrap(getattr(layer, f)) for f in PROJECTIONS}) for layer in weights.layers]

    def _rowwise(self, w) -> RowwiseWeight:
        rows = range(2, self.max_rows + 1)
        if self.stacking != "auto":
            return RowwiseWeight(w, frozenset(rows if self.stacking == "always" else ()))
        key = _kind(w)
        if key not in self._agree:
            dtype = w.dtype if isinstance(w, np.ndarray) else self.model.dtype
            self._agree[key] = frozenset(r for r in rows if rows_agree(w, r, w.shape[1], dtype))
        return RowwiseWeight(w, self._agree[key])

    def stacked_rows(self, name: str) -> frozenset:
        """Row counts multiplied in one call for weight ``name`` ("lm_head" or "layers.{l}.{projection}"; the
        fused step takes all rows in one call unless stacking is "never")."""
        if name == "lm_head":
            return self.lm_head.stacked
        if self.fused is not None:
            return frozenset(range(2, self.max_rows + 1)) if self.stacking != "never" else frozenset()
        _, l, f = name.split(".")
        return getattr(self.layers[int(l)], f).stacked

    def describe(self) -> str:
        def rows(stacked):
            return f"one pass for {sorted(stacked)} rows" if stacked else "one row at a time"
        if self.fused is not None:
            layers = "fused step (generation/fused.py), " + \
                ("one row at a time" if self.stacking == "never" else "all rows in one call")
        else:
            layers = f"layers {rows(self.stacked_rows('layers.0.gate_proj'))}"
        return f"{layers}, LM head {rows(self.lm_head.stacked)}"

    def step(self, caches: list, tokens) -> np.ndarray:
        """One new token per sequence: ``tokens[b]`` at ``caches[b].next_position``. -> logits (B, V)"""
        B, cfg, dtype = len(tokens), self.model.config, self.model.dtype
        if not 1 <= B <= self.max_rows or len(caches) != B or len({id(c) for c in caches}) != B:
            raise InvalidArgumentError(f"step takes 1..{self.max_rows} distinct caches, one token each; got "
                                       f"{len(caches)} caches and {B} tokens")
        ids = np.asarray(tokens, dtype=np.int64)
        if self.fused is not None:                         # loop.py's compiled step, then the LM head
            if self.stacking == "never":
                x = np.concatenate([self.fused.hidden_state(self.weights, ids[b:b + 1], c)
                                    for b, c in enumerate(caches)])
            else:                                          # all rows in one call, each as alone
                x = self.fused.hidden_states(self.weights, ids, caches)          # (B,) -> (B, D)
            return linear(x, self.lm_head)                                        # (B, D) -> (B, V)
        pos = [rotary_positions(np.array([c.next_position], dtype=np.int64), cfg.head_dim, cfg.rope_theta, dtype)
               for c in caches]                                                   # B x ((1,), (1, Dh/2) x2)
        x = take_rows(self.embed_tokens, ids).astype(dtype, copy=False)           # (B,) -> (B, D)
        rows = np.arange(B + 1)                                                   # one row per sequence
        for i, layer in enumerate(self.layers):
            x = stacked_layer(x, layer, cfg, rows, pos, [c.layer(i) for c in caches])
        return linear(rms_norm(x, self.norm, cfg.rms_norm_eps), self.lm_head)    # (B, D) -> (B, V)
