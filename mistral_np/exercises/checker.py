"""The checker: runs an exercise's checks against a learner's function and says in plain words what is wrong.

An ``Exercise`` names the function to write, its exact signature, the project's own function that solves it,
and a list of ``Check``s, each a small case modelled on the project's tests (a worked example from a
docstring, a property, an edge). A check calls the learner's function through ``expect``, which compares the
result with the solution's on the same inputs and, when they differ, raises ``Wrong`` with a message that
says

* the shape, when the shape is wrong (each axis named: token, head, element, ...);
* where, when values are wrong: how many, and the first one with its meaning (token 1 at position 1, head 0,
  element 5; query at position 7 and key at position 4; row 0, block 0, the high nibble of byte 2);
* what the result looks like, when it equals a known mistake computed on the same inputs ("this is exactly
  what the interleaved layout gives").

``run`` collects one ``Outcome`` per check into a ``Result``; ``Result.format()`` is what
``mistral-np exercise check`` prints. Nothing here raises for a wrong answer: a wrong answer is a result.
Errors in the learner's file itself (it does not exist, does not import, lacks the function) raise the
project's errors (mistral_np.errors), which the command line turns into one line and exit status 2.
Checked by tests/test_exercises.py: every solution passes, other correct ways pass, planted mistakes are named.

next: rmsnorm.py (the first exercise; then rope.py, window_mask.py, rolling_cache.py, q4_0.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import InvalidArgumentError, PathNotFoundError

WIDTH = 80
NOT_WRITTEN = "not written yet: your function raised NotImplementedError"


class Wrong(Exception):
    """A check failed; the message says what is wrong, in plain words."""


@dataclass
class Check:
    title: str
    run: Callable[[Callable], None]      # calls the learner's function; raises Wrong when it is wrong


@dataclass
class Exercise:
    name: str                 # what the command line calls it: "rope"
    title: str                # "RoPE, half-split layout"
    function: str             # the function the learner's file must define: "apply_rope"
    signature: str            # "apply_rope(x, cos, sin)"
    solution: str             # the project's own function: "mistral_np/model/rope.py:apply_rope"
    solve: Callable           # ... itself
    task: str                 # what to compute, shapes in and out (the template's docstring)
    checks: list[Check]
    aliases: tuple = ()       # other names accepted for the function (the project's own name)
    imports: str = "import numpy as np"

    def template(self) -> str:
        """A file to start from: the signature, what to compute, and ``raise NotImplementedError``."""
        body = textwrap.indent(f'"""{self.task.strip()}\n"""', "    ")
        return (f'"""My {self.title}. Check it with:  mistral-np exercise check {self.name} THIS_FILE.py"""\n\n'
                f"{self.imports}\n\n\ndef {self.signature}:\n{body}\n    raise NotImplementedError\n")


@dataclass
class Outcome:
    title: str
    ok: bool
    message: str = ""


@dataclass
class Result:
    exercise: Exercise
    source: str
    outcomes: list[Outcome] = field(default_factory=list)
    not_run: int = 0          # checks skipped because the function is not written yet

    @property
    def passed(self) -> bool:
        return not self.not_run and all(o.ok for o in self.outcomes)

    def format(self) -> str:
        ex = self.exercise
        lines = [f"exercise {ex.name}: {ex.signature}, from {self.source}"]
        for o in self.outcomes:
            lines += textwrap.wrap(o.title, WIDTH, initial_indent=f"  {'ok' if o.ok else 'FAIL':<6}",
                                   subsequent_indent=" " * 8)
            for paragraph in o.message.split("\n") if o.message else []:
                lines += textwrap.wrap(paragraph, WIDTH, initial_indent=" " * 8, subsequent_indent=" " * 8)
        failed = sum(not o.ok for o in self.outcomes) + self.not_run
        if self.not_run:
            lines.append(f"  (the other {self.not_run} checks need a function that returns something)")
        if failed:
            last = f"{failed} of {len(ex.checks)} checks failed. The exercise: docs/exercises.md#{ex.name}"
        else:
            last = f"all {len(self.outcomes)} checks passed: your {ex.function} computes what {ex.solution} computes."
        return "\n".join(lines + textwrap.wrap(last, WIDTH, break_on_hyphens=False))


def run(exercise: Exercise, fn: Callable, source: str = "your function") -> Result:
    """Every check of ``exercise`` against ``fn``."""
    result = Result(exercise, source)
    for k, check in enumerate(exercise.checks):
        try:
            check.run(fn)
            result.outcomes.append(Outcome(check.title, True))
        except Wrong as e:
            result.outcomes.append(Outcome(check.title, False, str(e)))
            if str(e) == NOT_WRITTEN:
                result.not_run = len(exercise.checks) - k - 1
                break
    return result


def load_function(path: str, exercise: Exercise) -> Callable:
    """Import the learner's file and return its function for ``exercise`` (by name, or by an alias)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PathNotFoundError(f"{path}: no such file (write your {exercise.function} there; "
                                f"`mistral-np exercise template {exercise.name}` prints a start)")
    name = f"mistral_np_exercise_{exercise.name}_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgumentError(f"{path}: cannot be imported as Python (give a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # as an import would (dataclasses in the learner's file look it up)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise InvalidArgumentError(f"{path}, line {e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:   # the learner's module code failed: report it as one line
        raise InvalidArgumentError(f"{path}: importing it raised {type(e).__name__}: {e}{_where(e, path)}") from None
    for candidate in (exercise.function,) + tuple(exercise.aliases):
        fn = getattr(module, candidate, None)
        if callable(fn):
            return fn
    found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                   and getattr(v, "__module__", None) == name)
    raise InvalidArgumentError(f"{path} defines no function {exercise.function}: the exercise asks for "
                               f"def {exercise.signature}" + (f" (found: {', '.join(found)})" if found else ""))


_NOT_THE_LEARNERS = tuple(os.path.abspath(p) + os.sep for p in
                          {os.path.dirname(os.path.dirname(__file__)), sys.prefix, sys.base_prefix, sys.exec_prefix})


def _where(error: BaseException, path: str | None = None) -> str:
    """' (my_rope.py, line 12)': the innermost frame of the traceback in the learner's file (not in mistral_np,
    NumPy or the standard library)."""
    frames = traceback.extract_tb(error.__traceback__)
    if path is not None:
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
    else:
        mine = [f for f in frames if not os.path.abspath(f.filename).startswith(_NOT_THE_LEARNERS)]
    if not mine:
        return ""
    f = mine[-1]
    return f" ({os.path.basename(f.filename)}, line {f.lineno})"


# --- calling the learner's function ------------------------------------------------------------------------

def call(fn: Callable, *args):
    """fn(*args); an exception becomes a Wrong that names it and the line of the learner's file."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise Wrong(NOT_WRITTEN) from None
    except Wrong:
        raise
    except Exception as e:
        raise Wrong(f"your function raised {type(e).__name__}: {e}{_where(e)}") from None


def _copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def unchanged(args, before, names: Sequence[str]):
    """Raise Wrong if the function changed one of its array arguments in place."""
    for a, b, n in zip(args, before, names):
        if isinstance(a, np.ndarray) and not np.array_equal(a, b, equal_nan=True):
            raise Wrong(f"your function changed its argument {n} in place. The model still needs it afterwards "
                        f"(for example, the trace keeps it, and the residual stream adds it back): compute into a "
                        f"new array instead.")


def as_array(value, what: str = "your function") -> np.ndarray:
    if value is None:
        raise Wrong(f"{what} returned None: did you forget the return statement?")
    try:
        out = np.asarray(value)
    except Exception as e:
        raise Wrong(f"{what} returned a {type(value).__name__}, which is not an array ({e})") from None
    if out.dtype == object:
        raise Wrong(f"{what} returned a {type(value).__name__} that NumPy cannot read as a numeric array")
    return out


def shape_words(shape, axes: Sequence[str]) -> str:
    if len(shape) == len(axes):
        return "(" + ", ".join(f"{n} {a}{'s' if n != 1 else ''}" for n, a in zip(shape, axes)) + ")"
    return str(tuple(shape))


def check_shape(got: np.ndarray, expected_shape, axes: Sequence[str], what: str = "the result"):
    if tuple(got.shape) != tuple(expected_shape):
        hint = ""
        if sorted(got.shape) == sorted(expected_shape):
            hint = " The same sizes in another order: check which axis is which (a transpose or a reshape)."
        elif got.size == int(np.prod(expected_shape)):
            hint = " The same number of values: a reshape is missing or wrong."
        raise Wrong(f"{what} has the wrong shape: expected {tuple(expected_shape)} "
                    f"{shape_words(expected_shape, axes)}, got {tuple(got.shape)}.{hint}")


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    return f"{float(v):.6g}"


def _pair(want, got) -> tuple[str, str]:
    """Both numbers with enough digits to see that they differ."""
    if isinstance(want, (bool, np.bool_)):
        return _fmt(want), _fmt(got)
    for digits in range(6, 18):
        a, b = f"{float(want):.{digits}g}", f"{float(got):.{digits}g}"
        if a != b:
            return a, b
    return a, b


def expect(fn: Callable, args: Sequence, names: Sequence[str], solution: Callable, *, axes: Sequence[str],
           where: Callable | None = None, mistakes: Sequence[tuple[str, Callable]] = (), rtol: float = 1e-6,
           dtype=None, boolean: bool = False) -> np.ndarray:
    """Call ``fn(*args)`` and compare with ``solution(*args)``; raise Wrong with a plain explanation.

    ``axes`` name the result's axes; ``where(index) -> str`` describes one position of the result in words;
    ``mistakes`` are (what the learner did, a function of the same arguments computing it): when the result
    equals one of them, the message says so. ``dtype``: the dtype the result must have. ``boolean``: the result
    is a mask (True/False or 0/1)."""
    before = _copies(args)
    got = as_array(call(fn, *args))
    unchanged(args, before, names)
    want = np.asarray(solution(*_copies(before)))
    check_shape(got, want.shape, axes)
    if boolean:
        if got.dtype != bool:
            if not np.isin(got, (0, 1)).all():
                raise Wrong(f"a mask holds True (may attend) or False (may not); yours holds other values, "
                            f"e.g. {_fmt(got[~np.isin(got, (0, 1))].flat[0])}")
            got = got.astype(bool)
        bad = got != want
    else:
        if not np.issubdtype(got.dtype, np.number) or np.issubdtype(got.dtype, np.complexfloating):
            raise Wrong(f"the result has dtype {got.dtype}: expected real numbers ({want.dtype})")
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= rtol * max(scale, 1e-30))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        place = where(first) if where else ", ".join(f"{a} {i}" for a, i in zip(axes, first))
        a, b = _pair(want[first], got[first])
        lines = [f"{int(bad.sum())} of {bad.size} values are wrong. The first: {place}: expected {a}, got {b}."]
        for what, variant in mistakes:
            try:
                with np.errstate(all="ignore"):
                    alt = np.asarray(variant(*_copies(before)))
            except Exception:
                continue
            same = alt.shape == got.shape and (np.array_equal(alt.astype(bool), got) if boolean else
                                               np.allclose(alt, got, rtol=rtol, atol=rtol * max(scale, 1e-30)))
            if same:
                lines.append(f"Your result is exactly what you get if you {what}")
                break
        raise Wrong("\n".join(lines))
    if dtype is not None and got.dtype != np.dtype(dtype):
        raise Wrong(f"the values are right but the dtype is {got.dtype}, expected {np.dtype(dtype)}: the model "
                    f"computes in the dtype of its inputs, and the next matrix product refuses mixed dtypes.")
    return got
