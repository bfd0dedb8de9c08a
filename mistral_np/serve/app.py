"""The ASGI application (Starlette): routes, API key, body limit, streaming, disconnects, the access log.

    GET  /health                 {"status": "ok", "slots", "busy", "queued", ...}   (never needs the key)
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat (the tokenizer's chat template, else Mistral's format: text/chat.py)
    POST /v1/completions         a text prompt (BOS as model.generate adds it) or token ids (used as given)
    POST /v1/embeddings          when the model is an embedder (or --preset names a recipe)
    POST /tokenize, /detokenize  text or messages -> ids; ids -> text

The event loop never runs the model: a request is checked (protocol.py), tokenized on one tokenizer thread
(with its own copy of the tokenizer, so it never shares one with the worker), turned into a job and handed to
the worker (worker.py); the handler then waits on the job's asyncio queue. A client that goes away cancels
its job: a stream notices when its connection closes (Starlette listens for ``http.disconnect``), a plain
request through a task that waits for the same message. Every error is JSON in OpenAI's shape; user input
never causes a 500.

Checked through the real ``openai`` client in tests/test_serve.py and tests/test_serve_smollm2.py: the
routes, streaming, the API key (401), bad inputs (400 naming the field), the queue limit (503 with
Retry-After), a disconnect freeing its slot, and the access log.

next: server.py (loading the model and running uvicorn).
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import InvalidArgumentError, MistralNPError
from ..text.chat import chat_prompt_ids
from . import protocol, responses
from .jobs import EmbedJob, GenerateJob
from .protocol import RequestError

log = logging.getLogger("mistral_np.serve")
access_log = logging.getLogger("mistral_np.serve.access")
RETRY_AFTER_S = 2


@dataclass
class State:
    """What the handlers share. ``model``/``embedder`` are only read here (their ``config``s); the worker runs them."""
    name: str
    worker: object
    model: object = None                 # a generating Model, or None
    embedder: object = None              # an Embedder, or None
    api_key: str | None = None
    max_body: int = 4 << 20
    fingerprint: str = "mistral_np"
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        source = self.model if self.model is not None else self.embedder.model
        self.tokenizer = copy.deepcopy(source.tokenizer)        # the event loop's own copy (see the docstring)
        self.vocab_size = source.config.vocab_size
        self.tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="mistral-np-tokenizer")
        if self.model is not None:
            tok, cfg = self.model.tokenizer, self.model.config
            eos = tok.eos_id if tok is not None else cfg.eos_token_id
            self.stop_ids = frozenset(() if eos is None else (eos,))

    async def tokenize(self, fn, param: str):
        """``fn(tokenizer)`` on the tokenizer thread; its refusals become 400 naming ``param``."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.tokenizer_thread, fn, self.tokenizer)
        except MistralNPError as e:
            raise RequestError(f"'{param}': {e}", param) from None


# ------------------------------------------------------------------------------------------------ routes
async def health(request):
    s = request.app.state.serve
    return JSONResponse({"status": "ok", "model": s.name, **s.worker.counts()})


async def models(request):
    s = request.app.state.serve
    return JSONResponse({"object": "list", "data": [{"id": s.name, "object": "model", "created": s.created,
                                                     "owned_by": "mistral_np"}]})


async def chat_completions(request):
    s = _generating(request)
    req = protocol.parse_chat(await read_json(request, s.max_body), s.vocab_size)
    ids = await s.tokenize(lambda tok: chat_prompt_ids(tok, req.messages), "messages")
    return await _generate(request, s, "chat", ids, req, "messages")


async def completions(request):
    s = _generating(request)
    req = protocol.parse_completion(await read_json(request, s.max_body), s.vocab_size)
    prompt = req.prompt
    if isinstance(prompt, str):
        ids = await s.tokenize(lambda tok: tok.encode(prompt, bos=tok.add_bos_token), "prompt")
    else:
        ids = prompt
    return await _generate(request, s, "completion", ids, req, "prompt")


async def embeddings(request):
    s = request.app.state.serve
    if s.embedder is None:
        raise RequestError(f"{s.name} is not an embedding model, so /v1/embeddings is not served: start the server "
                           "with --preset NAME to use it with an embedding recipe", "model", status=404,
                           code="model_not_supported")
    req = protocol.parse_embedding(await read_json(request, s.max_body), s.embedder.dim)
    try:
        s.embedder.prompt(req.instruction, req.prompt_name)      # a pure lookup: checks the prompt name now
    except InvalidArgumentError as e:
        param = "prompt_name" if req.prompt_name is not None else "instruction"
        raise RequestError(f"'{param}': {e}", param) from None
    queue, emit = _channel()
    job = EmbedJob(emit, req.texts, req.instruction, req.prompt_name)
    request.state.job = job
    _submit(s, job)
    listener = Listener(request, s, job, queue)
    try:
        ev = await listener.next()
    finally:
        listener.close()
    if ev is None:
        return Response(status_code=499)
    if ev[0] == "error":
        return _error_response(ev[1], ev[2])
    return JSONResponse(responses.embedding_response(s.name, ev[1], req.base64, ev[2]))


async def tokenize(request):
    s = request.app.state.serve
    req = protocol.parse_tokenize(await read_json(request, s.max_body))
    if "messages" in req:
        ids = await s.tokenize(lambda tok: chat_prompt_ids(tok, req["messages"]), "messages")
    else:
        special = req["add_special_tokens"]
        ids = await s.tokenize(lambda tok: tok.encode(req["prompt"], bos=special and tok.add_bos_token), "prompt")
    ctx = s.worker.ctx if s.model is not None else s.embedder.max_length
    return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": ctx})


async def detokenize(request):
    s = request.app.state.serve
    ids = protocol.parse_detokenize(await read_json(request, s.max_body), s.vocab_size)
    text = await s.tokenize(lambda tok: tok.decode(ids), "tokens")
    return JSONResponse({"prompt": text})


# ------------------------------------------------------------------------------------------------ generation
def _generating(request) -> State:
    s = request.app.state.serve
    if s.model is None:
        raise RequestError(f"{s.name} is an embedding model (no LM head): it cannot generate; use /v1/embeddings",
                           "model", status=404, code="model_not_supported")
    return s


async def _generate(request, s: State, kind: str, ids: list[int], req, param: str):
    n, ctx = len(ids), s.worker.ctx
    if n >= ctx:
        raise RequestError(f"'{param}': the prompt has {n} tokens but the context holds {ctx} (the server's --ctx), "
                           "with room for at least one new token: shorten it", param, code="context_length_exceeded")
    budget = ctx - n if req.sampling.max_tokens is None else min(req.sampling.max_tokens, ctx - n)
    queue, emit = _channel()
    job = GenerateJob(emit, ids, req.sampling, budget, s.stop_ids)
    request.state.job = job
    _submit(s, job)
    meta = responses.Meta(kind, s.name, s.fingerprint)
    if req.stream:
        return StreamingResponse(_stream(s, meta, job, queue, req.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    text, entries, offsets = [], [], []
    listener = Listener(request, s, job, queue)
    try:
        while True:
            ev = await listener.next()
            if ev is None:
                return Response(status_code=499)                # nobody is there to read it
            if ev[0] == "token":
                if ev[2] is not None:
                    entries.append(ev[2])
                    offsets.append(sum(map(len, text)))
                text.append(ev[1])
            elif ev[0] == "error":
                return _error_response(ev[1], ev[2])
            else:
                _, reason, use = ev
                break
    finally:
        listener.close()
    lp = None if req.sampling.logprobs is None else \
        (entries if kind == "chat" else responses.completion_logprobs(entries, offsets))
    build = responses.chat_response if kind == "chat" else responses.completion_response
    return JSONResponse(build(meta, "".join(text), reason, use, lp))


async def _stream(s: State, meta, job, queue, include_usage: bool):
    """The events of ``job`` as server-sent events; closing this generator early (the client left) cancels it."""
    chat, ended, length = meta.kind == "chat", False, 0
    try:
        if chat:
            yield responses.sse(responses.chat_chunk(meta, {"role": "assistant", "content": ""},
                                                     with_usage=include_usage))
        while True:
            ev = await queue.get()
            if ev[0] == "token":
                _, piece, entry = ev
                if not piece and entry is None:
                    continue
                if chat:
                    chunk = responses.chat_chunk(meta, {"content": piece}, None, None if entry is None else [entry],
                                                 include_usage)
                else:
                    lp = None if entry is None else responses.completion_logprobs([entry], [length])
                    chunk = responses.completion_chunk(meta, piece, None, lp, include_usage)
                length += len(piece)
                yield responses.sse(chunk)
            elif ev[0] == "end":
                ended = True
                _, reason, use = ev
                last = responses.chat_chunk(meta, {}, reason, with_usage=include_usage) if chat else \
                    responses.completion_chunk(meta, "", reason, with_usage=include_usage)
                yield responses.sse(last)
                if include_usage:
                    yield responses.sse(responses.usage_chunk(meta, use))
                yield responses.DONE
                return
            else:
                ended = True
                yield responses.sse(responses.error_body(ev[2], "server_error"))
                yield responses.DONE
                return
    finally:
        if not ended:
            s.worker.cancel(job)


def _channel():
    """An asyncio queue and the thread-safe function the worker puts events on it with."""
    queue, loop = asyncio.Queue(), asyncio.get_running_loop()
    return queue, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev)


def _submit(s: State, job) -> None:
    if not s.worker.submit(job):
        c = s.worker.counts()
        raise RequestError(f"the server is busy ({c['busy']} of {c['slots']} slots running, {c['queued']} requests "
                           f"waiting, at most {c['max_queue']}): retry in a moment", None, status=503,
                           kind="server_error", code="server_busy")


class Listener:
    """A plain (non-streamed) request's view of its job: ``await next()`` -> the next event, or None once the
    client has disconnected (the job is then cancelled). ``close()`` when done."""

    def __init__(self, request, s: State, job, queue):
        self.s, self.job, self.queue = s, job, queue
        self.gone = asyncio.ensure_future(_disconnected(request))

    async def next(self):
        get = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({get, self.gone}, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        self.s.worker.cancel(self.job)
        return None

    def close(self) -> None:
        self.gone.cancel()


async def _disconnected(request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ------------------------------------------------------------------------------------------------ plumbing
async def read_json(request, limit: int) -> dict:
    """The body as a JSON object; more than ``limit`` bytes -> 413."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit)
    size, parts = 0, []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return protocol.parse_json(b"".join(parts))


def _too_large(limit: int) -> RequestError:
    return RequestError(f"the request body is larger than this server's limit of {limit} bytes (--max-body)",
                        None, status=413, code="request_too_large")


def _error_response(status: int, message: str, kind: str | None = None, param=None, code=None, headers=None):
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(responses.error_body(message, kind, param, code), status_code=status, headers=headers)


async def _request_error(request, e: RequestError):
    headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
    return _error_response(e.status, str(e), e.kind, e.param, e.code, headers)


async def _http_error(request, e: HTTPException):
    message = "no such route" if e.status_code == 404 else "method not allowed" if e.status_code == 405 else \
        str(e.detail)
    return _error_response(e.status_code, f"{message}: {request.method} {request.url.path}", headers=e.headers)


async def _internal_error(request, e: Exception):
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _error_response(500, "internal server error (see the server log)")


class ApiKey:
    """ASGI middleware: every route but /health needs ``Authorization: Bearer KEY`` (401 otherwise)."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key.encode()):
            return await self.app(scope, receive, send)
        message = "missing API key: send 'Authorization: Bearer KEY'" if not given else "invalid API key"
        response = JSONResponse(responses.error_body(message, "invalid_request_error", None, "invalid_api_key"),
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class AccessLog:
    """ASGI middleware: one line per request, after its response has been sent in full."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [0]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            job = scope.get("state", {}).get("job")
            client = scope.get("client") or ("-", 0)
            line = f'{client[0]} "{scope["method"]} {scope["path"]}" {status[0] or "-"} ' \
                   f"{time.perf_counter() - t0:.3f}s"
            access_log.info(line + (_job_line(job) if job is not None else ""))


def _job_line(job) -> str:
    if isinstance(job, EmbedJob):
        return f" texts={len(job.texts)} tokens={job.prompt_tokens}"
    parts = [f"prompt={len(job.prompt)}", f"cached={job.cached_tokens}", f"completion={job.generated}"]
    if job.t_start is not None:
        parts.append(f"queue={job.t_start - job.t_submit:.3f}s")
    if job.t_first is not None:
        parts.append(f"ttft={job.t_first - job.t_submit:.3f}s")
        if job.t_end is not None and job.generated > 1 and job.t_end > job.t_first:
            parts.append(f"{(job.generated - 1) / (job.t_end - job.t_first):.1f}tok/s")
    parts.append(f"finish={job.finish_reason or ('cancelled' if job.cancelled else '-')}")
    return " " + " ".join(parts)


def create_app(state: State):
    """The Starlette app for ``state``, wrapped in the API-key check and the access log."""
    routes = [Route("/health", health, methods=["GET"]), Route("/v1/models", models, methods=["GET"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/embeddings", embeddings, methods=["POST"]),
              Route("/tokenize", tokenize, methods=["POST"]), Route("/detokenize", detokenize, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={RequestError: _request_error, HTTPException: _http_error,
                                                       Exception: _internal_error})
    app.state.serve = state
    return AccessLog(ApiKey(app, state.api_key))
