"""The ``generate`` and ``chat`` subcommands of ``mistral-np`` (registered by cli.build_parser).

    mistral-np generate MODEL "prompt" [options]   stream the continuation to stdout
    mistral-np generate MODEL - < prompt.txt        the prompt from stdin
    mistral-np chat MODEL [--system TEXT] [options] multi-turn chat; /reset clears the history,
                                                     /exit or Ctrl-D leaves; works with piped stdin

Options: --max-new-tokens --temperature --top-k --top-p --repetition-penalty --seed --stop (repeatable)
--chunk-size --dtype. A one-line timing summary goes to stderr after each answer, so stdout holds only text.
MODEL is anything ``mistral_np.load_model`` accepts. Errors in the arguments or the model are reported
by app.py as one line ``mistral-np: error: ...`` (exit 2).
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import ChatFormatError, InvalidArgumentError, MistralNPError


def add_generate_commands(sub) -> None:
    """Add ``generate`` and ``chat`` to the subparsers of the ``mistral-np`` parser."""
    p = sub.add_parser("generate", help="continue a prompt, streaming text to stdout")
    p.add_argument("model", help="model folder or file (anything load_model accepts)")
    p.add_argument("prompt", nargs="?", default="-", help="prompt text; '-' or absent: read stdin")
    _sampling_options(p, temperature=0.0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat (/reset clears history, /exit or Ctrl-D leaves)")
    p.add_argument("model", help="model folder or file (anything load_model accepts)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-m", "--message", default=None,
                   help="answer this one user message and exit (no interactive session)")
    p.add_argument("--format", dest="fmt", default=None, choices=["template", "mistral-v1", "mistral-v3"],
                   help="chat format (default: the tokenizer's chat template, else Mistral's format for it)")
    _sampling_options(p, temperature=0.7)
    p.set_defaults(func=cmd_chat)


def _sampling_options(p, temperature: float) -> None:
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=temperature, help=f"0 = greedy (default {temperature})")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="HF-style, > 1 discourages repeats")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable; not printed)")
    p.add_argument("--chunk-size", type=int, default=None, help="prompt tokens per prefill step (default W)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--decode-activations", choices=["int8", "float"], default="int8",
                   help="quantized models: int8 activations in decode steps (fast, default) or float (exact)")


def _options(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
                chunk_size=args.chunk_size, decode_activations=args.decode_activations)


def _load(args):
    from ..api import load_model
    model = load_model(args.model, dtype=np.dtype(args.dtype))
    if model.tokenizer is None:
        raise InvalidArgumentError(f"{args.model}: this model has no tokenizer (tokenizer.json or tokenizer.model), "
                         "so it cannot read or write text")
    return model


def _stream(pieces) -> str:
    """Print text pieces as they come; return the whole text."""
    text = []
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    return "".join(text)


def cmd_generate(args) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = _load(args)
    pieces = model.generate(prompt, **_options(args))   # arguments are checked here, before any output
    text = _stream(pieces)
    if not text.endswith("\n"):
        print()
    sys.stdout.flush()
    print(model.last_stats.summary(), file=sys.stderr)
    return 0


def cmd_chat(args) -> int:
    from ..generation.sampling import check_sampling
    options = _options(args)
    check_sampling(*(options[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                          "repetition_penalty", "chunk_size")))
    model = _load(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    if args.message is not None:                        # one-shot: a single turn, then leave
        if not args.message.strip():
            raise InvalidArgumentError("--message is empty")
        _stream(model.chat(system + [{"role": "user", "content": args.message}], fmt=args.fmt, **options))
        print(flush=True)
        print(model.last_stats.summary(), file=sys.stderr)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            line = ""
        if line == "" or line.strip() == "/exit":      # "" = end of input (Ctrl-D)
            if interactive:
                print()
            return 0
        line = line.rstrip("\n")
        if line.strip() == "/reset":
            history.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        messages = system + history + [{"role": "user", "content": line}]
        try:
            answer = _stream(model.chat(messages, fmt=args.fmt, **options))
        except KeyboardInterrupt:
            print("\n(interrupted; this turn is not kept)", file=sys.stderr)
            continue
        except ChatFormatError:
            raise                                       # the model cannot chat this way: leave (exit 2)
        except MistralNPError as e:                     # e.g. the conversation outgrew the context
            print(f"mistral-np: error: {e} (this turn is not kept; /reset starts over)", file=sys.stderr)
            continue
        print(flush=True)
        print(model.last_stats.summary(), file=sys.stderr)
        if answer.strip():
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]
        else:
            print("(empty answer; this turn is not kept)", file=sys.stderr)
