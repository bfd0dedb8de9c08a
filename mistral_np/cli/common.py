"""What the subcommands share: the ``-t/--threads`` option and the examples section of ``--help``.

tests/test_first_hour.py checks that every option of every command has help and shows its default, that the
commands' help shows examples, and that ``-t`` sets the thread budget.

next: checkpoint_commands.py.
"""

from __future__ import annotations


def add_threads_option(p) -> None:
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="threads for the matrix kernels and BLAS together (default: every core)")


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def apply_threads(args) -> None:
    """Honour ``-t/--threads`` before any model work."""
    n = getattr(args, "threads", None)
    if n is not None:
        from ..threads import set_threads
        set_threads(n)


import argparse  # noqa: E402


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (unless it has none, or the help already says it); examples kept as
    written."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default is None or isinstance(default, bool) or default is argparse.SUPPRESS or "default" in text \
                or not action.option_strings:  # a flag's True/False default says nothing (--no-x: "default: True")
            return text
        return f"{text} (default: {default})"
