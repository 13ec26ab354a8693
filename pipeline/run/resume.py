"""`pipe train --resume RUN`: a stopped run (Ctrl-C, SIGTERM, a killed process) continued to the
result an uninterrupted run reaches.

The run is planned again from the options its config.json recorded; the data, split, stores,
config and seeds must come out as they did (anything else is refused: the result could not
be the same). Its folder is taken over again, repeats whose `repeat_end` is in the log are
kept as they are, and the repeat in progress continues from its checkpoint (a torch head:
weights, optimizer, step, best so far, patience and random state, pipeline/train/checkpoint.py)
or starts again (a head fitted in one go, whose fit is deterministic). A finished run, one
still being written, and an unknown name are refused in one line.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError
from pipeline.core.io import json_safe
from pipeline.run.roles import describe_stores
from pipeline.run.rundir import RunWriter, finished_repeats, load_run
from pipeline.run.train import RunPlan, TrainOptions, complete, plan_run
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.loggers import open_logger


def _plain(obj: Any) -> Any:
    """As config.json holds it (a JSON round trip), so a new plan compares with the recorded one."""
    return json.loads(json.dumps(json_safe(obj)))


def saved_options(run: Any) -> TrainOptions:
    """The TrainOptions the run started with, in its own folder and cache."""
    saved = run.config.get("options")
    if not isinstance(saved, dict):
        raise PipeError(f"run {run.name} was written before `pipe train --resume` existed (its config.json records "
                        "no options); train it again")
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    opts = {k: v for k, v in saved.items() if k in fields}
    opts.update(name=run.name, runs=str(run.dir.parent), cache=run.config.get("cache", opts.get("cache")))
    return TrainOptions(**opts)


def changes(plan: RunPlan, config: dict[str, Any]) -> list[str]:
    """What the new plan decides differently from the run's config.json."""
    stores = {r: s["manifest_sha256"] for r, s in _plain(describe_stores(plan.stores)).items()}
    recorded = {r: s.get("manifest_sha256") for r, s in (config.get("stores") or {}).items()}
    pairs = [("head config", config_to_dict(plan.config), config.get("config")), ("seeds", plan.seeds, config.get("seeds")),
             ("stores", stores, recorded), ("split", plan.parts.counts, config.get("posts"))]
    return [what for what, now, then in pairs if _plain(now) != _plain(then)]


def resume(ref: str | Path, runs: str | Path | None = None, say: Callable[[str], None] = lambda m: None,
           watch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Continue the stopped run `ref` (a folder, or a name under the runs root); its folder."""
    run = load_run(ref, runs)  # an unknown name: "did you mean"
    status = run.status
    if status == "done":
        raise PipeError(f"run {run.name} is finished (metrics.json written): nothing to resume")
    if status == "running":
        raise PipeError(f"run {run.name} is being written by a running `pipe train`: nothing to resume yet")
    opts = saved_options(run)
    if opts.finetune:
        raise PipeError(f"run {run.name} fine-tunes a backbone (--finetune), which --resume does not continue; "
                        "train it again")
    plan = plan_run(opts)
    changed = changes(plan, run.config)
    if changed:
        raise PipeError(f"run {run.name} cannot be resumed to the same result: its {', '.join(changed)} changed "
                        "since it started (a store re-extracted, new posts, other code?); train it again")
    logger = open_logger(opts.logger)
    writer = RunWriter(run.dir.parent, run.name, reopen=True)
    done = finished_repeats(run.dir)
    k = min(set(range(opts.repeats)) - set(done), default=opts.repeats)
    saved = Checkpoint(writer.checkpoint_path(k)).load() if k < opts.repeats else None
    where = f"its checkpoint at step {saved['step']:,}" if saved else "the start of the repeat"
    writer.log({"event": "resume", "repeat": k, "step": saved["step"] if saved else 0})
    say(f"resuming run {run.dir} ({status}): repeat {min(k + 1, opts.repeats)}/{opts.repeats} from {where}")
    return complete(plan, writer, done, say, watch, logger)
