"""The ``serve`` subcommand of ``mistral-np`` (registered by app.py): an OpenAI-compatible HTTP server.

    mistral-np serve MODEL [--host 127.0.0.1] [--port 8080] [--slots N] [--max-queue M] [--api-key KEY]
                           [--preset NAME] [--ctx N] [--prefill-chunk N] [...]

The server itself is mistral_np/serve/ (docs/serve.md). Errors in the arguments or the model are reported by
app.py as one line ``mistral-np: error: ...``; the access log and the server's own lines go to stderr.

tests/test_serve.py and tests/test_serve_smollm2.py start it as a real process and talk to it through the
``openai`` client; tests/test_serve_units.py checks its help and its one-line errors.

next: golden.py.
"""

from __future__ import annotations

from .common import HelpFormatter, add_threads_option, examples


def add_serve_commands(sub) -> None:
    """Add ``serve`` to the subparsers of the ``mistral-np`` parser."""
    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat, completions, embeddings)",
                       description="Serve MODEL over HTTP with OpenAI's API: /v1/chat/completions, /v1/completions, "
                                   "/v1/embeddings (embedding models), /v1/models, /tokenize, /detokenize, /health. "
                                   "Up to --slots requests decode together; a chat's next turn reuses its "
                                   "slot's KV cache. Needs the 'serve' extra: pip install 'mistral_np[serve]'. "
                                   "docs/serve.md has the details.",
                       epilog=examples(
                           "mistral-np serve weights/SmolLM2-135M-Instruct.Q4_1.gguf",
                           "mistral-np serve weights/mistral-7b-q4_0 --slots 4 --api-key s3cret --port 8000",
                           "mistral-np serve weights/e5-mistral-7b-instruct            # /v1/embeddings",
                           "mistral-np serve weights/SmolLM2-135M-Instruct.Q4_1.gguf --preset e5-mistral",
                           "curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' "
                           "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 32}'"),
                       formatter_class=HelpFormatter)
    p.add_argument("model", help="model folder or .gguf file (anything load_model or load_embedder accepts)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; then set --api-key)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port, printed at start)")
    p.add_argument("--slots", type=int, default=4,
                   help="requests generating at once, each with its own KV cache; they advance together")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a slot; beyond them: HTTP 503 with Retry-After")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health")
    p.add_argument("--preset", default=None,
                   help="embedding recipe (e5-mistral, sfr-mistral, linq-mistral): serve /v1/embeddings with it")
    p.add_argument("--ctx", type=int, default=None,
                   help="context per slot, prompt and answer together (default: the model's, at most 4096)")
    p.add_argument("--prefill-chunk", type=int, default=128,
                   help="prompt tokens per prefill step, at fixed multiples; prefix reuse works in these units, "
                        "and the text equals model.chat(..., chunk_size=this)")
    p.add_argument("--decode-activations", choices=["int8", "float"], default=None,
                   help="quantized models: int8 activations in decode steps (fast) or float (the exact path) "
                        "(default: as model.generate)")
    p.add_argument("--prompt-activations", choices=["auto", "int8", "float"], default=None,
                   help="quantized models: the same for prompts (default: as model.generate)")
    p.add_argument("--no-prefix-reuse", dest="reuse", action="store_false",
                   help="always prefill the whole prompt (the output is the same; only slower)")
    p.add_argument("--stacked-matmul", choices=["auto", "always", "never"], default="auto",
                   help="decode steps: one matmul for all rows where it gives the one-row bits (auto), always, "
                        "or never")
    p.add_argument("--max-body", type=int, default=4 << 20, help="largest request body, bytes (413 beyond)")
    add_threads_option(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from ..serve.server import run
    run(args.model, host=args.host, port=args.port, slots=args.slots, max_queue=args.max_queue,
        api_key=args.api_key, preset=args.preset, ctx=args.ctx, chunk=args.prefill_chunk,
        prompt_activations=args.prompt_activations, decode_activations=args.decode_activations, stacking=args.stacked_matmul, reuse=args.reuse,
        threads=args.threads, max_body=args.max_body)
    return 0
