"""Exercises: re-implement one piece of Mistral in your own file, and let the project's checks judge it.

    mistral-np exercise list                      the exercises and the function each asks for
    mistral-np exercise template rope > my_rope.py    a file to start from (signature, shapes, task)
    mistral-np exercise check rope my_rope.py     run the checks; say what is wrong: shape, value, position

    exercise        write                                              solution (the project's own)
    rmsnorm         rms_norm(x, weight, eps)                           model/rmsnorm.py:rms_norm
    rope            apply_rope(x, cos, sin)                            model/rope.py:apply_rope
    window_mask     sliding_window_causal_mask(q_pos, k_pos, window)   model/masks.py:sliding_window_causal_mask
    rolling_cache   kv_cache_update(cache, layer, k, v, positions)     model/kv_cache.py:KVCache.update
    q4_0            dequantize_q4_0(packed, shape)                     quant/q4_0.py:dequantize_q4_0_ref

checker.py runs the checks and writes the explanations; each other file holds one exercise: its task, its
checks (modelled on the tests of the piece) and the known mistakes it recognizes. docs/exercises.md is the
learner's page. From Python: ``check("rope", my_function).format()``.

next: checker.py.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError
from . import q4_0, rmsnorm, rolling_cache, rope, window_mask
from .checker import Exercise, Result, load_function, run

EXERCISES: dict[str, Exercise] = {m.EXERCISE.name: m.EXERCISE for m in (rmsnorm, rope, window_mask, rolling_cache,
                                                                          q4_0)}


def exercise(name: str) -> Exercise:
    """The exercise called ``name``; InvalidArgumentError listing them all if there is none."""
    try:
        return EXERCISES[name]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"no exercise {name!r}: choose one of {', '.join(EXERCISES)}") from None


def check(name: str, fn) -> Result:
    """Run exercise ``name``'s checks against the function ``fn``."""
    return run(exercise(name), fn, getattr(fn, "__qualname__", "your function"))


def check_file(name: str, path) -> Result:
    """Run exercise ``name``'s checks against the function of that name in the Python file ``path``."""
    ex = exercise(name)
    return run(ex, load_function(path, ex), str(path))


__all__ = ["EXERCISES", "Exercise", "Result", "exercise", "check", "check_file", "load_function", "run"]
