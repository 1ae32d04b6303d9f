"""Workflow modules keep no mutable state at module level.

The worker's sandbox passes every module through (workflows/registry.py): modules are
imported once per process, not once per run, so a module-level list or dict that
workflow code changed would leak from one run into the next, and a replay would no
longer see what the original run saw. Constants (tuples, strings, frozen sets, numbers,
classes, functions) are fine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The workflow modules, and LoopLlama's own modules that workflow code calls into.
MODULES = [
    *sorted((ROOT / "workflows").glob("*.py")),
    ROOT / "core" / "contract.py",
    ROOT / "core" / "crew_graph.py",
    ROOT / "core" / "ids.py",
    ROOT / "core" / "prompts.py",
    ROOT / "core" / "run_memo.py",
    ROOT / "core" / "timefmt.py",
    ROOT / "core" / "tool_schema.py",
    ROOT / "core" / "tools.py",
    ROOT / "core" / "types.py",
]
_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque",
                  "bytearray"}


def mutable_globals(source: str) -> list[str]:
    """Module-level names bound to a mutable container (a display or a constructor)."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        mutable = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp,
                                     ast.SetComp))
        if isinstance(value, ast.Call):
            func = value.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            mutable = name in _MUTABLE_CALLS
        if mutable:
            found += [ast.unparse(target) for target in targets]
    return found


def test_the_check_finds_mutable_globals() -> None:
    source = "A = []\nB: dict[str, int] = {}\nC = set()\nD = (1, 2)\nE = frozenset({1})\n"
    assert mutable_globals(source) == ["A", "B", "C"]


def test_workflow_modules_have_no_mutable_globals() -> None:
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in MODULES
        if (names := mutable_globals(path.read_text()))
    }
    assert offenders == {}, (
        "module-level mutable state is shared by every run in a worker; make it a tuple "
        f"or frozenset, or keep it on the workflow instance: {offenders}"
    )


def test_the_api_loads_no_run_workflow_and_no_activity_module() -> None:
    # The API names runs' types, messages and errors (core/contract.py); importing the
    # run workflow would load the activity modules (the model SDK, smtplib) with it.
    probe = (
        "import sys, api.app; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('activities', 'anthropic', 'smtplib') "
        "or m == 'workflows.run'))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]"
