"""`pipe report`: one self-contained HTML page to look at runs rather than read their JSON.

At the top, one sentence per task and dataset saying which run is best, by how much, and
whether that is beyond seed noise (when the runs have repeats). Per task, the comparison
table of `pipe evaluate` with every test metric (mean and 95 % Student-t interval over seeds,
on the original target scale), where runs ran the same seeds the paired difference of the
task's criterion to the best run of their group (`paired_to_best`), the best value of each column among the runs of the same dataset, split and
target marked and each ablation's change against its full model (same head, dataset,
stores, split and target, no ablation, among the runs given); then, per dataset, split and
target with two runs or more that log a curve, their validation curves overlaid
(pipeline/evaluate/curves.py). Per run: train loss and validation criterion by step with the
restored step marked (a note for a head fitted in one go), a tree head's feature
importances, and from predictions.parquet (only the columns the plot set names), on the
test part: predicted vs true, errors per user, and the error by user activity (the user's
posts in the training part) and by posting time (regression); P@k for k = 1..10 and AUC
per user (ranking); AP per label, precision-recall curves per label and cross-modal P@k
(embedding) (pipeline/evaluate/breakdown.py): the plot set the run's task names
(`Task.plots`, a key of `PLOT_SETS`). Plots are inline PNGs (pipeline/evaluate/plots.py);
the page has no script and no network reference, so it opens from disk anywhere. What
cannot be drawn (no posts table left in the cache, a run still running, a run from before
predictions kept `user_id`) is said in place of the plot; no figure has empty axes.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Callable

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes
from pipeline.data.contract import load_posts
from pipeline.evaluate import breakdown, plots
from pipeline.evaluate.compare import (STATS, ablate_text, comparable_key, comparison_rows, mean_text, metric_value,
                                       paired_text, target_text, verdicts)
from pipeline.evaluate.curves import overlaid, training_figure, validation_curves
from pipeline.evaluate.markup import img, note
from pipeline.train import tasks
from pipeline.train.metrics import average_precision, precision_at_ks
from pipeline.run.rundir import Run

__all__ = ["build_report", "img", "note", "page", "run_posts", "user_training_stats", "validation_curves",
           "write_report"]

LOWER_IS_BETTER = frozenset({"mse", "mae", "medae"})  # every other metric: higher is better
OPEN_BELOW = 10  # run sections start unfolded for fewer runs than this
ACTIVITY_BINS = ((0, 0, "unseen"), (1, 4, "1–4"), (5, 19, "5–19"), (20, 99, "20–99"), (100, None, "100+"))

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#eee;position:sticky;top:0}
td.l,th.l{text-align:left}
td.best{font-weight:bold;background:#e6f4d7}
.delta{display:block;font-size:11px}.better{color:#2e7d32}.worse{color:#c62828}
.plots{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}.plots img{border:1px solid #ddd;height:auto;max-width:100%;object-fit:contain;flex:none}
table.users{display:inline-table;vertical-align:top;margin:0 8px .5em 0}caption{font-size:12px;text-align:left}
.verdict p{font-weight:600;margin:.3em 0}.note{color:#666;font-style:italic}section{margin-bottom:1em}summary{font-size:1.1em;cursor:pointer}
</style></head><body>
<h1>$title</h1>
$body
</body></html>
""")


UNTRAINED_TAG = ('<span class="delta worse" title="the model never beat its untrained start or the task\'s constant '
                 'predictor (see the run\'s notes)">never improved</span>')


def page(title: str, body: str) -> str:
    """A whole HTML document around `body` (already escaped HTML)."""
    return PAGE.substitute(title=html.escape(title), body=body)


def run_posts(run: Run, cache: str | Path | None, memo: dict[tuple[str, str], Any] | None = None
              ) -> pl.DataFrame | None:
    """The run dataset's posts (from the cache the run recorded, else `cache`), or None when
    the table is gone; `memo` shares tables between runs of one dataset."""
    memo = {} if memo is None else memo
    ds = run.config.get("dataset", "")
    for root in dict.fromkeys(r for r in (run.config.get("cache"), cache) if r is not None) or (None,):
        key = (ds, str(root))
        if key not in memo:
            try:
                memo[key] = load_posts(ds, Path(root) if root is not None else None)
            except PipeError:
                memo[key] = None
        if memo[key] is not None:
            return memo[key]
    return None


def user_training_stats(preds: pl.DataFrame, posts: pl.DataFrame) -> pl.DataFrame:
    """user_id, n_train (posts in the training part) and train_mean (mean target there; null
    for tasks without a per-post target)."""
    train = preds.filter(pl.col("split") == "train").select("post_id", *(["y"] if "y" in preds.columns else []))
    joined = train.join(posts.select("post_id", "user_id"), on="post_id")
    mean = pl.col("y").mean() if "y" in joined.columns else pl.lit(None, pl.Float64)
    return joined.group_by("user_id").agg(pl.len().alias("n_train"), mean.alias("train_mean"))


# -- the comparison table -------------------------------------------------------------
def _metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The test metrics of the rows, in order (the task's, on the original scale, then `_scaled` ones)."""
    keys = dict.fromkeys(k[5:] for r in rows for k in r if k.startswith("test_") and not k.endswith(STATS))
    return list(keys)


def _full_model(run: Run, runs: list[Run]) -> Run | None:
    """The run this ablation is measured against: same everything but no ablation."""
    def key(r: Run) -> tuple:
        c = r.config
        return (r.task, r.head, c.get("dataset"), json.dumps(r.stores, sort_keys=True),
                json.dumps(c.get("split"), sort_keys=True), json.dumps(c.get("task"), sort_keys=True))
    return next((r for r in runs if not r.config.get("ablate") and r.metrics and key(r) == key(run)), None)


def best_values(rows: list[dict[str, Any]], names: list[str]) -> dict[tuple, dict[str, float]]:
    """Per group of comparable rows (`comparable_key`: dataset, split, task, target), the best
    mean of each metric; learned-scale (`_scaled`) columns are never ranked."""
    best: dict[tuple, dict[str, float]] = {}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(comparable_key(r), []).append(r)
    for key, group in groups.items():
        for k in names:
            vals = [v for r in group if (v := metric_value(r, k)) is not None]
            if vals and not k.endswith("_scaled"):
                best.setdefault(key, {})[k] = min(vals) if k in LOWER_IS_BETTER else max(vals)
    return best


def comparison_table(task: str, runs: list[Run]) -> str:
    rows = comparison_rows(runs)
    names = _metric_names(rows)
    best = best_values(rows, names)
    paired = any(r["paired_to_best"] for r in rows)
    head = ["run", "head", "ablations", "dataset", "target", "status", "repeats", *[f"test {k}" for k in names],
            *(["paired to best (best - this, over the same seeds)"] if paired else [])]
    out = ["<table class=\"cmp\"><thead><tr>" + "".join(
        f'<th class="{"l" if i < 6 else ""}">{html.escape(h)}</th>' for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    by_name = {r.name: row for r, row in zip(runs, rows)}
    for run, row in zip(runs, rows):
        full = _full_model(run, runs) if run.config.get("ablate") else None
        cells = [f'<td class="l"><a href="#run-{html.escape(run.name)}">{html.escape(run.name)}</a></td>',
                 f'<td class="l">{html.escape(run.head)}</td>', f'<td class="l">{html.escape(ablate_text(row))}'
                 + ("" if full or not run.config.get("ablate") else '<span class="delta">no full model here</span>')
                 + "</td>", f'<td class="l">{html.escape(str(row["dataset"] or ""))}</td>',
                 f'<td class="l">{html.escape(target_text(row))}</td>',
                 f'<td class="l">{run.status}' + (UNTRAINED_TAG if row["never_improved"] else "") + "</td>",
                 f"<td>{row['repeats']}</td>"]
        group_best = best.get(comparable_key(row), {})
        for k in names:
            mean = metric_value(row, k)
            if mean is None:
                cells.append("<td>—</td>")
                continue
            text = html.escape(mean_text(row, k))
            if full is not None and (base := metric_value(by_name[full.name], k)) is not None:
                d = mean - base
                good = d < 0 if k in LOWER_IS_BETTER else d > 0
                text += (f'<span class="delta {"better" if good else "worse" if d else ""}" '
                         f'title="vs {html.escape(full.name)}">Δ {d:+.4f}</span>')
            cls = (' class="best" title="best among the runs of this dataset, split and target"'
                   if group_best.get(k) == mean else "")
            cells.append(f"<td{cls}>{text}</td>")
        if paired:
            cells.append(f'<td class="l">{html.escape(paired_text(row))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


# -- per run --------------------------------------------------------------------------
def _error_by_activity(test: pl.DataFrame, stats: pl.DataFrame) -> bytes | None:
    t = test.join(stats.select("user_id", "n_train"), on="user_id", how="left").with_columns(
        pl.col("n_train").fill_null(0), err=(pl.col("yhat") - pl.col("y")).abs())
    labels, maes, counts = [], [], []
    for lo, hi, label in ACTIVITY_BINS:
        sel = t.filter((pl.col("n_train") >= lo) & (pl.col("n_train") <= hi if hi is not None else pl.lit(True)))
        if sel.height:
            labels.append(label)
            maes.append(float(sel["err"].mean()))
            counts.append(sel.height)
    return plots.bars(labels, maes, "error by user activity (test)", "MAE", counts,
                      "the user's posts in the training part") if labels else None


def _error_by_time(test: pl.DataFrame, bins: int = 8) -> bytes | None:
    t = test.drop_nulls("posted_at").sort("posted_at").with_columns(err=(pl.col("yhat") - pl.col("y")).abs())
    if t.height == 0:
        return None
    parts = [p for p in np.array_split(np.arange(t.height), min(bins, t.height)) if len(p)]
    starts = [t["posted_at"][int(p[0])] for p in parts]
    fmt = "%Y-%m-%d" if len({s.date() for s in starts}) == len(starts) else "%m-%d %H:%M"
    err = t["err"].to_numpy()
    return plots.bars([s.strftime(fmt) for s in starts], [float(err[p].mean()) for p in parts],
                      "error by posting time (test)", "MAE", [len(p) for p in parts], "bins of equal size, from")


def _target_plots(run: Run, preds: pl.DataFrame, posts: pl.DataFrame | None) -> list[str]:
    test = preds.filter(pl.col("split") == "test")
    if test.height == 0:
        return [note("no test predictions")]
    out = [img(plots.scatter(test["y"].to_numpy(), test["yhat"].to_numpy(), "test: predicted vs true"),
               f"{run.name}: predicted vs true"), breakdown.user_errors(preds)]
    if posts is None:
        return out + [note(f"the posts table of dataset {run.config.get('dataset')!r} is not in the cache: "
                           "no error by user activity or time")]
    t = test.join(posts.select("post_id", "posted_at", *([] if "user_id" in test.columns else ["user_id"])),
                  on="post_id")
    for fig, alt in ((_error_by_activity(t, user_training_stats(preds, posts)), "error by user activity"),
                     (_error_by_time(t), "error by time")):
        if fig is not None:
            out.append(img(fig, f"{run.name}: {alt}"))
    return out


def _precision_plots(run: Run, preds: pl.DataFrame, posts: pl.DataFrame | None = None) -> list[str]:
    test = preds.filter(pl.col("split") == "test")
    if test.height == 0:
        return [note("no test candidates")]
    p = precision_at_ks(test["user_id"].to_list(), test["label"].to_numpy(), test["score"].to_numpy())
    return [img(plots.bars([str(k) for k in p], list(p.values()), "test: P@k, mean over users", "precision",
                           xlabel="k"), f"{run.name}: P@k"), breakdown.user_aucs(preds)]


def _label_plots(run: Run, preds: pl.DataFrame, posts: pl.DataFrame | None = None) -> list[str]:
    test = preds.filter(pl.col("split") == "test")
    out = []
    if test.height:
        truth = test["labels"].to_list()
        if "confidence" in test.columns:  # every label's confidence (runs written since it was kept)
            every = test["confidence"].struct.unnest()
            conf = [dict(zip(every.columns, row)) for row in every.iter_rows()]
            title = "test: AP per label"
        else:  # older runs kept the top 3 only
            conf = [dict(zip(ls or [], cs or [])) for ls, cs in zip(test["top_labels"].to_list(),
                                                                   test["top_confidence"].to_list())]
            title = "test: AP per label (from the top-3 confidences kept per post; others count as 0)"
        labels = sorted({x for row in truth for x in row or []})
        aps = {lab: average_precision(np.array([lab in (row or []) for row in truth]),
                                      np.array([c.get(lab, 0.0) for c in conf])) for lab in labels}
        aps = {k: v for k, v in aps.items() if not math.isnan(v)}
        if aps:
            out.append(img(plots.bars(list(aps), list(aps.values()), title, "AP"), f"{run.name}: AP"))
        out += breakdown.pr_curves(run, test)
    cm = {k: v for k, v in ((run.metrics or {}).get("test") or {}).items() if k.startswith("p@")}
    if cm:
        ks = sorted(cm, key=lambda k: int(k[2:]))
        out.append(img(plots.bars(ks, [cm[k] for k in ks], "test: cross-modal P@k (tag queries)", "precision"),
                       f"{run.name}: cross-modal P@k"))
    else:
        out.append(note("no cross-modal P@k: the head has no tag outputs"))
    return out


@dataclass(frozen=True)
class PlotSet:
    """What `pipe report` draws from a run's predictions; a task names its set (`Task.plots`)."""

    draw: Callable[[Run, pl.DataFrame, pl.DataFrame | None], list[str]]  # (run, predictions, posts) -> HTML pieces
    columns: tuple[str, ...]  # the predictions.parquet columns it reads (those a run lacks are left out)
    needs_posts: bool = False  # reads the dataset's posts table (user activity, posting time)


PLOT_SETS = {  # y vs yhat, per-user errors, error by user activity and by time
    "targets": PlotSet(_target_plots, ("post_id", "split", "user_id", "y", "yhat"), needs_posts=True),
    # P@k of users' candidate lists, per-user AUC
    "precision_at_k": PlotSet(_precision_plots, ("split", "user_id", "label", "score")),
    # AP per label, PR curves per label, cross-modal P@k
    "labels": PlotSet(_label_plots, ("split", "labels", "confidence", "top_labels", "top_confidence")),
}


def plot_set(run: Run) -> PlotSet | None:
    """The plot set of the run's task (None: a task without plots)."""
    return PLOT_SETS.get(tasks.get(run.task).plots or "")


def run_section(run: Run, posts: pl.DataFrame | None, open_: bool) -> str:
    c = run.config
    facts = (f"head {run.head} · task {run.task} · dataset {c.get('dataset')} · status {run.status} · ablations "
             f"{', '.join(c.get('ablate', [])) or 'none'} · stores {', '.join(run.stores.values()) or 'none'}")
    parts = [f"<p>{html.escape(facts)}</p>"]
    if (run.metrics or {}).get("never_improved"):
        parts.append(note(next((n for n in reversed(c.get("notes") or []) if n.startswith("never improved")),
                               "never improved: the model did not beat its untrained start or a constant predictor")))
    figs, said = training_figure(run)
    parts += said
    figs += breakdown.importances(run)
    plotting = plot_set(run)
    if run.status != "done":
        parts.append(note(f"the run is {run.status}: no predictions to plot"))
    elif plotting is not None:
        try:
            preds = run.predictions(columns=plotting.columns)
        except PipeError as e:
            preds = None
            parts.append(note(str(e)))
        if preds is not None:
            figs += plotting.draw(run, preds, posts)
    shown = [f for f in figs if f.startswith("<img")]  # figures side by side; tables and notes below them
    body = "".join(parts) + '<div class="plots">' + "".join(shown) + "</div>" + "".join(f for f in figs if f not in shown)
    return (f'<section id="run-{html.escape(run.name)}"><details{" open" if open_ else ""}><summary>'
            f"{html.escape(run.name)}</summary>{body}</details></section>")


def build_report(runs: list[Run], cache: str | Path | None = None, title: str = "pipe report") -> str:
    """The whole page: one comparison table per task, then one section per run."""
    if not runs:
        raise PipeError("no runs to report on")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.task, []).append(r)
    memo: dict[tuple[str, str], Any] = {}
    body = [f"<p>{len(runs)} runs, {len(groups)} task(s): {html.escape(', '.join(groups))}. Test metrics are means "
            "over seeds with their 95 % Student-t interval [low, high] (± the sample std for a run without per-seed "
            "values), on the original target scale (a transformed target's own scale in "
            "<i>_scaled</i> columns); the best of each column among runs of the same dataset, split and target is "
            "shaded; Δ is an ablation's change against its "
            "full model; where runs ran the same seeds, the paired difference of the criterion to the best run of "
            "their group, seed by seed (mean, 95 % interval, seeds the best wins; within noise where the interval "
            "crosses zero).</p>"]
    body.append('<div class="verdict">' + "".join(f"<p>{html.escape(v)}</p>" for v in verdicts(comparison_rows(runs)))
                + "</div>")
    for task, group in groups.items():
        body.append(f"<h2>{html.escape(task)}</h2>" + comparison_table(task, group) + overlaid(group, comparison_rows(group)))
    body.append("<h2>Runs</h2>")
    for r in runs:
        plotting = plot_set(r)
        posts = run_posts(r, cache, memo) if plotting is not None and plotting.needs_posts else None
        body.append(run_section(r, posts, len(runs) < OPEN_BELOW))
    return page(title, "\n".join(body))


def write_report(runs: list[Run], out: str | Path, cache: str | Path | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, build_report(runs, cache).encode())
    return out
