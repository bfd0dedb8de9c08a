"""Text generation: chunked prefill, then one token at a time, with the usual sampling knobs.

What it computes
    ``generate_ids(model, prompt_ids, ...)``  -> generator of new token ids (the primitive)
    ``generate_text(model, prompt, ...)``     -> generator of text pieces (``model.generate``)
    ``generate_chat(model, messages, ...)``   -> generator of text pieces (``model.chat``)

The loop (mistral-inference's ``generate``, docs/references.md#rolling-cache)::

    cache = KVCache(cfg, max_len=len(prompt) + max_new_tokens)        model/kv_cache.py
    for chunk in prompt, chunk_size tokens at a time (default W, or 512 without a window):
        h = hidden_states(chunk, cache)                               each chunk attends over cache + chunk
    logits = h[-1] @ lm_head^T                                        only the last row is needed
    repeat: token = pick_token(logits); stop?; yield token; logits = forward([token], cache, decode weights)
            (for Q4_0/Q4_1 layers, the one-token forward is fused.py's compiled twin: one call for all layers)

``pick_token`` and the penalty are sampling.py. Stops: a token in ``stop_ids`` (default: EOS) ends
generation and is not yielded; a ``stop`` string ends it and is not emitted (stops.py).

Which numbers: for quantized weights the prompt runs on the weights' ``prompt_activations`` view and the
one-token decode steps on their ``decode_activations`` view: "int8" (llama.cpp's method: activations
quantized to 8-bit blocks, integer dot products, ~5e-3 relative error per matmul, docs/quantization.md;
the decode default) or "float" (bit-for-bit the ``forward`` path: with both "float", greedy tokens equal
those of re-running ``forward`` on the growing sequence). The prompt default, "auto", takes int8 for the
weights with at least 2048 inputs and for 4-bit ones where a rows-as-lanes GEMM runs, float for the others
(quant/tensor.py:resolve_activations). Float weights ignore the choice.

Checked against transformers' greedy ``generate`` on tiny random Mistral (window 4) and Llama models in
tests/test_generate.py, for several chunk sizes; tests/test_quantize.py checks that float activations on
quantized weights give exactly the tokens of re-running ``forward``, and tests/test_batch_decode.py and
tests/test_fused_decode.py check the batched and fused steps against this loop.

next: the embeddings (mistral_np/embeddings/) are the other way to use the model.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ArgumentTypeError, InvalidArgumentError
from ..model.forward import hidden_states
from ..model.kv_cache import KVCache
from ..model.ops import linear
from ..model.params import map_weights
from ..text.chat import chat_prompt_ids
from ..text.tokenizer import check_text
from .fused import fused_decoder
from .sampling import apply_repetition_penalty, check_sampling, pick_token
from .stats import GenerationStats
from .stops import StopStrings

DEFAULT_CHUNK_NO_WINDOW = 512


def check_token_ids(token_ids, vocab_size: int, name: str = "token_ids") -> np.ndarray:
    """A non-empty 1-D sequence of integer ids in [0, vocab_size) -> int64 array; else InvalidArgumentError."""
    if isinstance(token_ids, (str, bytes)):
        raise InvalidArgumentError(f"{name} must be a sequence of integer token ids, got {type(token_ids).__name__}")
    try:
        ids = np.asarray(token_ids)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{name} must be a sequence of integer token ids ({e})") from None
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InvalidArgumentError(f"{name} must be a non-empty 1-D integer array, got shape {ids.shape} "
                                   f"dtype {ids.dtype}")
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise InvalidArgumentError(f"token id {int(bad[0])} is outside the vocabulary (0..{vocab_size - 1})")
    return ids.astype(np.int64)


def decode_params(params, activations: str):
    """The weights a prompt or decode step uses: quantized ones viewed with ``activations`` ("int8" or
    "float"), the others as they are."""
    from ..quant.tensor import decode_weights
    return map_weights(params, lambda w: decode_weights(w, activations))


def generate_ids(model, prompt_ids, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop_ids=None, chunk_size: int | None = None, stats: GenerationStats | None = None,
                 decode_activations: str = "int8", prompt_activations: str = "auto", fused_decode: bool = True):
    """Prompt ids (used as given: no BOS added) -> generator of new token ids.

    Arguments are checked now (InvalidArgumentError naming the argument); the work happens as the generator
    is consumed. ``max_new_tokens=-1``: until a stop token or the end of the context. ``stop_ids`` default to the
    tokenizer's (else the config's) EOS; pass ``()`` to never stop early. ``prompt_activations`` and
    ``decode_activations`` as in the module docstring; ``fused_decode=False`` keeps the one-token steps on the
    readable path even where the compiled twin applies (fused.py)."""
    if decode_activations not in ("int8", "float"):
        raise InvalidArgumentError(f"decode_activations must be 'int8' or 'float', got {decode_activations!r}")
    if prompt_activations not in ("auto", "int8", "float"):
        raise InvalidArgumentError(f"prompt_activations must be 'auto', 'int8' or 'float', got {prompt_activations!r}")
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, chunk_size)
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise InvalidArgumentError(f"seed must be None or an integer >= 0, got {seed!r}")
    cfg = model.config
    if not isinstance(prompt_ids, np.ndarray) and len(prompt_ids) == 0:
        raise InvalidArgumentError("empty prompt: give at least one token")
    ids = check_token_ids(prompt_ids, cfg.vocab_size, "prompt ids")
    if model.params.lm_head is None:
        raise InvalidArgumentError("this checkpoint has no lm_head (an embedding model): it cannot generate")
    n, ctx = len(ids), cfg.max_position_embeddings
    if n >= ctx:
        raise InvalidArgumentError(f"prompt of {n} tokens does not fit the model's context of {ctx} tokens "
                                   f"(max_position_embeddings) with room for an answer: shorten it")
    if stop_ids is None:
        eos = model.tokenizer.eos_id if model.tokenizer is not None else cfg.eos_token_id
        stop_ids = () if eos is None else (eos,)
    stats = GenerationStats() if stats is None else stats
    stats.prompt_tokens = n
    model.last_stats = stats
    chunk = chunk_size or cfg.sliding_window or DEFAULT_CHUNK_NO_WINDOW
    budget = ctx - n if max_new_tokens == -1 else min(max_new_tokens, ctx - n)
    decode_weights = decode_params(model.params, decode_activations)
    fused = fused_decoder(decode_weights, cfg, decode_activations, model.dtype) if fused_decode else None
    return _loop(model, ids, budget, max_new_tokens, temperature, top_k, top_p,
                 repetition_penalty, np.random.default_rng(seed), frozenset(int(i) for i in stop_ids), chunk, stats,
                 decode_params(model.params, prompt_activations), decode_weights, fused)


def _loop(model, ids, budget, max_new_tokens, temperature, top_k, top_p, penalty, rng, stop_ids, chunk, stats,
          prompt_weights, decode_weights, fused):
    cfg, dtype = model.config, model.dtype
    if budget == 0:
        stats.stop_reason = "max_new_tokens"
        return
    cache = KVCache(cfg, max_len=len(ids) + budget, dtype=dtype)
    seen = np.zeros(cfg.vocab_size, dtype=bool)                # tokens in prompt or output (penalty)
    seen[ids] = True

    def step(weights, new_ids):                                # (T,) -> logits of the last one (V,)
        if fused is not None and weights is decode_weights:    # one token, all layers in one compiled call
            h = fused.hidden_state(weights, new_ids, cache)                     # (1, D)
        else:
            h = hidden_states(weights, cfg, new_ids, None, dtype, cache)       # (T, D), positions follow the cache
        return linear(h[-1:], weights.lm_head)[0]                              # (1, D) -> (V,)

    t0 = time.perf_counter()
    for c in range(0, len(ids), chunk):
        logits = step(prompt_weights, ids[c:c + chunk])
    stats.prompt_seconds = time.perf_counter() - t0
    for k in range(budget):
        t0 = time.perf_counter()
        if penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, penalty)
        token = pick_token(logits, rng, temperature, top_k, top_p)
        stats.generated_tokens += 1
        if token in stop_ids:
            stats.generation_seconds += time.perf_counter() - t0
            stats.stop_reason = "stop_token"
            return
        seen[token] = True
        stats.token_ids.append(token)
        if k + 1 < budget:
            logits = step(decode_weights, np.array([token], dtype=np.int64))
        else:
            stats.stop_reason = "max_new_tokens" if budget == max_new_tokens else "context"
        stats.generation_seconds += time.perf_counter() - t0
        yield token


def generate_text(model, prompt, stop=None, **kwargs):
    """A string (encoded with BOS, unless the tokenizer says ``add_bos_token`` false) or a list of ids
    (used as given) -> generator of text pieces.

    ``stop``: a string or list of strings; other keyword arguments as ``generate_ids``. The pieces
    concatenate to ``tokenizer.decode(generated ids)`` cut before the first stop string.
    """
    tok = model.tokenizer
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, (str, list, tuple, np.ndarray)):
        raise ArgumentTypeError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
    if isinstance(prompt, str):
        if tok is None:
            raise InvalidArgumentError(f"this model ({model.source}) has no tokenizer, so a text prompt cannot be "
                                       "encoded: add a tokenizer to its folder, or pass token ids to generate_ids()")
        if not prompt:
            raise InvalidArgumentError("empty prompt: give some text")
        prompt = tok.encode(check_text(prompt, "prompt"), bos=tok.add_bos_token)
    elif tok is None:
        raise InvalidArgumentError(f"this model ({model.source}) has no tokenizer, so there is no text to yield: "
                                   "use model.generate_ids(ids) for token ids")
    if stop is not None and not (isinstance(stop, str) or
                                 (isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop))):
        raise InvalidArgumentError(f"stop must be a string or a list of strings, got {stop!r}")
    stats = GenerationStats()
    ids = generate_ids(model, list(prompt), stats=stats, **kwargs)
    return _text(tok.stream(), StopStrings(stop), ids, stats)


def _text(stream, stops, ids, stats):
    for token in ids:
        piece = stops.push(stream.push(token))
        if piece:
            yield piece
        if stops.stopped:
            stats.stop_reason = "stop_string"
            return
    piece = stops.push(stream.flush())
    piece += stops.flush()
    if stops.stopped:
        stats.stop_reason = "stop_string"
    if piece:
        yield piece


def generate_chat(model, messages: list[dict], fmt: str | None = None, **kwargs):
    """``model.chat``: encode the conversation (text/chat.py ``chat_prompt_ids``) and generate the answer."""
    return generate_text(model, chat_prompt_ids(model.tokenizer, messages, fmt), **kwargs)
