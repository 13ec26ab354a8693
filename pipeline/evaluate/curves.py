"""The training curves of `pipe report`, read from each run's train_log.jsonl.

A torch head logs, at every evaluation, the step, the validation criterion
(`valid_<criterion>`) and the mean training loss since the previous evaluation
(`train_loss`); each repeat ends with a `repeat_end` event naming the step whose weights
were restored (`restored_step`; older runs: the last evaluation's `best_step`). A head
fitted in round after round (LightGBM) logs its validation curve with no training loss; a
head fitted in one go (svr, hisave, popularity) logs no finite criterion at all and gets a
note, never empty axes. Per run: train loss and validation criterion against the step, the
restored step marked. Per comparable group of runs (dataset, split, task, target): every
run's validation curve overlaid, labelled by run.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.evaluate import plots
from pipeline.evaluate.compare import comparable_key, metric_value, target_text
from pipeline.evaluate.markup import img, note
from pipeline.run.rundir import TRAIN_LOG, Run
from pipeline.train import tasks

MAX_OVERLAID = 10  # runs drawn on one overlay


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


@dataclass
class Curve:
    """One repeat's log: what each evaluation measured, and the step training restored."""

    steps: list[float] = field(default_factory=list)  # step of each evaluation
    valid: list[float | None] = field(default_factory=list)  # validation criterion there (None: not finite)
    train: list[float | None] = field(default_factory=list)  # mean training loss since the evaluation before
    restored: int | None = None  # step of the weights kept; None: unknown or a head fitted in one go
    best_step: int | None = None  # the latest evaluation's best step (runs from before `restored_step`)

    @property
    def has_valid(self) -> bool:
        return any(v is not None for v in self.valid)

    @property
    def has_train(self) -> bool:
        return any(v is not None for v in self.train)


def criterion(run: Run) -> str:
    """The criterion the run early-stopped on (its task's unless `--task-set` changed it)."""
    return (run.config.get("task") or {}).get("criterion") or tasks.get(run.task).criterion


def read_log(run: Run) -> dict[int, Curve]:
    """Repeat -> its curve, from train_log.jsonl (unreadable lines skipped; {} without a log)."""
    crit = criterion(run)
    out: dict[int, Curve] = {}
    try:
        lines = (run.dir / TRAIN_LOG).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if not isinstance(e, dict) or not isinstance(e.get("repeat", 0), int):
            continue
        c = out.setdefault(e.get("repeat", 0), Curve())
        if e.get("event") == "valid" and _finite(e.get("step")) is not None:
            c.steps.append(e["step"])
            c.valid.append(_finite(e.get(f"valid_{crit}")))
            c.train.append(_finite(e.get("train_loss")))
            if isinstance(e.get("best_step"), int):
                c.best_step = e["best_step"]
        elif e.get("event") == "repeat_end" and isinstance(e.get("restored_step"), int):
            c.restored = e["restored_step"]
    for c in out.values():
        if c.restored is None and c.best_step is not None:
            c.restored = c.best_step
    return {k: c for k, c in sorted(out.items()) if c.has_valid}  # no finite value: no curve, no empty axes


def validation_curves(run: Run) -> dict[str, tuple[list[float], list[float | None]]]:
    """Per repeat: steps and the validation criterion (repeats without a finite value left out)."""
    return {f"repeat {k}": (c.steps, c.valid) for k, c in read_log(run).items()}


def training_figure(run: Run) -> tuple[list[str], list[str]]:
    """(figures, notes) of a run's training: train loss and validation criterion by step with
    the restored step marked, or a note when the log has nothing to draw."""
    log = read_log(run)
    if not log:
        return [], [note("no training curve: the head is fitted in one go (no step log with a finite "
                         "validation value in train_log.jsonl)")]
    crit = criterion(run)
    series = {f"repeat {k}": c for k, c in log.items()}
    trained = any(c.has_train for c in log.values())
    title = "train vs valid" if trained else "validation by step (no training loss logged)"
    notes = [] if any(c.restored is not None for c in log.values()) else [
        note("no restored step recorded: the model kept is the last or the best round, as the head decides")]
    return [img(plots.train_valid(series, crit, title), f"{run.name}: validation")], notes


def overlaid(runs: list[Run], rows: list[dict[str, Any]]) -> str:
    """One figure per comparable group (dataset, split, task, target) with two or more runs
    that have a validation curve: repeat 0 of each, labelled by run, its restored step starred."""
    groups: dict[tuple, list[tuple[Run, dict[str, Any]]]] = {}
    for run, row in zip(runs, rows):
        groups.setdefault((*comparable_key(row), criterion(run)), []).append((run, row))
    out = []
    for key, members in groups.items():
        logs = [(run, row, log[min(log)]) for run, row in members if (log := read_log(run))]
        if len(logs) < 2:
            continue
        if len(logs) > MAX_OVERLAID:  # the best by the test criterion: a legend of 50 runs reads as none
            sign = 1 if tasks.get(key[2]).higher_is_better else -1
            logs.sort(key=lambda t: -sign * (metric_value(t[1], key[-1]) or -sign * math.inf))
        drawn = {run.name: c for run, _, c in logs[:MAX_OVERLAID]}
        row = members[0][1]
        shown = f" (the best {len(drawn)} of {len(logs)})" if len(logs) > len(drawn) else ""
        title = f"{row['dataset']} · {target_text(row)}: validation{shown}"
        fig = plots.curves({n: (c.steps, c.valid) for n, c in drawn.items()}, "step", f"valid {key[-1]}", title,
                           marks={n: c.restored for n, c in drawn.items() if c.restored is not None})
        out.append(img(fig, f"overlay: {row['dataset']} {target_text(row)}"))
    if not out:
        return ""
    return ('<h3>Validation curves, runs overlaid</h3><p class="note">repeat 0 of each run; ★ its restored step. '
            "Heads fitted in one go have no curve.</p>" + '<div class="plots">' + "".join(out) + "</div>")

