"""What goes back: OpenAI's response objects and stream chunks, field for field.

Non-streamed (``chat.completion``, ``text_completion``)::

    {"id": "chatcmpl-…", "object": "chat.completion", "created": 1767225600, "model": NAME,
     "system_fingerprint": "mistral_np-0.1.0", "choices": [{"index": 0, "message": {"role": "assistant",
     "content": TEXT}, "logprobs": null, "finish_reason": "stop" | "length"}],
     "usage": {"prompt_tokens": P, "completion_tokens": C, "total_tokens": P + C,
               "prompt_tokens_details": {"cached_tokens": R}}}

Streamed (``text/event-stream``): one ``data: {json}`` event per chunk, the same ``id`` and ``created`` in all::

    data: {… "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant",
           "content": ""}, "logprobs": null, "finish_reason": null}]}
    data: {… "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": null, "finish_reason": null}]}
    data: {… "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]}
    data: {… "choices": [], "usage": {…}}          only with "stream_options": {"include_usage": true}
    data: [DONE]

``finish_reason`` is null on every chunk but the last one with a choice; with ``include_usage`` every chunk
carries ``"usage": null`` until the usage chunk. ``completion_tokens`` counts every sampled token, a final stop
token (EOS) included; ``cached_tokens`` is the prompt prefix reused from a slot's cache (slots.py).

Checked against the ``openai`` client in tests/test_serve.py, which parses these objects and chunks and checks
them field by field (ids, created, role first, finish_reason, the usage chunk, ``data: [DONE]``, logprobs);
tests/test_serve_units.py checks ``token_bytes``.

next: slots.py.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid

import numpy as np

from ..text.pretokenizers import BYTE_CHARS

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_OF = {c: b for b, c in enumerate(BYTE_CHARS)}   # GPT-2 byte-level alphabet -> byte
DONE = b"data: [DONE]\n\n"


def sse(obj) -> bytes:
    """One server-sent event."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class Meta:
    """What every object of one response shares: id, created, model, system_fingerprint."""

    def __init__(self, kind: str, model: str, fingerprint: str):
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.kind, self.created, self.model, self.fingerprint = kind, int(time.time()), model, fingerprint

    def wrap(self, obj: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint, "choices": choices, **extra}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


# ------------------------------------------------------------------------------------------------ tokens
def token_bytes(tokenizer, i: int) -> bytes:
    """The bytes token ``i`` stands for: ``<0xE2>`` -> b"\\xe2", "▁the" -> b" the", GPT-2's "Ġthe" -> b" the";
    a control token (``</s>``, ``<|im_end|>``) -> its piece."""
    piece = tokenizer.id_to_piece(i)
    if tokenizer.is_control(i):
        return piece.encode("utf-8")
    m = _BYTE_PIECE.fullmatch(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    if tokenizer.sp_model is not None or "\u2581" in piece:
        return piece.replace("\u2581", " ").encode("utf-8")
    if all(c in _BYTE_OF for c in piece):
        return bytes(_BYTE_OF[c] for c in piece)
    return tokenizer.decode([i]).encode("utf-8")


def token_logprobs(tokenizer, token: int, logprobs: np.ndarray, k: int) -> dict:
    """The chosen token and the ``k`` most likely ones, with their log-probabilities (float64 log_softmax of the
    model's logits, before temperature and the other sampling settings)."""
    top = np.argsort(-logprobs, kind="stable")[:k]

    def entry(i):
        b = token_bytes(tokenizer, int(i))
        return {"token": b.decode("utf-8", errors="replace"), "logprob": float(logprobs[i]), "bytes": list(b)}
    return dict(entry(token), top_logprobs=[entry(i) for i in top])


def completion_logprobs(entries: list[dict], offsets: list[int]) -> dict:
    """The legacy completions shape: parallel lists, and the top alternatives as {token: logprob}."""
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


# ------------------------------------------------------------------------------------------------ objects
def chat_chunk(meta: Meta, delta: dict, finish_reason=None, logprobs=None, with_usage=False) -> dict:
    choice = {"index": 0, "delta": delta, "logprobs": None if logprobs is None else {"content": logprobs},
              "finish_reason": finish_reason}
    return meta.wrap("chat.completion.chunk", [choice], **({"usage": None} if with_usage else {}))


def completion_chunk(meta: Meta, text: str, finish_reason=None, logprobs=None, with_usage=False) -> dict:
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
    return meta.wrap("text_completion", [choice], **({"usage": None} if with_usage else {}))


def usage_chunk(meta: Meta, use: dict) -> dict:
    return meta.wrap("chat.completion.chunk" if meta.kind == "chat" else "text_completion", [], usage=use)


def chat_response(meta: Meta, text: str, finish_reason: str, use: dict, logprobs=None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "logprobs": None if logprobs is None else {"content": logprobs}, "finish_reason": finish_reason}
    return meta.wrap("chat.completion", [choice], usage=use)


def completion_response(meta: Meta, text: str, finish_reason: str, use: dict, logprobs=None) -> dict:
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
    return meta.wrap("text_completion", [choice], usage=use)


def embedding_response(model: str, vectors: np.ndarray, as_base64: bool, prompt_tokens: int) -> dict:
    """Rows of float32 vectors; base64: the little-endian float32 bytes of each row, as OpenAI sends them."""
    def encode(v):
        return base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if as_base64 else v.tolist()
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
