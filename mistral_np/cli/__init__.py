"""The ``mistral-np`` command line: app.py (the parser, the one place errors become exit statuses) and one
module per family of subcommands (checkpoint_commands.py, generate.py, embed.py, corpus.py, serve.py, golden.py,
trace.py, exercise.py); common.py holds what they share (--threads, the help formatter). The console script
calls ``main`` and exits with what it returns; ``python -m mistral_np.cli`` does the same.

next: app.py.
"""

from .app import main

__all__ = ["main"]
