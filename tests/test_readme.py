"""The README's commands are the ones CI runs: keep them from drifting apart."""

import os
import re

from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    block = re.search(r"<!-- test-command -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README.md lacks the <!-- test-command --> block"
    command = block.group(1).strip()
    assert command in ci.splitlines(), f".ci/run does not run the README's test command: {command!r}"
