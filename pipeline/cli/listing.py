"""`pipe list heads|backbones|tasks|runs|datasets`: what is registered (or, for runs and datasets,
what is on disk), one line each, without reading the code or the folders."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from pipeline.cli.app import CacheOpt, JsonOpt, RunsOpt, app, friendly, print_json, results_console


class What(str, Enum):
    heads = "heads"
    backbones = "backbones"
    tasks = "tasks"
    runs = "runs"
    datasets = "datasets"


def doc_line(cls: type, limit: int = 110) -> str:
    """The first sentence of the docstring of the module defining `cls` (each names its paper),
    cut at a word boundary past `limit` characters."""
    doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(doc.split())
    end = text.find(". ")
    text = text[: end + 1] if end >= 0 else text
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _roles(head_cls: type) -> str:
    """`visual:grid, text:tokens, user?`: role:kinds of the default config; `?` = optional."""
    try:
        roles = head_cls(head_cls.Config()).roles()
    except Exception as e:  # a head that cannot be built with its defaults still gets listed
        return f"? ({type(e).__name__})"
    return ", ".join(f"{name}:{'|'.join(r.kinds)}" + ("" if r.required else "?") for name, r in roles.items()) or "-"


def head_rows() -> list[dict[str, Any]]:
    import heads

    return [{"name": n, "task": c.task, "roles": _roles(c), "tune": ",".join(c.search_space) or "—",
             "paper": doc_line(c)}
            for n, c in ((n, heads.get(n)) for n in heads.names())]


def _spec(ex_cls: type) -> str:
    try:
        s = ex_cls(ex_cls.Config()).spec()
    except Exception:  # e.g. a vocabulary size known only after fitting
        return "set by fit"
    return f"{s.kind} {'x'.join(map(str, s.shape))} {s.dtype}"


def backbone_rows() -> list[dict[str, Any]]:
    import extractors

    return [{"name": n, "modality": c.modality, "output": _spec(c), "about": doc_line(c)}
            for n, c in ((n, extractors.get(n)) for n in extractors.names())]


def task_rows() -> list[dict[str, Any]]:
    from pipeline.train import tasks

    return [{"name": n, "summary": tasks.get(n).summary} for n in tasks.names()]


def run_rows(runs: Any = None) -> list[dict[str, Any]]:
    """The runs of the runs root: name, head, task, dataset, status, test criterion (or why not)."""
    from pipeline.core import paths
    from pipeline.core.errors import PipeError
    from pipeline.evaluate.compare import comparison_rows
    from pipeline.run.rundir import load_run
    from pipeline.train import tasks

    out = []
    for name in paths.run_names(runs):
        try:
            row = comparison_rows([load_run(name, runs)])[0]
        except (PipeError, KeyError) as e:  # a damaged run is listed, not fatal
            out.append({"name": name, "head": "?", "task": "?", "dataset": "?", "status": f"unreadable: {e}"[:60],
                        "test": ""})
            continue
        crit = tasks.get(row["task"]).criterion
        value = row.get(f"test_{crit}")
        out.append({"name": name, "head": row["head"], "task": row["task"], "dataset": row["dataset"] or "?",
                    "status": row["status"] + (" · never improved" if row["never_improved"] else ""),
                    "test": f"{crit} {value:.4f}" if isinstance(value, float) else ""})
    return out


def dataset_rows(cache: Any = None) -> list[dict[str, Any]]:
    """The datasets of the cache: name, posts, stores (extractor ids)."""
    import polars as pl

    from pipeline.core import paths
    from pipeline.store import list_stores

    return [{"name": n, "posts": pl.scan_parquet(paths.posts_path(n, cache)).select(pl.len()).collect().item(),
             "stores": ", ".join(list_stores(n, cache)) or "—"} for n in paths.dataset_names(cache)]


@app.command("list")
@friendly
def list_cmd(
    what: What = typer.Argument(..., help="heads (name, task, roles, what `pipe tune` searches, paper), backbones (name, modality, "
                                "default output, about), tasks (name, summary), runs (name, head, task, dataset, status, test "
                                "criterion) or datasets (name, posts, stores)."),
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """List registered heads, backbones or tasks, or the runs and datasets on disk, one line each."""
    rows = {What.heads: head_rows, What.backbones: backbone_rows, What.tasks: task_rows,
            What.runs: lambda: run_rows(runs), What.datasets: lambda: dataset_rows(cache)}[what]()
    if as_json:
        return print_json(rows)
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    out = results_console()
    out.print("  ".join([*(c.upper().ljust(widths[c]) for c in cols[:-1]), *(c.upper() for c in cols[-1:])]), markup=False)
    for r in rows:
        out.print("  ".join([*(str(r[c]).ljust(widths[c]) for c in cols[:-1]), *(str(r[c]) for c in cols[-1:])]),
                  markup=False)
