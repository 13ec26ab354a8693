"""`pipe train`: posts (+ side tables) -> the head's task splits them -> role stores -> K
seeded fits -> a run directory.

The orchestration every head shares, neural or not, whatever its task: it resolves which
store fills each of the head's roles, lets the task (pipeline/train/tasks) build the
train/valid/test parts, fits `repeats` copies with seeds `seed, seed+1, ...`, evaluates
each with the task's metrics on valid and test, and writes the run (see
`pipeline/run/rundir.py`). Heads see labels only through the `HeadData` they are given,
so statistics they compute in `fit` come from the training part. Run settings (device,
threads, prefetch, dask) go to `head.settings`, never into the saved config. Each
evaluation of a torch head is logged to `train_log.jsonl` as it happens; a run stopped by
Ctrl-C, SIGTERM or an error is marked `interrupted`.
"""
from __future__ import annotations

import dataclasses
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

import heads
from pipeline.train.regime import describe as describe_regime
from pipeline.train.regime import resolve_regime
from pipeline.head.base import Head
from pipeline.core import paths
from pipeline.core.config import build_config, config_to_dict, parse_sets, with_seed
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts, load_side_tables
from pipeline.data.splits import parse_split
from pipeline.extract.build import reads_images
from pipeline.store.coverage import check_coverage
from pipeline.run import finetune
from pipeline.train import tasks
from pipeline.train.data import RunSettings
from pipeline.train.metrics import mean_std
from pipeline.run.roles import describe_stores, resolve_roles
from pipeline.run.rundir import RunWriter, default_run_name, git_revision, library_versions, now_utc

PARTS = ("train", "valid", "test")
SETTINGS = tuple(f.name for f in dataclasses.fields(RunSettings))  # --set keys that are run settings


@dataclass
class TrainOptions:
    dataset: str  # posts table and stores under <cache>/<dataset>/
    head: str  # registry name
    stores: dict[str, str] = field(default_factory=dict)  # role -> extractor id or unique prefix
    split: str | None = None  # see pipeline.data.splits.parse_split; None: the task's default
    sets: list[str] = field(default_factory=list)  # "key=value" overrides: head config, run settings, task aliases
    task_sets: dict[str, Any] = field(default_factory=dict)  # --task-set: the task's config (pipeline/train/tasks)
    ablate: list[str] = field(default_factory=list)  # appended to the config's `ablate`
    repeats: int = 1  # seeds seed .. seed+repeats-1
    name: str | None = None  # run folder name; default head + ablations + timestamp
    runs: str | Path | None = None  # runs root
    cache: str | Path | None = None  # store root
    target: str = "score"  # the posts column a regression head learns
    scheduler: str | None = None  # dask scheduler address (heads that train on dask)
    dask_workers: int | None = None  # or a local dask cluster of this many processes (same heads)
    min_coverage: float = 0.95  # refuse when a role's store has rows for fewer of the posts (pipeline/store/coverage.py)
    keep_interrupted: bool = False  # an interrupted run keeps its best-so-far model in model/
    target_transform: str | None = None  # none | log1p | max (regression; pipeline/train/targets.py); None: the head's
    min_target: float | None = None  # keep posts whose target is >= this (regression); None: all
    finetune: str | None = None  # fill the head's visual role with this backbone trained end to end (finetune.py)
    weights: str | None = None  # --finetune: imagenet | random | PATH (default imagenet)
    image_size: int | None = None  # --finetune: input side in pixels (default: the extractor's)


def settings_and_config(head: str, cls: type[Head], opts: TrainOptions) -> tuple[RunSettings, Any, Any]:
    """Split `--set` pairs into run settings (device, threads, prefetch, dask), the head's config
    and, with `--task-set`, the task's config (`--set` gives the task's aliases: negatives, window, tags)."""
    given = parse_sets(opts.sets)
    task_cls = tasks.get(cls.task)
    aliased = {k: given.pop(k) for k in task_cls.ALIASES if k in given}
    twice = sorted(set(aliased) & set(opts.task_sets))
    if twice:
        raise PipeError(f"{', '.join(twice)}: given with both --set and --task-set; give it once")
    task_config = task_cls.build_config(cls, {**aliased, **opts.task_sets})
    run_keys = {k: v for k, v in given.items() if k in SETTINGS}
    model_sets = [f"{k}={v}" for k, v in given.items() if k not in SETTINGS]
    for key, value in (("scheduler", opts.scheduler), ("dask_workers", opts.dask_workers)):
        if value is not None and value != "":
            run_keys[key] = str(value)
    if (run_keys.get("scheduler") or run_keys.get("dask_workers")) and not getattr(cls, "on_dask", False):
        raise PipeError(f"--scheduler / --dask-workers are for heads that train on dask (lightgbm); {head!r} does not")
    settings = build_config(head, RunSettings, [f"{k}={v}" for k, v in run_keys.items()])
    return settings, build_config(head, cls.Config, model_sets, opts.ablate), task_config


def _history_lines(head: Head) -> list[dict[str, Any]]:
    hist = getattr(head, "history", None) or []
    return [h if isinstance(h, dict) else {"step": i, "value": h} for i, h in enumerate(hist)]


class _Interrupted(Exception):
    """SIGTERM, turned into an exception so the run is marked like Ctrl-C."""


def schedule_cost(config: Any, n_train: int) -> str | None:
    """A plain warning when a torch head's schedule implies far more than a few epochs of its
    training part (the defaults are the paper's, sized for 100K+ posts)."""
    if not all(hasattr(config, k) for k in ("eval_every", "patience", "batch_size", "max_steps")) or n_train <= 0:
        return None
    steps = config.max_steps if config.max_steps is not None else config.eval_every * config.patience
    epochs = steps * config.batch_size / n_train
    if epochs <= 20:
        return None
    least = "" if config.max_steps is not None else "at least "
    return (f"this schedule runs {least}{steps:,} steps of {config.batch_size} = {epochs:,.0f} epochs of the "
            f"{n_train:,} training examples; for a quick run use e.g. --set max_steps=... eval_every=... patience=...")


def prepare(opts: TrainOptions) -> tuple:
    """What a run needs before fitting, shared by `pipe train` and `pipe tune`: the head class,
    run settings, its config with the data-aware regime applied (pipeline/train/regime.py), the task,
    split, stores, the parts, the notes and the regime decided (None for a head without one)."""
    cls = heads.get(opts.head)
    ft_sets, sets = finetune.split_sets(opts.sets)  # finetune_blocks, backbone_lr, ... are not the head's
    opts = dataclasses.replace(opts, sets=sets)
    settings, config, task_config = settings_and_config(opts.head, cls, opts)
    task_cls = tasks.get(cls.task)
    task = task_cls(opts.target, task_config, **task_cls.options(cls, opts.target_transform, opts.min_target))
    roles = cls(config).roles()
    ft = finetune.setup(opts, cls, ft_sets, settings, roles)
    split = parse_split(opts.split, task.default_split)
    posts = load_posts(opts.dataset, opts.cache)
    stores, notes = resolve_roles({r: s for r, s in roles.items() if not ft or r != ft.role}, opts.dataset, opts.cache,
                                  opts.stores)
    parts = task.prepare(posts, load_side_tables(opts.dataset, opts.cache), split, stores)
    data = parts.data
    covered = pl.concat([d.posts for d in data.values()], how="diagonal_relaxed").unique("post_id")
    notes += check_coverage(stores, covered, opts.min_coverage, opts.dataset, image_store=reads_images)  # refuses a partial store
    notes += parts.notes + (ft.attach(parts.data) if ft else [])
    parts.finetune = ft
    n_train = len(data["train"]) if data["train"].examples is None else data["train"].examples.height
    config, regime = resolve_regime(cls, config, n_train, set(parse_sets(opts.sets)))
    notes += [n for n in (describe_regime(regime),) if n]
    cost = schedule_cost(config, n_train) if not regime or regime["regime"] != "small" else None  # scaled on purpose
    if cost:
        notes.append(cost)
    return cls, settings, config, task, split, stores, parts, notes, regime


def train(opts: TrainOptions, say: Callable[[str], None] = lambda m: None,
          watch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train and evaluate; returns the run directory. `watch` sees each validation evaluation
    of a torch head (step, metric, best, evaluations left, samples/s, ETA) as it happens."""
    if opts.repeats < 1:
        raise PipeError(f"--repeats must be at least 1, got {opts.repeats}")
    cls, settings, config, task, split, stores, parts, notes, regime = prepare(opts)
    data = parts.data
    for n in notes:
        say(n)

    ablate = tuple(getattr(config, "ablate", ()) or ())
    run = RunWriter(opts.runs, opts.name or default_run_name(opts.head, ablate), unique=opts.name is None)
    base_seed = int(getattr(config, "seed", 0) or 0)
    seeds = [base_seed + k for k in range(opts.repeats)]
    run.write_config({
        "name": run.dir.name, "created_at": now_utc(), "head": opts.head, "task": task.describe(),
        "config": config_to_dict(config), "settings": config_to_dict(settings),
        "ablate": list(ablate), "dataset": opts.dataset, "cache": str(paths.cache_root(opts.cache).resolve()),
        "stores": describe_stores(stores), "split": {**split.to_json(), "parts": parts.summary},
        "posts": parts.counts, "repeats": opts.repeats, "seeds": seeds,
        "notes": notes, "regime": regime, "versions": library_versions(), "git": git_revision(),
        **({"finetune": parts.finetune.describe()} if parts.finetune else {}),
    })
    for name, frame in parts.files.items():
        run.write_table(name, frame)
    say(f"run {run.dir}: {opts.head} ({task.name}) on {opts.dataset} "
        f"({', '.join(f'{r}={s.extractor_id}' for r, s in stores.items()) or 'no stores'}); "
        f"split {split.text}: " + ", ".join(f"{p} {len(d) if d.examples is None else d.examples.height}"
                                            for p, d in data.items()))
    run.log({"event": "start", "repeats": opts.repeats, "seeds": seeds})

    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise _Interrupted("SIGTERM")

    repeats: list[dict[str, Any]] = []
    head: Head | None = None
    try:
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread: leave signals alone
            pass
        for k, seed in enumerate(seeds):
            head = cls(with_seed(config, seed))
            head.settings = settings
            if parts.finetune:
                parts.finetune.wrap(head, data)
            if hasattr(head, "progress"):  # each evaluation reaches the log (and the watcher) as it happens
                def progress(entry: dict[str, Any], k: int = k, seed: int = seed) -> None:
                    run.log({"event": "valid", "repeat": k, "seed": seed, **entry})
                    if watch is not None:
                        watch({"repeat": k, "repeats": opts.repeats, **entry})
                head.progress = progress
            t0 = time.perf_counter()
            head.fit(data["train"], data["valid"])
            fit_s = time.perf_counter() - t0
            if parts.finetune:  # predictions come from a store extracted with the fine-tuned backbone
                for n in parts.finetune.finish(head, k, run, data, opts.dataset, opts.cache):
                    say(n)
            if not hasattr(head, "progress"):
                for h in _history_lines(head):
                    run.log({"event": "valid", "repeat": k, "seed": seed, **h})
            wanted = PARTS if k == 0 else ("valid", "test")
            outs = {p: task.check(head.predict(data[p]), data[p], opts.head, p) for p in wanted}
            res = {"repeat": k, "seed": seed, "fit_seconds": round(fit_s, 3),
                   **{p: task.metrics(data[p], outs[p]) for p in ("valid", "test")}}
            repeats.append(res)
            run.log({"event": "repeat_end", **res})
            c = task.criterion
            say(f"repeat {k + 1}/{opts.repeats} (seed {seed}): fit {fit_s:.1f}s, valid {c} {res['valid'][c]:.4f}, "
                f"test {c} {res['test'][c]:.4f}")
            if k == 0:
                head.save(run.model_dir)
                run.write_predictions(pl.concat([task.predictions(data[p], outs[p], p) for p in PARTS],
                                                how="diagonal_relaxed"))
    except (KeyboardInterrupt, _Interrupted) as e:
        run.mark_interrupted(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        if opts.keep_interrupted and not repeats and getattr(head, "model", None) is not None:
            head.save(run.model_dir)  # the trainer left the best weights so far in the model
            say(f"kept the best model so far in {run.model_dir}")
        raise
    except Exception as e:
        run.mark_interrupted(f"{type(e).__name__}: {e}")
        raise
    finally:
        if parts.finetune:
            parts.finetune.close()
        try:
            signal.signal(signal.SIGTERM, old_term)
        except ValueError:
            pass
    valid_mean, valid_std = mean_std((r["valid"] for r in repeats), task.metrics_names)
    test_mean, test_std = mean_std((r["test"] for r in repeats), task.metrics_names)
    run.write_metrics({"valid": valid_mean, "test": test_mean,
                       "std": {"valid": valid_std, "test": test_std}, "repeats": repeats})
    run.log({"event": "end", f"test_{task.criterion}": test_mean[task.criterion]})
    return run.dir
