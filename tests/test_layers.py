"""Imports point one way, one rank per package: core <- data, store <- nn <- extractors <-
extract <- train (the contract below heads) <- head (the head framework) <- heads (papers
and baselines) <- run (orchestration) <- evaluate <- score, demo, api <- cli. Every import statement counts, also those
inside functions or under TYPE_CHECKING; a backward import or a cycle fails. The checker
runs on the tree and, to show it can fail, on scratch copies with a planted backward
import and a planted cycle."""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "heads", "extractors")
# one rank per package (longest matching prefix wins); equal ranks may import each other (no cycles)
RANKS = {
    "pipeline.core": 0,
    "pipeline.data": 1, "pipeline.store": 1,
    "pipeline.nn": 2,
    "extractors": 3,
    "pipeline.extract": 4,
    "pipeline.train": 5,
    "pipeline.head": 6,
    "heads": 7,
    "pipeline.run": 8,
    "pipeline.evaluate": 9,
    "pipeline": 10,  # the modules directly in pipeline/: commands built from the packages (score, api, ...)
    "pipeline.serve": 10,  # `pipe serve`: a command built like those, in a package of its own
    "pipeline.cli": 11,
}


def rank(module: str) -> int:
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in RANKS:
            return RANKS[".".join(parts[:k])]
    raise AssertionError(f"{module} has no layer: add it to RANKS")


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (root / pkg).rglob("*.py"):
            rel = p.relative_to(root).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out[name] = p
    return out


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Modules of ours that `name` imports anywhere in its file."""
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m.split(".")[0] in PACKAGES and m in known}


def check(root: Path) -> list[str]:
    known = modules(root)
    graph = {m: imports(p, m, known) - {m} for m, p in known.items()}
    problems = [f"backward import: {m} (layer {rank(m)}) imports {t} (layer {rank(t)})"
                for m, targets in sorted(graph.items()) for t in sorted(targets) if rank(t) > rank(m)]
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:  # depth-first search; a grey node met again closes a cycle
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                problems.append("cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return problems


def test_imports_point_one_way_without_cycles():
    assert check(ROOT) == []


def _scratch(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_planted_backward_import_fails(tmp_path):
    root = _scratch(tmp_path)
    p = root / "pipeline" / "core" / "paths.py"
    p.write_text(p.read_text() + "\n\ndef _late():\n    from pipeline.cli.app import app  # backward, inside a function\n")
    assert check(root) == ["backward import: pipeline.core.paths (layer 0) imports pipeline.cli.app (layer 11)"]


def test_a_planted_cycle_fails(tmp_path):
    root = _scratch(tmp_path)
    p = root / "pipeline" / "core" / "paths.py"
    p.write_text(p.read_text() + "\n\nfrom pipeline.core import io  # io imports paths? then a cycle\n")
    q = root / "pipeline" / "core" / "io.py"
    q.write_text(q.read_text() + "\n\nfrom pipeline.core import paths\n")
    assert any(x.startswith("cycle:") and "pipeline.core.paths" in x and "pipeline.core.io" in x for x in check(root))


def test_no_merge_conflict_markers_are_committed():
    """A merge left `<<<<<<< HEAD` in a docstring once, harmless at run time and easy to miss."""
    root = Path(__file__).resolve().parents[1]
    marker = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
    hits = [str(p.relative_to(root)) for d in ("pipeline", "heads", "extractors", "benchmarks", "tests", "docs")
            for p in (root / d).rglob("*") if p.suffix in (".py", ".md") and marker.search(p.read_text())]
    hits += [n for n in ("README.md",) if marker.search((root / n).read_text())]
    assert not hits, f"merge-conflict markers in {hits}"
