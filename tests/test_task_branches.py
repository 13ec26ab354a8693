"""No branch on a task's name outside the tasks' own package (pipeline/train/tasks/): what
differs between tasks is an attribute or a method of the task, so adding a task is one
file. The checker reads the syntax trees of pipeline/ and heads/ and flags a comparison
(==, !=, in, not in) or a `match` with a task name or with something naming a task
(`task`, `x.task`, `task.name`), and an inline dispatch table keyed by task names
(`{"regression": ...}[x]` or `.get(x)`). Declaring a head's task (`task = "ranking"`) or
a registry keyed by name (pipeline/data/synth_kinds.py) is not a branch. The checker runs
on the tree and, to show it can fail, on planted violations."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.train import tasks

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ROOT / "pipeline" / "train" / "tasks"
NAMES = frozenset(tasks.names())


def _names_a_task(node: ast.AST) -> bool:
    """A task name, or an expression naming a task: task, x.task, task.name, x.task.name."""
    if isinstance(node, ast.Constant):
        return node.value in NAMES
    if isinstance(node, ast.Name):
        return node.id == "task"
    if isinstance(node, ast.Attribute):
        return node.attr == "task" or (node.attr == "name" and _names_a_task(node.value))
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_task(e) for e in node.elts)
    return False


def _dispatch_table(node: ast.AST) -> bool:
    """A dict literal keyed by task names, looked up in place."""
    return isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value in NAMES for k in node.keys)


def branches(source: str) -> list[int]:
    """Line numbers of branches on a task's name in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            if any(_names_a_task(x) for x in [node.left, *node.comparators]):
                found.append(node.lineno)
        elif isinstance(node, ast.Match) and _names_a_task(node.subject):
            found.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _dispatch_table(node.value):
            found.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and _dispatch_table(node.func.value)):
            found.append(node.lineno)
    return found


def violations(root: Path) -> list[str]:
    out = []
    for path in sorted([*(root / "pipeline").rglob("*.py"), *(root / "heads").rglob("*.py")]):
        if root / ALLOWED.relative_to(ROOT) in path.parents:
            continue
        out += [f"{path.relative_to(root)}:{line}" for line in branches(path.read_text())]
    return out


def test_no_branch_on_a_task_name_outside_the_tasks():
    assert violations(ROOT) == []


@pytest.mark.parametrize("planted", [
    'if run.task == "regression":\n    pass',
    'if task.name != "ranking":\n    pass',
    'x = s.task.name in ("ranking", "embedding")',
    'if "embedding" == kind:\n    pass',
    'if self.task == other:\n    pass',
    'figs = {"regression": a, "ranking": b}.get(run.task, c)',
    'f = {"embedding": a}[name]',
    'match run.task:\n    case _:\n        pass',
])
def test_a_planted_branch_is_found(planted):
    assert branches(planted) == [1]


@pytest.mark.parametrize("fine", [
    'task = "ranking"',  # a head declares its task
    'KINDS = {"regression": a, "ranking": b}',  # a registry keyed by name
    'if kind == "grid":\n    pass',
    'if tasks.get(run.task).ranks_posts:\n    pass',
])
def test_declarations_and_task_attributes_are_not_branches(fine):
    assert branches(fine) == []


def test_a_planted_branch_in_a_copy_of_the_tree_fails(tmp_path):
    for package in ("pipeline", "heads"):
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    assert violations(tmp_path) == []
    score = tmp_path / "pipeline" / "score.py"
    score.write_text(score.read_text() + '\n\ndef planted(task):\n    return task.name == "regression"\n')
    inside = tmp_path / "pipeline" / "train" / "tasks" / "regression.py"
    inside.write_text(inside.read_text() + '\n\ndef allowed(task):\n    return task.name == "regression"\n')
    assert violations(tmp_path) == [f"pipeline/score.py:{len(score.read_text().splitlines())}"]
