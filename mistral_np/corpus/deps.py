"""The corpus job's optional dependency, pyarrow, imported when first needed with a message that names the extra.

Parquet is the output format of every run (and one of the input formats), so ``embed-corpus`` needs pyarrow
even on the local engine; Ray is needed only by ``--engine ray`` and is imported by ray_engine.py alone.
Both come with ``pip install 'mistral_np[corpus]'``.

tests/test_corpus.py runs every Parquet read and write through ``require_pyarrow`` and checks statically that
no module but ray_engine.py imports Ray (and that one inside a function); no test takes pyarrow away, so the
message itself is checked by none.

next: inputs.py.
"""

from __future__ import annotations

from ..errors import MistralNPError

EXTRA = "pip install 'mistral_np[corpus]'"


class MissingDependencyError(MistralNPError):
    """An optional package that a requested feature needs is not installed; the message says how to get it."""


def require_pyarrow():
    """(pyarrow, pyarrow.parquet), or a MissingDependencyError naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(f"embed-corpus reads and writes Parquet with pyarrow, which is not installed: "
                                     f"{EXTRA}") from None
    return pyarrow, pyarrow.parquet
