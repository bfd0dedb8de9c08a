"""The ``generate`` and ``chat`` subcommands of ``mistral-np`` (registered by app.py).

    mistral-np generate MODEL "prompt" [options]   stream the continuation to stdout
    mistral-np generate MODEL - < prompt.txt        the prompt from stdin
    mistral-np chat MODEL [--system TEXT] [options] multi-turn chat; /help lists the commands; works with piped stdin
    mistral-np chat MODEL -m "message"              one answer, then exit

Text goes to stdout; everything else (loading, the chat banner, a one-line timing summary after each answer)
to stderr. MODEL is anything ``mistral_np.load_model`` accepts. Errors in the arguments or the model are
reported by app.py as one line ``mistral-np: error: ...`` (exit 2).

tests/test_cli_generate.py runs both through ``main`` and in a real process, on a tiny model with Mistral v0.1's
tokenizer: the printed text equals ``Model.generate`` and ``Model.chat``, and each user error is one line.

next: embed.py.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from ..errors import ChatFormatError, InvalidArgumentError, MistralNPError
from .common import HelpFormatter, add_threads_option, examples

CHAT_COMMANDS = {
    "/help": "show these commands",
    "/reset": "forget the conversation (the system prompt stays)",
    "/system TEXT": "set the system prompt (empty: none) and start over",
    "/save FILE": "write the conversation as JSON (messages with roles)",
    "/exit": "leave (also Ctrl-D)",
}


def add_generate_commands(sub) -> None:
    """Add ``generate`` and ``chat`` to the subparsers of the ``mistral-np`` parser."""
    p = sub.add_parser("generate", help="continue a prompt, streaming text to stdout",
                       description="Continue a prompt, streaming the text to stdout (timings to stderr).",
                       epilog=examples(
                           'mistral-np generate weights/SmolLM2-135M-Instruct.Q4_1.gguf "Once upon a time" -n 64',
                           "mistral-np generate MODEL - < prompt.txt --temperature 0.8 --seed 1",
                           'mistral-np generate MODEL "def fib(n):" --stop "\\n\\n" -n -1'),
                       formatter_class=HelpFormatter)
    p.add_argument("model", help="model folder or .gguf file (anything load_model accepts)")
    p.add_argument("prompt", nargs="?", default="-",
                   help="prompt text; '-' or absent: read stdin (on a terminal: type, then Ctrl-D)")
    _sampling_options(p, temperature=0.0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="multi-turn chat in the terminal (/help inside lists the commands)",
                       description="Chat with an instruct model: the tokenizer's chat template if it has one, else "
                                   "Mistral's instruct format.",
                       epilog=examples(
                           'mistral-np chat weights/SmolLM2-135M-Instruct.Q4_1.gguf',
                           'mistral-np chat MODEL -m "What is the capital of France?" --temperature 0',
                           'mistral-np chat MODEL --system "Answer in French." -n 128'),
                       formatter_class=HelpFormatter)
    p.add_argument("model", help="model folder or .gguf file (anything load_model accepts)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-m", "--message", default=None,
                   help="answer this one user message and exit (no interactive session)")
    p.add_argument("--format", dest="fmt", default=None, choices=["template", "mistral-v1", "mistral-v3"],
                   help="chat format (default: the tokenizer's chat template, else Mistral's format for it)")
    _sampling_options(p, temperature=0.7)
    p.set_defaults(func=cmd_chat)


def _sampling_options(p, temperature: float) -> None:
    p.add_argument("-n", "--max-new-tokens", type=int, default=256,
                   help="tokens to generate at most; -1: until EOS or the context is full")
    p.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="HF-style, > 1 discourages repeats")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable; not printed)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="prompt tokens per prefill step (default: the sliding window, or 512)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="compute dtype")
    p.add_argument("--prompt-activations", choices=["auto", "int8", "float"], default="auto",
                   help="quantized models: int8 activations for the prompt, float (exactly the forward pass), or "
                        "auto: int8 for weights with at least 2048 inputs and for 4-bit ones on AVX-512 VNNI, "
                        "float for the others")
    p.add_argument("--decode-activations", choices=["int8", "float"], default="int8",
                   help="quantized models: int8 activations in decode steps (fast) or float (exactly the "
                        "forward pass)")
    add_threads_option(p)


def _options(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
                chunk_size=args.chunk_size, decode_activations=args.decode_activations,
                prompt_activations=args.prompt_activations)


def _load(args):
    """Load the model, warm its kernels up, and say so on a terminal ("loading ... (n s)")."""
    from ..api import load_model
    talk = sys.stderr.isatty()
    t0 = time.perf_counter()
    if talk:
        print(f"loading {args.model} ...", end="", file=sys.stderr, flush=True)
    model = load_model(args.model, dtype=np.dtype(args.dtype))
    if model.tokenizer is None:
        raise InvalidArgumentError(f"{args.model}: this model has no tokenizer (tokenizer.json, tokenizer.model or a "
                                   "GGUF vocabulary), so it cannot read or write text")
    # one short generation: the compiled kernels load now, not in the middle of the first answer
    list(model.generate_ids([model.tokenizer.bos_id or 0] * 2, max_new_tokens=2, stop_ids=(),
                            decode_activations=args.decode_activations, prompt_activations=args.prompt_activations))
    if talk:
        print(f" ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
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
    if args.prompt == "-":
        if sys.stdin.isatty():
            print("reading the prompt from the terminal: type it, then Ctrl-D on a new line", file=sys.stderr,
                  flush=True)
        prompt = sys.stdin.read()
    else:
        prompt = args.prompt
    model = _load(args)
    pieces = model.generate(prompt, **_options(args))   # arguments are checked here, before any output
    text = _stream(pieces)
    if not text.endswith("\n"):
        print()
    sys.stdout.flush()
    print(model.last_stats.summary(), file=sys.stderr)
    return 0


def _banner(model, args) -> str:
    c = model.config
    how = "its chat template" if model.tokenizer.chat_template else "Mistral's instruct format"
    commands = ", ".join(k.split()[0] for k in CHAT_COMMANDS)
    return (f"mistral-np chat: {os.path.basename(os.path.normpath(args.model))} ({c.model_type}, "
            f"{c.num_hidden_layers} layers, {c.n_params() / 1e6:.0f} M parameters; prompts use {how})\n"
            f"Type a message and press Enter. Commands: {commands} (or Ctrl-D to leave).")


def _help() -> str:
    width = max(len(k) for k in CHAT_COMMANDS)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in CHAT_COMMANDS.items())


def cmd_chat(args) -> int:
    from ..generation.sampling import check_sampling
    from ..files import atomic_file
    options = _options(args)
    check_sampling(*(options[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                          "repetition_penalty", "chunk_size")))
    if args.message is not None and not args.message.strip():
        raise InvalidArgumentError("--message is empty")
    model = _load(args)
    system_prompt = args.system
    history: list[dict] = []

    def system():
        return [{"role": "system", "content": system_prompt}] if system_prompt else []

    if args.message is not None:                        # one-shot: a single turn, then leave
        _stream(model.chat(system() + [{"role": "user", "content": args.message}], fmt=args.fmt, **options))
        print(flush=True)
        print(model.last_stats.summary(), file=sys.stderr)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(_banner(model, args), file=sys.stderr, flush=True)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            line = ""
        if line == "":                                  # end of input (Ctrl-D)
            if interactive:
                print()
            return 0
        line = line.rstrip("\n")
        if line.startswith("/"):
            command, _, rest = line.strip().partition(" ")
            if command == "/exit":
                return 0
            if command == "/help":
                print(_help(), file=sys.stderr)
            elif command == "/reset":
                history.clear()
                print("(history cleared)", file=sys.stderr)
            elif command == "/system":
                system_prompt = rest.strip() or None
                history.clear()
                print(f"(system prompt {'set' if system_prompt else 'removed'}; history cleared)", file=sys.stderr)
            elif command == "/save":
                if not rest.strip():
                    print("usage: /save FILE", file=sys.stderr)
                    continue
                try:
                    with atomic_file(rest.strip(), "w") as f:
                        json.dump(system() + history, f, indent=1, ensure_ascii=False)
                    print(f"(saved {len(history)} messages to {rest.strip()})", file=sys.stderr)
                except MistralNPError as e:
                    print(f"mistral-np: error: {e}", file=sys.stderr)
            else:
                print(f"unknown command {command}; /help lists the commands (a message starting with '/' needs "
                      "a space first)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        messages = system() + history + [{"role": "user", "content": line.lstrip()}]
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
            history += [{"role": "user", "content": line.lstrip()}, {"role": "assistant", "content": answer}]
        else:
            print("(empty answer; this turn is not kept)", file=sys.stderr)
