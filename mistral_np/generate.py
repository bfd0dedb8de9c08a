"""Text generation: chunked prefill, then one token at a time, with the usual sampling knobs.

What it computes
    ``generate_ids(model, prompt_ids, ...)``  -> generator of new token ids (the primitive)
    ``generate_text(model, prompt, ...)``     -> generator of text pieces (``model.generate``)
    ``generate_chat(model, messages, ...)``   -> generator of text pieces (``model.chat``)

The loop (mistral-inference ``generate``, SPEC.md §2.5)::

    cache = KVCache(cfg, max_len=len(prompt) + max_new_tokens)        kv_cache.py
    for chunk in prompt, chunk_size tokens at a time (default W, or 512 without a window):
        h = hidden_states(chunk, cache)                               each chunk attends over cache + chunk
    logits = h[-1] @ lm_head^T                                        only the last row is needed
    repeat: token = pick(logits); stop?; yield token; logits = forward([token], cache)

``pick`` (the order of Hugging Face's logits processors, then warpers):

    1. repetition penalty  every token already in prompt or output: logit / r if logit > 0, else logit * r
    2. temperature         logits / t; t == 0 means greedy: argmax, steps 3-5 skipped
    3. top-k               keep the k largest logits (ties with the k-th kept)
    4. top-p (nucleus)     keep the smallest set of most likely tokens whose probability mass is >= p
    5. draw                softmax in float64, inverse CDF with ``np.random.default_rng(seed)``

Stops: a token in ``stop_ids`` (default: EOS) ends generation and is not yielded; a ``stop`` string
ends it and is not emitted. Text that could be the start of a stop string is held back until the next
piece decides (``StopStrings``), so "###" split as "#" "##" never leaks a "#". Timings and counts of
the last call are in ``GenerationStats`` (``model.last_stats``).

next: cli_generate.py (the command line on top of this).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .kv_cache import KVCache
from .model import hidden_states
from .ops import linear

DEFAULT_CHUNK_NO_WINDOW = 512


@dataclass
class GenerationStats:
    """Counts and timings of one generation (generator-internal time only, not the consumer's)."""
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0         # tokens sampled, a final stop token included
    generation_seconds: float = 0.0   # sampling + decode forward passes
    stop_reason: str | None = None    # max_new_tokens | context | stop_token | stop_string
    token_ids: list[int] = field(default_factory=list)   # the generated ids, the stop token excluded

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else float("nan")

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else float("nan")

    def summary(self) -> str:
        return (f"prompt: {self.prompt_tokens} tokens, {self.prompt_tokens_per_s:.1f} tok/s | generated: "
                f"{self.generated_tokens} tokens, {self.generated_tokens_per_s:.1f} tok/s | stop: {self.stop_reason}")


# ------------------------------------------------------------------------------------------------ sampling
def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """HF ``RepetitionPenaltyLogitsProcessor``: seen tokens' logits / penalty if > 0, else * penalty. (V,)"""
    out = logits.copy()
    s = out[seen]
    out[seen] = np.where(s < 0, s * penalty, s / penalty)
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Logits below the k-th largest -> -inf (HF ``TopKLogitsWarper``; k = 0: no filter). (V,)"""
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens with probability mass >= p; others -> -inf. (V,)

    Example: probabilities [0.1, 0.5, 0.3, 0.1], p = 0.7: sorted 0.5, 0.3, ... ; mass before each token
    0, 0.5, 0.8, 0.9; a token is kept while the mass before it is < p: {0.5, 0.3} (mass 0.8 >= 0.7).
    """
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")                  # most likely first
    probs = _softmax64(logits[order])
    before = np.cumsum(probs) - probs                           # mass of the tokens ranked above
    out = np.full_like(logits, -np.inf)
    keep = order[before < p]                                    # always includes the top token
    out[keep] = logits[keep]
    return out


def _softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - np.max(x))
    return e / e.sum()


def pick_token(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0) -> int:
    """Steps 2-5 of the pipeline on one row of logits (V,) -> a token id."""
    if temperature == 0:
        return int(np.argmax(logits))
    x = top_p_filter(top_k_filter(logits.astype(np.float64) / temperature, top_k), top_p)
    cdf = np.cumsum(_softmax64(x))
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))  # zero-mass tokens never drawn


def check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, chunk_size):
    """Raise ValueError, naming the argument, for a value outside its range."""
    rules = [(max_new_tokens, "max_new_tokens", isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 0,
              "an integer >= 0"),
             (temperature, "temperature", temperature >= 0, ">= 0 (0 = greedy)"),
             (top_k, "top_k", isinstance(top_k, (int, np.integer)) and top_k >= 0, "an integer >= 0 (0 = off)"),
             (top_p, "top_p", 0 < top_p <= 1, "in (0, 1] (1 = off)"),
             (repetition_penalty, "repetition_penalty", repetition_penalty > 0, "> 0 (1 = off)"),
             (chunk_size, "chunk_size", chunk_size is None or chunk_size >= 1, ">= 1")]
    for value, name, ok, want in rules:
        if not ok:
            raise ValueError(f"{name} must be {want}, got {value!r}")


# ------------------------------------------------------------------------------------------------ token ids
def generate_ids(model, prompt_ids, max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop_ids=None, chunk_size: int | None = None, stats: GenerationStats | None = None,
                 decode_activations: str = "int8"):
    """Prompt ids (used as given: no BOS added) -> generator of new token ids.

    Arguments are checked now (ValueError); the work happens as the generator is consumed. ``stop_ids``
    default to the tokenizer's (else the config's) EOS; pass ``()`` to never stop early.
    ``decode_activations``: for quantized weights, the one-token decode steps quantize the activation
    vector to int8 blocks and use integer dot products ("int8", llama.cpp's method: about 2x faster,
    ~5e-3 relative error per matmul, docs/quantization.md) or keep float activations ("float", exactly
    the ``forward`` path). The prompt is always processed with float activations. No effect on float
    weights.
    """
    if decode_activations not in ("int8", "float"):
        raise ValueError(f"decode_activations must be 'int8' or 'float', got {decode_activations!r}")
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty, chunk_size)
    cfg = model.config
    if len(prompt_ids) == 0:
        raise ValueError("empty prompt: give at least one token")
    ids = model._check_ids(prompt_ids)
    if model.params.lm_head is None:
        raise ValueError("this checkpoint has no lm_head (an embedding model): it cannot generate")
    n, ctx = len(ids), cfg.max_position_embeddings
    if n >= ctx:
        raise ValueError(f"prompt of {n} tokens does not fit the model's context of {ctx} tokens "
                         f"(max_position_embeddings) with room for an answer: shorten it")
    if stop_ids is None:
        eos = model.tokenizer.eos_id if model.tokenizer is not None else cfg.eos_token_id
        stop_ids = () if eos is None else (eos,)
    stats = GenerationStats() if stats is None else stats
    stats.prompt_tokens = n
    model.last_stats = stats
    chunk = chunk_size or cfg.sliding_window or DEFAULT_CHUNK_NO_WINDOW
    return _loop(model, ids, min(max_new_tokens, ctx - n), max_new_tokens, temperature, top_k, top_p,
                 repetition_penalty, np.random.default_rng(seed), frozenset(int(i) for i in stop_ids), chunk, stats,
                 decode_activations)


def _loop(model, ids, budget, max_new_tokens, temperature, top_k, top_p, penalty, rng, stop_ids, chunk, stats,
          activations):
    from .quant.tensor import decode_activations
    params, cfg, dtype = model.params, model.config, model.dtype
    if budget == 0:
        stats.stop_reason = "max_new_tokens"
        return
    cache = KVCache(cfg, max_len=len(ids) + budget, dtype=dtype)
    seen = np.zeros(cfg.vocab_size, dtype=bool)                # tokens in prompt or output (penalty)
    seen[ids] = True

    def step(new_ids):                                         # (T,) -> logits of the last one (V,)
        pos = np.arange(cache.next_position, cache.next_position + len(new_ids), dtype=np.int64)
        h = hidden_states(params, cfg, new_ids, pos, dtype, cache)             # (T, D)
        return linear(h[-1:], params.lm_head)[0]                               # (1, D) -> (V,)

    t0 = time.perf_counter()
    for c in range(0, len(ids), chunk):
        logits = step(ids[c:c + chunk])
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
            with decode_activations(activations):
                logits = step(np.array([token], dtype=np.int64))
        else:
            stats.stop_reason = "max_new_tokens" if budget == max_new_tokens else "context"
        stats.generation_seconds += time.perf_counter() - t0
        yield token


# ------------------------------------------------------------------------------------------------ text
class StopStrings:
    """Cut a stream of text at the first stop string, holding back what could be its beginning.

    ``push(piece)`` returns the text that is safe to show; after a stop string ``stopped`` is True and the
    stop string (and anything after it) is never returned. ``flush()`` releases the held-back text at the
    end. Example, stop "###": push("a #") -> "a ", push("#") -> "", push("#b") -> "" (stopped).
    """

    def __init__(self, stop=None):
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        self.stop = [s for s in stop if s]
        self.pending, self.stopped = "", False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return out
        hold = max((k for s in self.stop for k in range(1, min(len(s), len(self.pending) + 1))
                    if self.pending.endswith(s[:k])), default=0)           # longest tail = a stop's prefix
        out, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def generate_text(model, prompt, stop=None, **kwargs):
    """A string (encoded with BOS, unless a GGUF tokenizer says ``add_bos_token`` false) or a list of ids
    (used as given) -> generator of text pieces.

    ``stop``: a string or list of strings; other keyword arguments as ``generate_ids``. The pieces
    concatenate to ``tokenizer.decode(generated ids)`` cut before the first stop string.
    """
    tok = model.tokenizer
    if isinstance(prompt, str):
        if tok is None:
            raise ValueError(f"this model ({model.source}) has no tokenizer, so a text prompt cannot be encoded: "
                             "add a tokenizer to its folder, or pass token ids to generate_ids()")
        if not prompt:
            raise ValueError("empty prompt: give some text")
        prompt = tok.encode(prompt, bos=getattr(tok, "add_bos_token", True))   # GGUF files may say "no BOS"
    elif tok is None:
        raise ValueError(f"this model ({model.source}) has no tokenizer, so there is no text to yield: use "
                         "mistral_np.generate.generate_ids(model, ids) for token ids")
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


# ------------------------------------------------------------------------------------------------ chat
def chat_prompt_ids(tokenizer, messages: list[dict], fmt: str | None = None) -> list[int]:
    """Messages -> prompt ids: the tokenizer's chat template if it has one (GGUF), else Mistral's format.

    ``fmt``: None (choose), "template", or a Mistral format of chat.FORMATS ("mistral-v1", "mistral-v3").
    """
    from .chat import ChatFormatError, encode_chat, render_chat_template
    if tokenizer is None:
        raise ValueError("this model has no tokenizer, so it cannot chat: add a tokenizer to its folder")
    template = getattr(tokenizer, "chat_template", None)
    if fmt == "template" or (fmt is None and template):
        if not template:
            raise ChatFormatError("this tokenizer has no chat template; use fmt='mistral-v1' or 'mistral-v3'")
        if not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise ChatFormatError("messages must be a non-empty list of {'role': ..., 'content': str} dicts")
        piece = lambda i: "" if i is None else tokenizer.id_to_piece(i)  # noqa: E731
        try:
            text = render_chat_template(template, messages, bos_token=piece(tokenizer.bos_id),
                                        eos_token=piece(tokenizer.eos_id))
        except Exception as e:  # jinja2's TemplateError, or raise_exception() inside the template
            raise ChatFormatError(f"the chat template refused these messages: {e}") from e
        ids = tokenizer.encode(text, special=True)
        bos = tokenizer.bos_id
        if getattr(tokenizer, "add_bos_token", False) and bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids                                  # only if the template did not write it
        return ids
    return encode_chat(tokenizer, messages, fmt)


def generate_chat(model, messages: list[dict], fmt: str | None = None, **kwargs):
    """``model.chat``: encode the conversation (``chat_prompt_ids``) and generate the next answer."""
    return generate_text(model, chat_prompt_ids(model.tokenizer, messages, fmt), **kwargs)
