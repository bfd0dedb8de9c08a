"""The layout itself: the import graph has no cycles, the model maths imports only NumPy and the standard
library, only the command line decides exit statuses, the "next:" pointers form one reading path through the
model, every module names the file to read next and the tests that check it, and the repository refers to no
file outside itself."""

import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "mistral_np")


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package (packages as their __init__)."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


MODULES = modules()


def imports(name: str, path: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, function-level ones included.

    ``from pkg import x`` counts as an import of ``pkg.x`` when that is a module, else of ``pkg``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return found


def test_import_graph_has_no_cycles():
    graph = {m: sorted({t for t, _ in imports(m, p) if t in MODULES and t != m}) for m, p in MODULES.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_model_package_imports_only_numpy_the_standard_library_and_itself():
    allowed_external = {"numpy"} | set(sys.stdlib_module_names)
    for m, path in MODULES.items():
        if not (m == "mistral_np.model" or m.startswith("mistral_np.model.")):
            continue
        for target, line in imports(m, path):
            if target.startswith("mistral_np."):
                assert target.startswith("mistral_np.model"), f"{path}:{line} imports {target}"
            else:
                assert target.split(".")[0] in allowed_external, f"{path}:{line} imports {target}"


def test_only_the_cli_exits():
    for m, path in MODULES.items():
        if m.startswith("mistral_np.cli"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            exits = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit"
                     and isinstance(node.func.value, ast.Name) and node.func.value.id in ("sys", "os")) or \
                    (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exit", "quit")) or \
                    (isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc))
            assert not exits, f"{path}:{node.lineno}: only mistral_np/cli decides exit statuses"


def test_every_raise_in_the_package_is_of_the_error_family():
    """User-facing refusals are MistralNPError subclasses: no bare ValueError/TypeError/IndexError/... is raised
    by the package, except ValueError for a programming error inside the model maths, which has no access to
    the error family (model/ imports only NumPy); the layers above check user input before it gets there."""
    import builtins
    standard = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if not (isinstance(node, ast.Raise) and node.exc is not None):
                continue
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = call.id if isinstance(call, ast.Name) else call.attr if isinstance(call, ast.Attribute) else ""
            if name not in standard or name in ("NotImplementedError", "AssertionError", "KeyboardInterrupt"):
                continue
            if name == "ValueError" and m.startswith("mistral_np.model"):
                continue
            raise AssertionError(f"{path}:{node.lineno}: raises {name}, not an error of mistral_np.errors")


def next_pointer(path: str) -> str | None:
    doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read()))
    m = re.search(r"next: (?:back to )?([\w/]+\.py)", doc or "")
    return m.group(1) if m else None


def test_model_reading_path_visits_every_file_once_and_ends():
    folder = os.path.join(PACKAGE, "model")
    path, current = [], "config.py"
    while current is not None:
        assert current not in path, f"the next: pointers loop: {' -> '.join(path + [current])}"
        assert os.path.exists(os.path.join(folder, current)), f"{path[-1]} points at missing {current}"
        path.append(current)
        nxt = next_pointer(os.path.join(folder, current))
        current = nxt if nxt and "/" not in nxt else None
    side_roads = {"trace.py", "gqa_blocked.py", "parallel.py", "__init__.py"}
    every = {f for f in os.listdir(folder) if f.endswith(".py")}
    assert set(path) | side_roads == every, f"not on the reading path: {every - set(path) - side_roads}"
    assert path[-1] == "ops.py"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_next_pointers_name_existing_files(module):
    path = MODULES[module]
    target = next_pointer(path)
    if target is None:
        return
    here = os.path.dirname(path)
    candidates = [os.path.join(here, target), os.path.join(ROOT, target), os.path.join(PACKAGE, target)]
    assert any(os.path.exists(c) for c in candidates), f"{path}: next: {target} does not exist"


def next_targets(path: str) -> list[str] | None:
    """The files and folders the module docstring's ``next:`` line names (to the end of its paragraph), or None
    when it has no such line. ``next: back to gqa.py (...)``, ``next: model/ops.py:linear``, ``next: ... the
    embeddings (mistral_np/embeddings/) ...`` name gqa.py, model/ops.py and mistral_np/embeddings/."""
    doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read())) or ""
    m = re.search(r"(?:^|\s)next:(.*?)(?:\n\s*\n|\Z)", doc, re.S)
    return re.findall(r"[\w./-]*\w(?:\.py|\.md|/)", m.group(1)) if m else None


@pytest.mark.parametrize("module", [m for m in sorted(MODULES) if not MODULES[m].endswith("__init__.py")])
def test_every_module_says_which_file_to_read_next(module):
    """Every module's docstring has a ``next:`` line, and each file (or package folder) it names exists: beside
    the module, under mistral_np/, or from the repository root."""
    path = MODULES[module]
    targets = next_targets(path)
    assert targets is not None, f"{path}: the docstring has no next: line"
    assert targets, f"{path}: the next: line names no file"
    here = os.path.dirname(path)
    for target in targets:
        candidates = [os.path.join(base, target) for base in (here, PACKAGE, ROOT)]
        assert any(os.path.isfile(c) or os.path.isfile(os.path.join(c, "__init__.py")) for c in candidates), \
            f"{path}: next: {target} is neither a file nor a package"


def test_the_repository_refers_to_no_file_outside_itself():
    names = ["SPEC" + ".md", "PERF" + ".md", "CLARIFICATIONS" + ".md", "STYLE" + ".md", ".." + "/shared"]
    try:
        out = subprocess.run(["git", "grep", "-n", "-I", "-F"] + sum((["-e", n] for n in names), []),
                             cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.fail("git is needed to list the repository's files")
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout == "", "references to files outside the repository:\n" + out.stdout


@pytest.mark.parametrize("module", [m for m in sorted(MODULES) if not MODULES[m].endswith("__init__.py")])
def test_every_module_names_what_checks_it(module):
    """Every module's docstring names at least one test file under tests/ that exists (``tests/test_*.py``),
    the file that checks what the module computes."""
    path = MODULES[module]
    doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read(), path)) or ""
    named = re.findall(r"tests/test_\w+\.py", doc)
    assert named, f"{path}: the docstring names no tests/test_*.py file that checks it"
    existing = [t for t in named if os.path.isfile(os.path.join(ROOT, t))]
    assert existing, f"{path}: the docstring names {', '.join(sorted(set(named)))}, none of which exists"
