"""The ``mistral-np`` command line.

    mistral-np info PATH [--check]      what a checkpoint is, the config values ports get wrong, tensors
    mistral-np generate MODEL "prompt"  stream a continuation (generate.py)
    mistral-np chat MODEL               multi-turn chat (generate.py)
    mistral-np embed MODEL              embeddings of texts, one per line, to .npy (embed.py)
    mistral-np similarity MODEL --query Q DOC ...   documents ranked by cosine (embed.py)
    mistral-np fetch smollm2            a real pretrained model (GGUF) into weights/, checksum verified
    mistral-np quantize SRC DST         int4 (Q4_0) / int8 (Q8_0) copy of a checkpoint, streamed
    mistral-np golden dump / compare    reference activations for other backends (golden.py)
    mistral-np trace MODEL "prompt"     each layer's stages: shapes, statistics, attention, logit lens, KV cache
                                        (trace.py)
    mistral-np exercise check NAME FILE your own RMSNorm, RoPE, mask, cache update or Q4_0 decoder against the
                                        project's checks (exercise.py)

User errors (a bad file, a bad argument: every ``mistral_np.errors.MistralNPError``) print one line
``mistral-np: error: ...`` and exit with the error's status (2 for bad input, 1 for a failed download),
with no traceback; anything else is a bug and keeps its traceback.
This is the only place in the package that decides an exit status.

tests/test_first_hour.py checks the help, the examples and ``--version``, tests/test_cli_generate.py that a user
error is one line with exit status 2 (also in a real process), and tests/test_layout.py that nothing outside
cli/ decides an exit status.

next: common.py.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import MistralNPError
from .common import apply_threads


def build_parser() -> argparse.ArgumentParser:
    from .checkpoint_commands import add_checkpoint_commands
    from .corpus import add_corpus_commands
    from .embed import add_embed_commands
    from .generate import add_generate_commands
    from .golden import add_golden_commands
    from .trace import add_trace_commands
    from .exercise import add_exercise_commands
    from .serve import add_serve_commands
    from .. import __version__
    ap = argparse.ArgumentParser(prog="mistral-np", description="A NumPy reference implementation of Mistral-7B: "
                                 "generate, chat, embed, quantize, and golden values for other backends.",
                                 epilog="Run 'mistral-np COMMAND --help' for a command's options and examples. "
                                        "README.md shows a first session.")
    ap.add_argument("--version", action="version", version=f"mistral-np {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    add_checkpoint_commands(sub)
    add_generate_commands(sub)
    add_embed_commands(sub)
    add_corpus_commands(sub)
    add_golden_commands(sub)
    add_trace_commands(sub)
    add_exercise_commands(sub)
    add_serve_commands(sub)
    return ap


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"mistral-np: warning: {message}\n"


def main(argv=None) -> int:
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    try:
        apply_threads(args)
        return args.func(args)
    except MistralNPError as e:
        print(f"mistral-np: error: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("mistral-np: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
