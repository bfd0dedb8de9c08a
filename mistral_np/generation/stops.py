"""Stop strings in a stream of text pieces.

tests/test_generate.py checks stop strings split across pieces (never shown, held text released at
the end, the earliest of several) and one spanning a token boundary in generated text;
tests/test_serve.py and tests/test_cli_generate.py send stop strings through the server and the
command line.

next: stats.py.
"""

from __future__ import annotations


class StopStrings:
    """Cut a stream of text at the first stop string, holding back what could be its beginning.

    ``push(piece)`` returns the text that is safe to show; after a stop string ``stopped`` is True and the
    stop string (and anything after it) is never returned. ``flush()`` releases the held-back text at the
    end. Example, stop "###": push("a #") -> "a ", push("#") -> "", push("#b") -> "" (stopped).
    """

    def __init__(self, stop=None):
        stop = [stop] if isinstance(stop, str) else list(stop or [])
        self.stop = [s for s in stop if s]
        self.pending, self.stopped = "", False

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return out
        hold = max((k for s in self.stop for k in range(1, min(len(s), len(self.pending) + 1))
                    if self.pending.endswith(s[:k])), default=0)           # longest tail = a stop's prefix
        out, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
