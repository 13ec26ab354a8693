"""`pipe train --dry-run` (Lightning's `fast_dev_run`): the whole training path on one batch.

It plans the run as `pipe train` would (data, task, split, stores, regime), then fits one
training batch of a torch head (validated before and after it) or the whole fit of a head
fitted in one go, predicts every part, saves the model and writes the run's files, all under
a folder the caller removes. What it checked comes back as lines; the caller evaluates the
run folder too (`pipeline.api.dry_run`), so the evaluate path is checked as well.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pipeline.run.train import TrainOptions, complete, open_run, plan_run
from pipeline.train.loop import TrainConfig


def dry_run_fit(opts: TrainOptions, say: Callable[[str], None]) -> tuple[Path, list[str]]:
    """The run of `opts` cut to one batch, one repeat, in `opts.runs`; its folder and the lines checked."""
    opts = dataclasses.replace(opts, repeats=1, logger=None)
    plan = plan_run(opts)
    for n in plan.notes:
        say(n)
    counts = ", ".join(f"{p} {len(d) if d.examples is None else d.examples.height:,}" for p, d in plan.data.items())
    checked = [f"prepared {opts.dataset} for {opts.head} ({plan.task.name}, split {plan.split.text}): {counts}; stores "
               + (", ".join(f"{r}={s.extractor_id}" for r, s in plan.stores.items()) or "none")]
    batch = None
    if isinstance(plan.config, TrainConfig):
        batch = min(plan.config.batch_size, plan.n_train)
        plan.config = dataclasses.replace(plan.config, max_steps=1, eval_every=1, patience=1)
    entries: list[dict[str, Any]] = []
    run_dir = complete(plan, open_run(plan, say), {}, say, watch=entries.append)
    c = plan.task.criterion
    if batch is not None:
        valid = [e.get(f"valid_{c}") for e in entries]
        checked.append(f"trained 1 batch of {batch:,} examples; validated {len(entries)} times (valid {c}: "
                       + ", ".join("n/a" if v is None else f"{v:.4f}" for v in valid) + ")")
    else:
        checked.append(f"fitted {opts.head} as configured (not a torch head: its fit is not cut to one batch)")
    checked.append("predicted train, valid and test; wrote the model, predictions and metrics")
    return run_dir, checked

