"""`pipe evaluate`: one comparison row per run, grouped by task, written as CSV and Markdown.

Rows carry what makes them comparable (dataset, task, target, target transform) and their
metrics on the original target scale: a head that learned a transformed target (hybrid_cnn's
max-scaled one) shows its error in the target's own units, the learned-scale values in
`_scaled` columns. `pipe report` ranks runs only within one dataset, split, task and target.

Each task has its own metrics (regression: MSE, MAE, SRC, MedAE; ranking: P@1, P@3, AUC;
embedding: mAP, micro/macro P/R/F1), so runs are compared within their task: one table
(and one `PREFIX-<task>.csv` when several tasks are present) per task.

A row keeps lists as lists (`ablate`) and the stores as a role -> extractor id dict (as in
`pipe evaluate --json`); the CSV gives them cells a parser reads back: `ablate` a JSON
list, or an empty string for none, and one `store_<role>` column per role.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core.io import atomic_write_bytes
from pipeline.train import tasks
from pipeline.run.rundir import Run
from pipeline.train.metrics import describe_difference, mean_interval, paired_difference


STATS = ("_std", "_low", "_high")  # suffixes of a test metric's statistics over seeds in a row (beside its mean)


def task_metrics(task: str) -> tuple[str, ...]:
    return tasks.get(task).metrics_names


def run_task(run: Run) -> tasks.Task:
    """The run's task as it judged the run: its target and fitted transform restored from config.json."""
    described = run.task_described
    task = tasks.get(run.task)(str(described.get("target", "score")))
    task.restore(described)
    return task


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One flat row per run: identity (dataset, task, target, target transform first: rows
    that differ there are not comparable), then its task's test metrics on the original
    target scale (mean and std over repeats; `Task.reported`) with the 95 % Student-t
    interval over seeds (`_low`, `_high`; None for one seed), any other scale in `_scaled`
    columns, the validation criterion, and `paired_to_best` (`paired_to_best`)."""
    rows, seeds = [], []
    for r in runs:
        m = r.metrics or {}
        task = run_task(r)
        row: dict[str, Any] = {
            "run": r.name, "dataset": r.config.get("dataset"), "task": task.name, "target": task.judged_on,
            "target_transform": task.transform_kind, "head": r.head, "ablate": list(r.config.get("ablate", [])),
            "stores": dict(r.stores), "split": _split_text(r.config.get("split", {})),
            "repeats": len(m.get("repeats", [])) if m else 0, "status": r.status,
            "never_improved": bool(m.get("never_improved", False)) if m else False,
        }
        test, std = task.reported(m.get("test") or {}), task.reported((m.get("std") or {}).get("test") or {})
        per_seed = seed_metrics(r, task) if m else {}
        for k in task.reported(dict.fromkeys(task.metrics_names)):
            row[f"test_{k}"] = test.get(k)
            row[f"test_{k}_std"] = std.get(k)
            row[f"test_{k}_low"], row[f"test_{k}_high"] = _interval([v.get(k) for v in per_seed.values()])
        row[f"valid_{task.criterion}"] = task.reported(m.get("valid") or {}).get(task.criterion)
        rows.append(row)
        seeds.append({s: v.get(task.criterion) for s, v in per_seed.items()})
    for row, paired in zip(rows, paired_to_best(rows, seeds)):
        row["paired_to_best"] = paired
    return rows


def seed_metrics(run: Run, task: tasks.Task) -> dict[Any, dict[str, Any]]:
    """Seed -> the test metrics of that repeat (`Task.reported`); empty when a repeat lacks its
    seed or its metrics (a run written before repeats recorded them)."""
    out = {r.get("seed"): task.reported(r.get("test") or {}) for r in run.repeats}
    return {} if None in out or not all(out.values()) or len(out) != len(run.repeats) else out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _interval(values: list[Any]) -> tuple[float | None, float | None]:
    """The 95 % t-interval of the mean over seeds (`mean_interval`); Nones for fewer than two
    seeds or a seed without a finite value."""
    if len(values) < 2 or not all(_finite(v) for v in values):
        return None, None
    s = mean_interval(values)
    return s["low"], s["high"]


def paired_to_best(rows: list[dict[str, Any]], seeds: list[dict[Any, Any]]) -> list[dict[str, Any] | None]:
    """Per row, `best - this` of the task's criterion seed by seed against the best run of its
    comparable group (`comparable_key`, best by mean), when both ran the same >= 2 seeds with
    finite values (`paired_difference`: mean, low, high, n, wins = seeds the best wins,
    within_noise), with `to` (the best run) and `metric`; None otherwise and for the best itself."""
    out: list[dict[str, Any] | None] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(comparable_key(r), []).append(i)
    for members in groups.values():
        task = tasks.get(rows[members[0]]["task"])
        crit = task.criterion
        scored = [i for i in members if metric_value(rows[i], crit) is not None]
        if not scored:
            continue
        best = sorted(scored, key=lambda i: metric_value(rows[i], crit), reverse=task.higher_is_better)[0]
        order = sorted(seeds[best], key=str)
        if len(order) < 2 or not all(_finite(seeds[best][s]) for s in order):
            continue
        for i in scored:
            if i == best or set(seeds[i]) != set(order) or not all(_finite(seeds[i][s]) for s in order):
                continue
            d = paired_difference([seeds[best][s] for s in order], [seeds[i][s] for s in order], task.higher_is_better)
            out[i] = {"to": rows[best]["run"], "metric": crit, **d}
    return out


def comparable_key(row: dict[str, Any]) -> tuple:
    """Rows with equal keys may be ranked against each other: same dataset, split, task and target."""
    return row["dataset"], row["split"], row["task"], row["target"]


def metric_value(row: dict[str, Any], metric: str, std: bool = False) -> float | None:
    """A row's finite test mean (or std) of `metric`; None when missing or not finite."""
    v = row.get(f"test_{metric}_std" if std else f"test_{metric}")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _se(row: dict[str, Any], metric: str) -> float | None:
    """The standard error of a row's mean over its repeats; None for a single repeat."""
    std = metric_value(row, metric, std=True)
    return std / math.sqrt(row["repeats"]) if std is not None and row["repeats"] > 1 else None


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per task and dataset (per comparable group: dataset, split, task, target):
    the best run by the task's criterion on test, by how much it leads the next, and whether
    that lead is beyond seed noise: by the paired 95 % interval over seeds when both ran the
    same seeds (`paired_to_best`: "within noise" when it crosses zero), else by twice the
    standard error of the difference when both have repeats."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(comparable_key(r), []).append(r)
    out = []
    for (dataset, split, task_name, target), group in groups.items():
        task = tasks.get(task_name)
        crit = task.criterion
        scored = [r for r in group if metric_value(r, crit) is not None]
        where = f"{task_name} on {dataset} (target {target}, split {split})"
        if not scored:
            out.append(f"{where}: no finished run to compare.")
            continue
        scored.sort(key=lambda r: metric_value(r, crit), reverse=task.higher_is_better)
        best = scored[0]
        flag = " (never improved: see its notes)" if best["never_improved"] else ""
        text = f"{where}: the best is {best['run']} ({best['head']}){flag}, test {crit} {metric_value(best, crit):.4f}"
        if len(scored) == 1:
            out.append(text + ", the only run with a result.")
            continue
        nxt = scored[1]
        lead = abs(metric_value(best, crit) - metric_value(nxt, crit))
        text += f", {lead:.4f} {'above' if task.higher_is_better else 'below'} {nxt['run']} ({nxt['head']})"
        se_a, se_b, paired = _se(best, crit), _se(nxt, crit), nxt.get("paired_to_best")
        if paired is not None and paired["to"] == best["run"]:
            text += (f"; paired over their {paired['n']} seeds, {best['run']} - {nxt['run']}: "
                     f"{describe_difference(paired, 4)}{'' if paired['within_noise'] else ', beyond noise'}.")
        elif se_a is None or se_b is None:
            text += "; one seed of at least one of them, so seed noise is unknown (--repeats 3 measures it)."
        else:
            noise = 2 * math.sqrt(se_a ** 2 + se_b ** 2)
            text += (f"; {'beyond' if lead > noise else 'within'} seed noise (twice the standard error of the "
                     f"difference over their repeats: {noise:.4f}).")
        out.append(text)
    return out


def by_task(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append(r)
    return out


def _split_text(s: dict[str, Any]) -> str:
    if s.get("kind") in ("uhan", "random"):
        return f"{s['kind']}:{s.get('seed', 0)}"
    return ",".join(f"{f:g}" for f in s.get("fractions", []))


def status_text(row: dict[str, Any]) -> str:
    """A row's state for people: its repeats when done (`never improved` when flagged), else its status."""
    if row["status"] != "done":
        return row["status"]
    return f"{row['repeats']} · never improved" if row.get("never_improved") else str(row["repeats"])


def target_text(row: dict[str, Any]) -> str:
    """A row's target for people: `retweets (log1p)` under a transform, else the column."""
    t = row.get("target") or "—"
    return t if row.get("target_transform", "none") == "none" else f"{t} ({row['target_transform']})"


def ablate_text(row: dict[str, Any]) -> str:
    """The ablations of a row for people: `user, visual`, or a dash for none."""
    return ", ".join(row["ablate"]) or "—"


PAIRED_FIELDS = ("to", "metric", "mean", "low", "high", "n", "wins", "within_noise")  # CSV columns of `paired_to_best`


def csv_row(row: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """A row with flat cells: `ablate` as a JSON list ("" for none), `store_<role>` per role,
    `paired_<field>` per field of `paired_to_best` (empty cells where there is none)."""
    flat: dict[str, Any] = {}
    for k, v in row.items():
        if k == "stores":
            flat.update({f"store_{role}": v.get(role) for role in roles})
        elif k == "paired_to_best":
            flat.update({f"paired_{f}": (v or {}).get(f) for f in PAIRED_FIELDS})
        else:
            flat[k] = (json.dumps(v) if v else "") if k == "ablate" else v
    return flat


def mean_text(row: dict[str, Any], metric: str, digits: int = 4) -> str:
    """`m [low, high]` (mean and 95 % interval over seeds) of a test metric of a comparison row;
    `m ± s` for repeats without per-seed values (older runs); the mean alone for one repeat."""
    mean, std = row.get(f"test_{metric}"), row.get(f"test_{metric}_std")
    low, high = row.get(f"test_{metric}_low"), row.get(f"test_{metric}_high")
    if mean is None:
        return "—"
    if low is not None and high is not None:
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None and row["repeats"] > 1 else f"{mean:.{digits}f}"


def paired_text(row: dict[str, Any], digits: int = 4, short: bool = False) -> str:
    """A row's paired difference to the best of its group: `best - this: +d [lo, hi], wins w/n,
    within noise` (`short`: `+d [lo, hi] w/n`, `~` when within noise); a dash when there is none."""
    d = row.get("paired_to_best")
    if d is None:
        return "—"
    if short:
        f = f"{{:+.{digits}f}}"
        return (f"{f.format(d['mean'])} [{f.format(d['low'])}, {f.format(d['high'])}] {d['wins']}/{d['n']}"
                + (" ~" if d["within_noise"] else ""))
    return f"{d['to']} - this: {describe_difference(d, digits)}"


def write_comparison(rows: list[dict[str, Any]], prefix: str | Path) -> list[Path]:
    """PREFIX.csv (every column: means, stds and intervals apart; one PREFIX-<task>.csv per
    further task) and PREFIX.md (one `mean [95 % interval]` table per task, with the paired
    difference to the group's best where seeds match); returns every path written."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".md")
    groups = by_task(rows)
    lines: list[str] = []
    written: list[Path] = []
    for i, (task, group) in enumerate(groups.items()):
        path = csv_path if i == 0 else prefix.with_name(f"{prefix.name}-{task}.csv")
        roles = list(dict.fromkeys(role for r in group for role in r["stores"]))
        table = pl.DataFrame([csv_row(r, roles) for r in group], infer_schema_length=None)
        atomic_write_bytes(path, table.write_csv().encode())  # never half a table over the last one
        written.append(path)
        names = task_metrics(task)
        paired = any(r["paired_to_best"] for r in group)
        head = ["run", "dataset", "target", "head", "ablations", "repeats", *[f"test {k.upper()}" for k in names],
                *([f"paired to best ({tasks.get(task).criterion.upper()})"] if paired else [])]
        lines += [f"## {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in group:
            cells = [r["run"], r["dataset"] or "—", target_text(r), r["head"], ablate_text(r), status_text(r),
                     *[mean_text(r, k) for k in names], *([paired_text(r)] if paired else [])]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    atomic_write_bytes(md_path, "\n".join(lines).encode())
    return [*written, md_path]
