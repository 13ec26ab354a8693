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
Ctrl-C, SIGTERM or an error is marked `interrupted` (pipeline/run/interrupt.py) and a torch
head's fit checkpoints at every evaluation, so `pipe train --resume` (resume.py) continues it.

`plan_run` decides everything before fitting (a `RunPlan`, shared with `pipe tune`); `train`
opens the run folder and `complete` calls `fit_one` per repeat inside one interruption context
(a resumed run: the repeats not yet done).
`--set` arrives parsed (`TrainOptions.sets`, {key: value}) and is split here once into run
settings, fine-tuning settings and the head's config.
"""
from __future__ import annotations

import dataclasses
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
from pipeline.core.config import build_config, config_to_dict, with_seed
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts, load_side_tables
from pipeline.data.splits import SplitSpec, parse_split
from pipeline.extract.build import reads_images
from pipeline.store.coverage import check_coverage
from pipeline.run import finetune
from pipeline.train import tasks
from pipeline.train.data import HeadData, RunSettings
from pipeline.train.checkpoint import Checkpoint
from pipeline.train.loggers import MetricLogger, open_logger
from pipeline.train.loop import TrainConfig
from pipeline.train.metrics import mean_std
from pipeline.train.tasks.base import Parts
from pipeline.run.interrupt import Fitting, interruption
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
    sets: dict[str, Any] = field(default_factory=dict)  # --set key -> CLI string or typed value: config, settings,
    # finetune, and the task's aliases (negatives, window, window_scope, tags)
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
    logger: str | None = None  # tensorboard | mlflow: each evaluation logged there too (pipeline/train/loggers.py)


@dataclass
class RunPlan:
    """What a run decided before fitting (`plan_run`), shared by `pipe train` and `pipe tune`."""

    options: TrainOptions  # what was asked
    head_cls: type[Head]  # the registered head
    settings: RunSettings  # how to run (device, threads, prefetch, dask): never saved with the model
    config: Any  # the head's config, the data-aware regime applied (pipeline/train/regime.py)
    raw_config: Any  # the config as asked, before the regime (a `pipe tune` trial re-resolves it)
    explicit: set[str]  # config keys given with --set: the regime never changes them
    ablate: tuple[str, ...]  # the config's ablations
    seed: int  # the config's seed: repeat k trains with seed + k
    task: tasks.Task  # splits, loss, criterion, metrics
    split: SplitSpec  # the resolved --split
    stores: dict[str, Any]  # role -> feature store (the role fine-tuning fills is not among them)
    parts: Parts  # train, valid, test and what the run records about them
    notes: list[str]  # said to the user and kept in config.json
    regime: dict[str, Any] | None  # what the regime decided; None for a head without one
    finetune: finetune.Finetune | None  # --finetune: the backbone each repeat trains through the head's hook
    constant: float | None = None  # the valid criterion of the task's constant predictor (None: unknown)

    @property
    def data(self) -> dict[str, HeadData]:
        return self.parts.data

    @property
    def n_train(self) -> int:
        """Training units: posts, or a ranking task's (positive, negatives) groups (`Task.training_units`)."""
        return self.task.training_units(self.data["train"])

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.options.repeats)]


def run_settings(cls: type[Head], given: dict[str, Any], opts: TrainOptions) -> RunSettings:
    """The run settings of `--set` (device, threads, prefetch) with --scheduler / --dask-workers."""
    keys = dict(given)
    for key, value in (("scheduler", opts.scheduler), ("dask_workers", opts.dask_workers)):
        if value is not None and value != "":
            keys[key] = value
    if any(keys.get(k) not in (None, "") for k in ("scheduler", "dask_workers")) and not cls.on_dask:
        raise PipeError(f"--scheduler / --dask-workers are for heads that train on dask (lightgbm); {cls.name!r} does not")
    return build_config(cls.name, RunSettings, keys)


def _history_lines(head: Head) -> list[dict[str, Any]]:
    return [h if isinstance(h, dict) else {"step": i, "value": h} for i, h in enumerate(head.history)]


def schedule_cost(config: Any, n_train: int) -> str | None:
    """A plain warning when a torch head's schedule implies far more than a few epochs of its
    training part (the defaults are the paper's, sized for 100K+ posts)."""
    if not isinstance(config, TrainConfig) or n_train <= 0:
        return None
    steps = config.max_steps if config.max_steps is not None else config.eval_every * config.patience
    epochs = steps * config.batch_size / n_train
    if epochs <= 20:
        return None
    least = "" if config.max_steps is not None else "at least "
    return (f"this schedule runs {least}{steps:,} steps of {config.batch_size} = {epochs:,.0f} epochs of the "
            f"{n_train:,} training examples; for a quick run use e.g. --set max_steps=... eval_every=... patience=...")


def plan_run(opts: TrainOptions) -> RunPlan:
    """What a run needs before fitting, shared by `pipe train` and `pipe tune`: the head class,
    run settings, its config with the data-aware regime applied, the task, split, stores, the
    parts, the notes, the regime decided and the fine-tuning (None without --finetune)."""
    cls = heads.get(opts.head)
    task_cls = tasks.get(cls.task)
    aliased = {k: v for k, v in opts.sets.items() if k in task_cls.ALIASES}  # `--set negatives=...` and the like
    twice = sorted(set(aliased) & set(opts.task_sets))
    if twice:
        raise PipeError(f"{', '.join(twice)}: given with both --set and --task-set; give it once")
    task_config = task_cls.build_config(cls, {**aliased, **opts.task_sets})
    sets = {k: v for k, v in opts.sets.items() if k not in aliased}
    ft_sets = {k: v for k, v in sets.items() if k in finetune.KEYS}  # finetune_blocks, backbone_lr, ...
    run_keys = {k: v for k, v in sets.items() if k in SETTINGS}
    model_sets = {k: v for k, v in sets.items() if k not in finetune.KEYS and k not in SETTINGS}
    settings = run_settings(cls, run_keys, opts)
    raw = build_config(opts.head, cls.Config, model_sets, opts.ablate)
    task = task_cls(opts.target, task_config, **task_cls.options(cls, opts.target_transform, opts.min_target))
    head = cls(raw)
    roles = head.roles()
    ft = finetune.setup(opts.finetune, opts.weights, opts.image_size, cls, ft_sets, settings, roles)
    split = parse_split(opts.split, task.default_split)
    posts, side = load_posts(opts.dataset, opts.cache), load_side_tables(opts.dataset, opts.cache)
    task.check_data(posts, side, opts.head, opts.dataset)  # the head's task's data, before any store
    stores, notes = resolve_roles({r: s for r, s in roles.items() if not ft or r != ft.role}, opts.dataset, opts.cache,
                                  opts.stores)
    parts = task.prepare(posts, side, split, stores)
    covered = pl.concat([d.posts for d in parts.data.values()], how="diagonal_relaxed").unique("post_id")
    notes += check_coverage(stores, covered, opts.min_coverage, opts.dataset, image_store=reads_images)  # refuses a partial store
    notes += parts.notes + (ft.attach(parts.data) if ft else [])
    plan = RunPlan(options=opts, head_cls=cls, settings=settings, config=raw, raw_config=raw, explicit=set(model_sets),
                   ablate=head.ablate, seed=head.seed, task=task, split=split, stores=stores, parts=parts, notes=notes,
                   regime=None, finetune=ft)
    plan.config, plan.regime = resolve_regime(cls, raw, plan.n_train, plan.explicit)
    plan.notes += [n for n in (describe_regime(plan.regime),) if n]
    if isinstance(plan.config, TrainConfig) and 0 < plan.n_train < plan.config.batch_size:
        plan.notes.append(f"batch_size {plan.config.batch_size} capped to the {plan.n_train:,} training examples")
        plan.config = dataclasses.replace(plan.config, batch_size=plan.n_train)
    plan.constant = task.constant_criterion(plan.data["train"], plan.data["valid"])
    cost = schedule_cost(plan.config, plan.n_train) if not plan.regime or plan.regime["regime"] != "small" else None
    if cost:  # the small regime scales the schedule on purpose
        plan.notes.append(cost)
    return plan


def open_run(plan: RunPlan, say: Callable[[str], None]) -> RunWriter:
    """The run folder with config.json (everything the plan decided) and the task's extra files."""
    opts, task, split, parts, stores = plan.options, plan.task, plan.split, plan.parts, plan.stores
    run = RunWriter(opts.runs, opts.name or default_run_name(opts.head, plan.ablate), unique=opts.name is None)
    run.write_config({
        "name": run.dir.name, "created_at": now_utc(), "head": opts.head, "task": task.describe(),
        "config": config_to_dict(plan.config), "settings": config_to_dict(plan.settings),
        "ablate": list(plan.ablate), "dataset": opts.dataset, "cache": str(paths.cache_root(opts.cache).resolve()),
        "stores": describe_stores(stores), "split": {**split.to_json(), "parts": parts.summary},
        "posts": parts.counts, "repeats": opts.repeats, "seeds": plan.seeds,
        "notes": plan.notes, "regime": plan.regime, "versions": library_versions(), "git": git_revision(),
        **({"finetune": plan.finetune.describe()} if plan.finetune else {}),
        "options": options_to_json(opts),  # what `pipe train --resume` plans the run again from
    })
    for name, frame in parts.files.items():
        run.write_table(name, frame)
    say(f"run {run.dir}: {opts.head} ({task.name}) on {opts.dataset} "
        f"({', '.join(f'{r}={s.extractor_id}' for r, s in stores.items()) or 'no stores'}); "
        f"split {split.text}: " + ", ".join(f"{p} {len(d) if d.examples is None else d.examples.height}"
                                            for p, d in plan.data.items()))
    run.log({"event": "start", "repeats": opts.repeats, "seeds": plan.seeds})
    return run


def check_stores(plan: RunPlan) -> None:
    """A store removed or replaced under a running train (`pipe store rm`, a re-extract of the
    same id): stop with a message, never finish on deleted files or name a store that is gone.
    Checked at every evaluation and after each fit (a manifest read: cheap)."""
    from pipeline.store import Manifest

    for role, store in plan.stores.items():
        try:
            now = Manifest.load(store.directory).digest
        except PipeError:
            now = None
        if now != store.manifest.digest:
            raise PipeError(f"the {role} store {store.extractor_id} of dataset {plan.options.dataset!r} was "
                            f"{'removed' if now is None else 'replaced'} while training; the run stops (marked "
                            "interrupted): train again on the store as it is now")


def fit_one(plan: RunPlan, k: int, seed: int, run: RunWriter, fitting: Fitting, say: Callable[[str], None],
            watch: Callable[[dict[str, Any]], None] | None = None, logger: MetricLogger | None = None
            ) -> dict[str, Any]:
    """Repeat k: fit a head seeded `seed` (each evaluation logged as it happens, to `logger` too),
    evaluate it on valid and test; repeat 0 also saves the model and the predictions. A torch
    head checkpoints at every evaluation and continues from the checkpoint a stopped fit left
    (`pipe train --resume`). Returns the repeat's metrics."""
    opts, task, data = plan.options, plan.task, plan.data
    head = plan.head_cls(with_seed(plan.config, seed))
    head.settings = plan.settings
    head.checkpoint = Checkpoint(run.checkpoint_path(k))
    fitting.head = head
    if plan.finetune:
        plan.finetune.begin(head, data)
    reported: list[int] = []

    def record(entry: dict[str, Any]) -> None:  # train_log.jsonl and --logger
        run.log({"event": "valid", "repeat": k, "seed": seed, **entry})
        if logger is not None:
            logger.log(entry, k)

    fitting.repeat, fitting.last = k, None

    def progress(entry: dict[str, Any]) -> None:
        check_stores(plan)
        reported.append(entry["step"])
        fitting.last = entry
        record(entry)
        if watch is not None:
            watch({"repeat": k, "repeats": opts.repeats, **entry})

    t0 = time.perf_counter()
    head.fit(data["train"], data["valid"], progress=progress)
    fit_s = time.perf_counter() - t0
    check_stores(plan)
    if plan.finetune:  # predictions come from a store extracted with the fine-tuned backbone
        for n in plan.finetune.finish(head, k, run, data, opts.dataset, opts.cache):
            say(n)
    found = head.fit_notes()
    for n in found:
        say(f"repeat {k + 1}: {n}" if opts.repeats > 1 else n)
    if k == 0 and found:
        run.add_notes(found)
    if not reported:  # a head that evaluates only at the end (lightgbm, svr): its curve now
        for h in _history_lines(head):
            record(h)
    wanted = PARTS if k == 0 else ("valid", "test")
    outs = {p: task.check(head.predict(data[p]), data[p], opts.head, p) for p in wanted}
    res = {"repeat": k, "seed": seed, "fit_seconds": round(fit_s, 3),
           **{p: task.metrics(data[p], outs[p]) for p in ("valid", "test")}}
    res["restored_step"] = head.restored_step
    res["never_improved"] = head.restored_step == 0 or not task.improves(res["valid"][task.criterion], plan.constant)
    if k == 0:
        run.save_model(head)  # atomic: a full disk never leaves a truncated model
        run.write_predictions(chunk for p in PARTS for chunk in task.prediction_chunks(data[p], outs[p], p))
    run.log({"event": "repeat_end", **res})  # last: a resumed run counts the repeat as done from here on
    head.checkpoint.remove()
    fitting.done += 1
    c = task.criterion
    say(f"repeat {k + 1}/{opts.repeats} (seed {seed}): fit {fit_s:.1f}s, valid {c} {res['valid'][c]:.4f}, "
        f"test {c} {res['test'][c]:.4f}")
    return res


def never_improved_note(plan: RunPlan, repeats: list[dict[str, Any]]) -> str | None:
    """The note of a run with a repeat that never improved on its start (restored step 0) or
    on the task's constant predictor, with what to try; None when every repeat did."""
    flat = [r for r in repeats if r["never_improved"]]
    if not flat:
        return None
    task, c = plan.task, plan.task.criterion
    why = []
    if any(r["restored_step"] == 0 for r in flat):
        why.append("the best weights were the untrained ones (restored step 0)")
    if any(not task.improves(r["valid"][c], plan.constant) for r in flat) and plan.constant is not None:
        vals = ", ".join(f"{r['valid'][c]:.4f}" for r in flat)
        why.append(f"valid {c} {vals} never beat {task.constant_predictor}'s {plan.constant:.4f}")
    which = "" if len(repeats) == 1 else f" (repeat {', '.join(str(r['repeat'] + 1) for r in flat)} of {len(repeats)})"
    tries = ("a learning rate 3-10x smaller or larger (--set lr=...), a longer schedule (--set max_steps=N patience=N), "
             "--set regime=small, `pipe tune`, or a simpler head (lightgbm)" if isinstance(plan.config, TrainConfig)
             else "other settings (`pipe tune`), more training data, or another head")
    return f"never improved{which}: {'; '.join(why)}; the model is kept, but try {tries}"


def train(opts: TrainOptions, say: Callable[[str], None] = lambda m: None,
          watch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Train and evaluate; returns the run directory. `watch` sees each validation evaluation
    of a torch head (step, metric, best, evaluations left, samples/s, ETA) as it happens."""
    if opts.repeats < 1:
        raise PipeError(f"--repeats must be at least 1, got {opts.repeats}")
    plan = plan_run(opts)
    logger = open_logger(opts.logger)  # a missing package refuses before the run folder
    for n in plan.notes:
        say(n)
    return complete(plan, open_run(plan, say), {}, say, watch, logger)


def complete(plan: RunPlan, run: RunWriter, done: dict[int, dict[str, Any]], say: Callable[[str], None],
             watch: Callable[[dict[str, Any]], None] | None = None, logger: MetricLogger | None = None) -> Path:
    """Fit every repeat not in `done` (repeat -> its metrics, from a resumed run's log), then
    write metrics.json; the run folder is released in any case."""
    try:
        if logger is not None:
            logger.start(run.dir, plan.options.repeats, config_to_dict(plan.config))
        with interruption(run, plan, say) as fitting:
            fitting.done = len(done)
            repeats = [done[k] if k in done else fit_one(plan, k, seed, run, fitting, say, watch, logger)
                       for k, seed in enumerate(plan.seeds)]
        task = plan.task
        valid_mean, valid_std = mean_std((r["valid"] for r in repeats), task.metrics_names)
        test_mean, test_std = mean_std((r["test"] for r in repeats), task.metrics_names)
        untrained = never_improved_note(plan, repeats)
        if untrained:  # kept, but said: in the notes, config.json, metrics.json and at the end of `pipe train`
            run.add_notes([untrained], never_improved=True)  # after the notes a fit added (fit_notes, finetune)
            say(untrained)
        run.write_metrics({"valid": valid_mean, "test": test_mean,
                           "std": {"valid": valid_std, "test": test_std}, "repeats": repeats,
                           "never_improved": bool(untrained), "constant": {task.criterion: plan.constant}})
        run.log({"event": "end", f"test_{task.criterion}": test_mean[task.criterion]})
        run.remove_checkpoints()
    finally:
        if logger is not None:
            logger.close()
        run.close()  # a run that died without metrics or interrupted.json now reads as failed
    return run.dir


def options_to_json(opts: TrainOptions) -> dict[str, Any]:
    """TrainOptions as config.json keeps them (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(opts).items()}
