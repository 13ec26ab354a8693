"""`pipe list heads|backbones|tasks`: what is registered, one line each, without reading the code."""
from __future__ import annotations

import sys
from enum import Enum
from typing import Any

import typer

from pipeline.cli.app import JsonOpt, app, friendly, print_json, results_console


class What(str, Enum):
    heads = "heads"
    backbones = "backbones"
    tasks = "tasks"


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


@app.command("list")
@friendly
def list_cmd(
    what: What = typer.Argument(..., help="heads (name, task, roles, what `pipe tune` searches, paper), backbones (name, modality, "
                                "default output, about) or tasks (name, summary)."),
    as_json: bool = JsonOpt,
) -> None:
    """List registered heads, backbones or tasks, one line each."""
    rows = {What.heads: head_rows, What.backbones: backbone_rows, What.tasks: task_rows}[what]()
    if as_json:
        return print_json(rows)
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    out = results_console()
    out.print("  ".join([*(c.upper().ljust(widths[c]) for c in cols[:-1]), *(c.upper() for c in cols[-1:])]), markup=False)
    for r in rows:
        out.print("  ".join([*(str(r[c]).ljust(widths[c]) for c in cols[:-1]), *(str(r[c]) for c in cols[-1:])]),
                  markup=False)
