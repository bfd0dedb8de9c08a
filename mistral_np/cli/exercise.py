"""``mistral-np exercise``: check your own implementation of one piece of the model.

    mistral-np exercise list                     the exercises, the function each asks for, its solution
    mistral-np exercise template NAME            print a file to start from (signature, shapes, what to compute)
    mistral-np exercise check NAME FILE          run the project's checks for NAME against FILE's function

``check`` prints one line per check (ok / FAIL, and for a failure what is wrong: the shape, the first wrong
value and where it sits, and the known mistake it matches) and exits 0 when every check passes, 1 when one
fails. A file that does not exist, does not import or lacks the function, or an unknown exercise, is an
error of mistral_np.errors (one line, exit status 2). The checker is mistral_np/exercises/; the exercises
are explained in docs/exercises.md. Checked by tests/test_exercises.py.

next: mistral_np/exercises/__init__.py.
"""

from __future__ import annotations


def add_exercise_commands(sub) -> None:
    """Register ``exercise`` (list, template, check) on the ``mistral-np`` sub-parsers."""
    e = sub.add_parser("exercise", help="exercises: check your own RMSNorm, RoPE, window mask, KV cache, Q4_0",
                       description="Implement a piece of the model yourself; the project's checks say what is "
                                   "wrong (docs/exercises.md).")
    es = e.add_subparsers(dest="exercise_command", required=True)
    p = es.add_parser("list", help="the exercises")
    p.set_defaults(func=cmd_list)
    p = es.add_parser("template", help="print a file to start an exercise from")
    p.add_argument("name", help="exercise name (see: mistral-np exercise list)")
    p.set_defaults(func=cmd_template)
    p = es.add_parser("check", help="check your function", epilog="example: mistral-np exercise check rope my_rope.py")
    p.add_argument("name", help="exercise name (see: mistral-np exercise list)")
    p.add_argument("file", help="your Python file, defining the function the exercise names")
    p.set_defaults(func=cmd_check)


def cmd_list(args) -> int:
    from ..exercises import EXERCISES
    for ex in EXERCISES.values():
        print(f"{ex.name:<14} {ex.title}")
        print(f"{'':<14} write: def {ex.signature}")
        print(f"{'':<14} solution: {ex.solution}")
    print("start with: mistral-np exercise template NAME > my_file.py; then: mistral-np exercise check NAME my_file.py")
    return 0


def cmd_template(args) -> int:
    from ..exercises import exercise
    print(exercise(args.name).template(), end="")
    return 0


def cmd_check(args) -> int:
    from ..exercises import check_file
    result = check_file(args.name, args.file)
    print(result.format())
    return 0 if result.passed else 1
