"""The OpenAI request bodies this server accepts, checked field by field before any model work.

    parse_chat(body)        -> ChatRequest          POST /v1/chat/completions
    parse_completion(body)  -> CompletionRequest    POST /v1/completions
    parse_embedding(body)   -> EmbeddingRequest     POST /v1/embeddings
    parse_tokenize(body), parse_detokenize(body)    POST /tokenize, /detokenize (vLLM's shapes)

Every refusal is a ``RequestError`` (an ``InvalidArgumentError``) that names the field (``param``), which app.py
turns into HTTP 400 with OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``. The rules:

* a field this server does not know is refused (``tools``, ``response_format: json_object``...), so a client
  never believes a setting was honoured when it was not; OpenAI fields whose value changes nothing
  (``n: 1``, ``frequency_penalty: 0``, ``user``, ``logit_bias: {}``, ``echo: false``) are accepted;
* types are strict (``"temperature": "0.5"`` is refused, JSON's ``true`` is not an integer) and ranges are
  OpenAI's (temperature 0..2, top_p in (0, 1], top_logprobs 0..20, completions' logprobs 0..5);
* extensions, all settings of ``model.generate``: ``top_k``, ``repetition_penalty``; embeddings take
  ``instruction`` and ``prompt_name`` (the embedder's query prompts).

Defaults are OpenAI's: temperature 1, top_p 1, chat ``max_tokens`` until a stop or the end of the context,
completions ``max_tokens`` 16.

tests/test_serve_units.py checks the rules field by field (each refusal names its field), and
tests/test_serve.py that the running server answers bad inputs with 400 naming the field.

next: responses.py (what goes back).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from ..errors import InvalidArgumentError

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 16


class RequestError(InvalidArgumentError):
    """A request the server refuses: HTTP ``status`` with an OpenAI-style error body naming ``param``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Sampling:
    """How to pick the tokens: ``model.generate``'s settings plus OpenAI's stop strings, bias and logprobs."""
    max_tokens: int | None = None          # None: until a stop or the end of the context
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None            # None: none; k: the chosen token's logprob and the k most likely


@dataclass
class ChatRequest:
    messages: list[dict]                   # [{"role": system|user|assistant, "content": str}]
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


@dataclass
class CompletionRequest:
    prompt: str | list[int]                # a text (encoded with BOS as model.generate does) or token ids as given
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


@dataclass
class EmbeddingRequest:
    texts: list[str]
    base64: bool = False
    dimensions: int | None = None
    instruction: str | None = None
    prompt_name: str | None = None


def parse_json(raw: bytes) -> dict:
    """The body as a JSON object (no NaN/Infinity, no duplicate keys)."""
    def no_constant(name):
        raise RequestError(f"the body is not valid JSON: {name} is not a JSON number")

    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise RequestError(f"the body is not valid JSON: duplicate key {k!r:.40}", k)
            out[k] = v
        return out
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=no_constant, object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


# ------------------------------------------------------------------------------------------------ field checks
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _integer(body, name, lo=None, hi=None, default=None):
    v = body.get(name)
    if v is None:
        return default
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" between {lo} and {hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
        raise RequestError(f"'{name}' must be an integer{rng}, got {json.dumps(v)[:40]}", name)
    return v


def _number(body, name, ok, what, default):
    v = body.get(name)
    if v is None:
        return default
    if not _is_number(v) or not ok(v):
        raise RequestError(f"'{name}' must be a number {what}, got {json.dumps(v)[:40]}", name)
    return float(v)


def _boolean(body, name, default=False):
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise RequestError(f"'{name}' must be true or false, got {json.dumps(v)[:40]}", name)
    return v


def _string(body, name, default=None):
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, str):
        raise RequestError(f"'{name}' must be a string, got {json.dumps(v)[:40]}", name)
    return v


def _only(body, allowed, neutral=None):
    """Refuse unknown fields, and known ones set to anything but their do-nothing value."""
    for name in body:
        if name not in allowed and name not in (neutral or {}):
            raise RequestError(f"unknown or unsupported field '{name}'", name)
    for name, ok in (neutral or {}).items():
        if name in body and body[name] is not None and not ok(body[name]):
            raise RequestError(f"'{name}' = {json.dumps(body[name])[:40]} is not supported by this server", name)


def _n(v) -> bool:
    if not _is_int(v):
        raise RequestError(f"'n' must be an integer, got {json.dumps(v)[:40]}", "n")
    if v != 1:
        raise RequestError(f"n = {v}: this server returns one choice per request (n = 1); send {v} requests "
                           "(with different seeds) instead", "n")
    return True


NEUTRAL = {"n": _n, "frequency_penalty": lambda v: _is_number(v) and v == 0,
           "presence_penalty": lambda v: _is_number(v) and v == 0, "user": lambda v: isinstance(v, str)}
SAMPLING_FIELDS = {"model", "max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop",
                   "stream", "stream_options", "logit_bias"}


def _sampling(body, default_max_tokens, vocab_size) -> Sampling:
    s = Sampling()
    _string(body, "model")
    s.max_tokens = _integer(body, "max_tokens", 1, default=default_max_tokens)
    if "max_completion_tokens" in body:
        mct = _integer(body, "max_completion_tokens", 1)
        if body.get("max_tokens") is not None and mct is not None and mct != s.max_tokens:
            raise RequestError("give 'max_tokens' or 'max_completion_tokens', not both with different values",
                               "max_completion_tokens")
        s.max_tokens = s.max_tokens if mct is None else mct
    s.temperature = _number(body, "temperature", lambda v: 0 <= v <= 2, "between 0 and 2", 1.0)
    s.top_p = _number(body, "top_p", lambda v: 0 < v <= 1, "in (0, 1]", 1.0)
    s.top_k = _integer(body, "top_k", 0, default=0)
    s.repetition_penalty = _number(body, "repetition_penalty", lambda v: v > 0, "> 0", 1.0)
    s.seed = _integer(body, "seed", 0)
    stop = body.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not 1 <= len(stop) <= MAX_STOPS or \
                not all(isinstance(x, str) and x for x in stop):
            raise RequestError(f"'stop' must be a non-empty string or a list of 1 to {MAX_STOPS} non-empty strings",
                               "stop")
        s.stop = list(stop)
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise RequestError("'logit_bias' must be an object mapping token ids to numbers", "logit_bias")
        for k, v in bias.items():
            if not (k.isdigit() and int(k) < vocab_size) or not _is_number(v) or not -100 <= v <= 100:
                raise RequestError(f"'logit_bias' entry {json.dumps(k)}: {json.dumps(v)[:20]}: keys must be token ids "
                                   f"(0..{vocab_size - 1}) and values numbers between -100 and 100", "logit_bias")
            s.logit_bias[int(k)] = float(v)
    return s


def _stream(body) -> tuple[bool, bool]:
    stream = _boolean(body, "stream")
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not stream:
        raise RequestError("'stream_options' is only allowed with \"stream\": true", "stream_options")
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise RequestError("'stream_options' must be an object with the one field 'include_usage'",
                           "stream_options")
    return stream, _boolean(opts, "include_usage")


# ------------------------------------------------------------------------------------------------ endpoints
def parse_chat(body: dict, vocab_size: int) -> ChatRequest:
    _only(body, SAMPLING_FIELDS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}, NEUTRAL)
    sampling = _sampling(body, None, vocab_size)
    if _boolean(body, "logprobs"):
        sampling.logprobs = _integer(body, "top_logprobs", 0, 20, default=0)
    elif body.get("top_logprobs") is not None:
        raise RequestError("'top_logprobs' needs \"logprobs\": true", "top_logprobs")
    stream, usage = _stream(body)
    return ChatRequest(_messages(body.get("messages")), sampling, stream, usage)


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    out = []
    for k, m in enumerate(messages):
        where = f"messages[{k}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with 'role' and 'content'", where)
        for name in m:
            if name not in ("role", "content", "name"):
                raise RequestError(f"{where}: unknown or unsupported field '{name}'", f"{where}.{name}")
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {json.dumps(role)[:40]}",
                               f"{where}.role")
        out.append({"role": ROLES[role], "content": _content(m.get("content"), f"{where}.content")})
    return out


def _content(content, where) -> str:
    """A string, or a list of {"type": "text", "text": str} parts (joined with newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for k, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                    and set(part) == {"type", "text"}):
                raise RequestError(f"{where}[{k}] must be {{\"type\": \"text\", \"text\": str}} (this server reads "
                                   "text only)", f"{where}[{k}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(f"{where} must be a string or a list of text parts", where)


def parse_completion(body: dict, vocab_size: int) -> CompletionRequest:
    neutral = dict(NEUTRAL, echo=lambda v: v is False, suffix=lambda v: v == "", best_of=lambda v: v == 1)
    _only(body, SAMPLING_FIELDS | {"prompt", "logprobs"}, neutral)
    sampling = _sampling(body, 16, vocab_size)
    sampling.logprobs = _integer(body, "logprobs", 0, 5)
    stream, usage = _stream(body)
    return CompletionRequest(_prompt(body.get("prompt"), vocab_size), sampling, stream, usage)


def _prompt(prompt, vocab_size: int):
    """A string, or token ids; a list holding exactly one of those is that one (n = 1: one prompt)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("'prompt' is empty: give some text", "prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise RequestError(f"'prompt' token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})", "prompt")
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise RequestError(f"'prompt' holds {len(prompt)} prompts: this server takes one prompt per request (n = 1)",
                           "prompt")
    raise RequestError("'prompt' must be a non-empty string or a list of token ids (one prompt per request)",
                       "prompt")


def parse_embedding(body: dict, dim: int) -> EmbeddingRequest:
    _only(body, {"model", "input", "encoding_format", "dimensions", "instruction", "prompt_name"},
          {"user": NEUTRAL["user"]})
    _string(body, "model")
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError("'input' must be a string or a non-empty list of strings (token ids are not accepted: "
                           "the embedder's recipe adds its own prompt and special tokens)", "input")
    if len(texts) > 2048:
        raise RequestError(f"'input' has {len(texts)} texts; at most 2048 per request", "input")
    fmt = _string(body, "encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestError(f"'encoding_format' must be \"float\" or \"base64\", got {json.dumps(fmt)[:40]}",
                           "encoding_format")
    dims = _integer(body, "dimensions", 1)
    if dims is not None and dims != dim:
        raise RequestError(f"'dimensions' = {dims}: this embedder's recipe was not trained for shortened vectors "
                           f"(no Matryoshka training), so only its full size {dim} is offered", "dimensions")
    instruction, prompt_name = _string(body, "instruction"), _string(body, "prompt_name")
    if instruction is not None and prompt_name is not None:
        raise RequestError("give 'instruction' or 'prompt_name', not both", "prompt_name")
    return EmbeddingRequest(texts, fmt == "base64", dims, instruction, prompt_name)


def parse_tokenize(body: dict) -> dict:
    """{"prompt": str} or {"messages": [...]}, and "add_special_tokens" (default true)."""
    _only(body, {"model", "prompt", "messages", "add_special_tokens"})
    _string(body, "model")
    special = _boolean(body, "add_special_tokens", True)
    if ("prompt" in body) == ("messages" in body):
        raise RequestError("give 'prompt' (a string) or 'messages' (a chat), one of them", "prompt")
    if "messages" in body:
        return {"messages": _messages(body["messages"]), "add_special_tokens": special}
    return {"prompt": _string(body, "prompt", ""), "add_special_tokens": special}


def parse_detokenize(body: dict, vocab_size: int) -> list[int]:
    _only(body, {"model", "tokens"})
    _string(body, "model")
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(_is_int(t) and 0 <= t < vocab_size for t in tokens):
        raise RequestError(f"'tokens' must be a list of token ids (0..{vocab_size - 1})", "tokens")
    return tokens
