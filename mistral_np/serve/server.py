"""Loading what to serve and running it: ``load_for_serving`` and ``run``.

    model, embedder = load_for_serving(path, preset)     a generator, an embedder, or both (--preset on an LM)
    run(path, host="127.0.0.1", port=8080, slots=4, ...)  blocks until Ctrl-C / SIGTERM

Which routes a model gets: a checkpoint with an LM head generates (chat, completions); one without (e5, SFR,
Linq backbones) is loaded with ``load_embedder`` and embeds; ``--preset NAME`` loads any checkpoint with that
embedding recipe, and it also generates if it has an LM head. The worker (worker.py) starts and warms up before
the port opens, so the first request is not the one that pays for loading the kernels.

Port 0 takes any free port; the line ``listening on http://HOST:PORT`` on stderr says which.

tests/test_serve.py and tests/test_serve_smollm2.py start it as a real process (an LM given the e5 recipe also
embeds; a model without a recipe refuses /v1/embeddings naming the flag), and tests/test_serve_units.py checks
that it listens on 127.0.0.1 unless told otherwise.

next: back to the package docstring (mistral_np/serve/__init__.py).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from .. import __version__
from ..api import load_model
from ..checkpoints import open_checkpoint
from ..embeddings import load_embedder
from ..errors import InvalidArgumentError, MistralNPError
from ..generation.batch import loop_defaults

DEFAULT_CTX = 4096
log = logging.getLogger("mistral_np.serve")


class ServeExtraMissing(MistralNPError):
    """Starlette or uvicorn is not installed."""


def load_for_serving(path, preset: str | None = None):
    """-> (model that generates or None, embedder or None); at least one is not None."""
    if preset is not None:
        embedder = load_embedder(path, preset=preset)
        return (embedder.model if embedder.model.params.lm_head is not None else None), embedder
    ckpt = open_checkpoint(path)                            # headers only: does it have an LM head?
    if "lm_head.weight" in ckpt.tensors or ckpt.config.tie_word_embeddings:
        model = load_model(path)
        if model.tokenizer is None:
            raise InvalidArgumentError(f"{path}: this model has no tokenizer, so it cannot take text: add one to "
                                       "its folder")
        return model, None
    return None, load_embedder(path)


def context_size(model, ctx: int | None) -> int:
    """--ctx, checked against the model: default min(max_position_embeddings, 4096)."""
    limit = model.config.max_position_embeddings
    if ctx is None:
        return min(limit, DEFAULT_CTX)
    if not 2 <= ctx <= limit:
        raise InvalidArgumentError(f"--ctx must be between 2 and the model's max_position_embeddings ({limit}), "
                                   f"got {ctx}")
    return ctx


def listen(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as e:
        raise InvalidArgumentError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run(path, host: str = "127.0.0.1", port: int = 8080, slots: int = 4, max_queue: int = 16,
        api_key: str | None = None, preset: str | None = None, ctx: int | None = None, chunk: int = 128,
        prompt_activations: str | None = None, decode_activations: str | None = None, stacking: str = "auto",
        reuse: bool = True, threads: int | None = None, max_body: int = 4 << 20, name: str | None = None) -> None:
    """Load ``path``, warm up, listen, serve until interrupted. Activations default to ``model.generate``'s."""
    try:
        import uvicorn
        from .app import State, create_app
    except ImportError as e:
        raise ServeExtraMissing(f"the server needs the 'serve' extra ({e.name} is missing): "
                                "pip install 'mistral_np[serve]'") from None
    from .worker import Worker
    for value, flag, low in ((slots, "--slots", 1), (max_queue, "--max-queue", 0), (chunk, "--prefill-chunk", 1),
                             (max_body, "--max-body", 1024)):
        if value < low:
            raise InvalidArgumentError(f"{flag} must be >= {low}, got {value}")
    if api_key is not None and not api_key.strip():
        raise InvalidArgumentError("--api-key must not be empty")
    _log_to_stderr()
    log.info("loading %s", path)
    model, embedder = load_for_serving(path, preset)
    ctx = context_size(model, ctx) if model is not None else None
    defaults = loop_defaults()
    prompt_activations = prompt_activations or defaults["prompt_activations"]
    decode_activations = decode_activations or defaults["decode_activations"]
    worker = Worker(model, embedder, slots=slots, max_queue=max_queue, ctx=ctx or 0, chunk=chunk,
                    prompt_activations=prompt_activations, decode_activations=decode_activations, stacking=stacking,
                    reuse=reuse, threads=threads)
    worker.start()
    name = name or os.path.basename(os.path.normpath(str(path)))
    state = State(name, worker, model, embedder, api_key, max_body,
                  f"mistral_np-{__version__}-{prompt_activations}-{decode_activations}")
    sock = listen(host, port)
    try:
        _describe(worker, model, embedder, ctx, chunk, reuse, prompt_activations, decode_activations)
        bound = sock.getsockname()
        log.info("listening on http://%s:%d%s", host if ":" not in host else f"[{host}]", bound[1],
                 "" if api_key is None else " (API key required)")
        config = uvicorn.Config(create_app(state), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        worker.stop()
        state.tokenizer_thread.shutdown(wait=False)
        sock.close()
        log.info("stopped")


def _describe(worker, model, embedder, ctx, chunk, reuse, prompt_activations, decode_activations) -> None:
    if model is not None:
        cache_mb = sum(s.cache.nbytes for s in worker.slots) / 2**20
        rows = worker.decoder.describe()
        log.info("%d slots x %d positions (KV caches %.0f MiB), prefill chunks of %d (%s), prefix reuse %s, "
                 "activations: %s (prompt) / %s (decode); decode step: %s", len(worker.slots), ctx, cache_mb, chunk,
                 "waiting prompts stacked" if worker.stack_prompts else "one prompt at a time",
                 "on" if reuse else "off", prompt_activations, decode_activations, rows)
    if embedder is not None:
        log.info("embeddings: %s recipe, %d dimensions", embedder.config.name, embedder.dim)


class _Stderr(logging.Handler):
    """Lines to whatever ``sys.stderr`` is when they are written."""

    def emit(self, record) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _log_to_stderr() -> None:
    root = logging.getLogger("mistral_np.serve")
    if not root.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s mistral-np serve: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    logging.getLogger("asyncio").setLevel(logging.ERROR)   # not "socket.send() raised exception" per closed stream
