"""`pipe tune`: hyper-parameter search on the validation split, then one normal run of the best.

Optuna with a TPE sampler (seeded) and median pruning on the validation curve: a torch
head calls `progress(entry)` after each evaluation, the value is reported to the trial,
and a trial whose curve is worse than the median of earlier trials at the same point
(half-epochs of training examples seen, after `WARMUP_EPOCHS`) is stopped. The search space is the head's `search_space` (declared next to its Config);
keys given with `--set` are fixed, never searched. The defaults (the config the head would
train with, regime included) are fitted once before the search: their validation metric
is quoted beside the best trial's, and they are not a trial.

Only the training and validation parts reach the search: the test part is built by the
task (so the split is the one `pipe train` uses) and then dropped, never predicted or
scored (tests/test_tune.py checks that poisoning the test labels changes no trial). The
best configuration is then trained and evaluated once, on test too, by `pipe train`'s
own code (`pipeline.run.train.train`) into `runs/<name>/`.

Files: while searching, the study is an SQLite file `runs/.tune/<name>/study.db`; a
killed search resumes with the same `--name` (trials left running by the kill are marked
failed and the missing ones run). `runs/.tune/<name>.lock` is held by the one search of a
name: a second one refuses while the first runs. At the end the run folder holds, beside the normal run
files, `study.db`, `trials.csv` (one row per trial: number, state, value, seconds,
params) and `tune.json` (best trial, defaults' value, parameter importances, and
`trained`: `best trial`, or `defaults` when no trial beat them: a search never does harm).

Parallel trials (`--dask-workers N` or `--scheduler ADDR`): each dask worker prepares the
data itself and runs trials against the same SQLite study, so the runs root must be on a
file system every worker sees.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.train.regime import resolve_regime
from pipeline.core import paths
from pipeline.core.config import config_to_dict
from pipeline.core.errors import IntegrityError, PipeError
from pipeline.core.io import atomic_write_bytes, hold_lock, real_folder
from pipeline.head.base import Head, Progress
from pipeline.run.train import TrainOptions, plan_run, train
from pipeline.run.rundir import CONFIG, default_run_name

STUDY_FILE, TRIALS_FILE, TUNE_FILE = "study.db", "trials.csv", "tune.json"
STAGING = ".tune"  # under the runs root: studies still searching
WARMUP_EPOCHS = 5  # no pruning in a trial's first epochs: slow starters (a small lr) are not failures


@dataclass
class TuneOptions:
    run: TrainOptions  # dataset, head, stores, split, fixed --set values, name, runs, cache (not searched)
    trials: int = 20  # finished trials (complete or pruned) the study should hold
    timeout: float | None = None  # minutes of searching at most (this invocation); None: no limit
    seed: int = 0  # TPE sampler seed
    scheduler: str | None = None  # run trials on the dask cluster at this address
    dask_workers: int | None = None  # or on a local dask cluster of this many processes
    startup_trials: int = 4  # trials before TPE and pruning start (random sampling first)
    extra: dict[str, Any] = field(default_factory=dict)  # reserved for callers (recorded in tune.json)


def suggest(trial: Any, name: str, spec: tuple) -> Any:
    """One value from a search-space entry: ("log"|"float"|"int", lo, hi) or ("cat", [choices])."""
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    if kind == "float":
        return trial.suggest_float(name, spec[1], spec[2])
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "cat":
        return trial.suggest_categorical(name, list(spec[1]))
    raise PipeError(f"search space entry {name}: unknown kind {kind!r}")


def space_of(cls: type[Head], fixed: set[str]) -> dict[str, tuple]:
    """The head's search space (`Head.search_space`; a torch head's default is the trainer's
    lr and weight_decay) less the keys fixed with --set."""
    space = dict(cls.search_space)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    space = {k: v for k, v in space.items() if k in names and k not in fixed}
    if not space:
        raise PipeError(f"head {cls.name!r} has nothing to tune (no search space, or every key fixed with --set)")
    return space


class Search:
    """The data (train and valid parts only) and the objective; built once per process."""

    def __init__(self, opts: TrainOptions) -> None:
        self.opts = opts
        plan = plan_run(opts)  # not kept: its test part is dropped here
        self.cls, self.settings, self.config, self.task = plan.head_cls, plan.settings, plan.config, plan.task
        self.notes, self.regime, self.n_train = plan.notes, plan.regime, plan.n_train
        self.train, self.valid = plan.data["train"], plan.data["valid"]
        self.raw, self.explicit = plan.raw_config, plan.explicit  # before the regime: trials re-resolve it

    def trial_config(self, params: dict[str, Any]) -> Any:
        """The config `pipe train --set` with these params would resolve to (a trial's batch size
        rescales the regime's schedule exactly as it will in the final run)."""
        config = dataclasses.replace(self.raw, **params)
        return resolve_regime(self.cls, config, self.n_train, self.explicit | set(params))[0]

    def fit(self, config: Any, trial: Any = None) -> float:
        """Fit on train; the task's criterion on valid. With a trial, each evaluation is reported and may prune."""
        import optuna

        head = self.cls(config)
        head.settings = self.settings
        crit = self.task.criterion
        progress: Progress | None = None
        if trial is not None:  # a head that never reports evaluations is simply not pruned
            reported: set[int] = set()

            def report(entry: dict[str, Any]) -> None:
                """Report on a common axis, half-epochs of training examples seen, so trials with other
                batch sizes or evaluation intervals are compared at the same point of training."""
                value = entry.get(f"valid_{crit}")
                at = int(entry["step"] * config.batch_size * 2 / max(self.n_train, 1))
                if value is None or entry["step"] == 0 or at in reported:
                    return
                reported.add(at)
                trial.report(float(value), at)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            progress = report
        head.fit(self.train, self.valid, progress=progress)
        out = self.task.check(head.predict(self.valid), self.valid, self.opts.head, "valid")
        return float(self.task.metrics(self.valid, out)[crit])

    def objective(self, space: dict[str, tuple]) -> Callable[[Any], float]:
        def run(trial: Any) -> float:
            params = {k: suggest(trial, k, spec) for k, spec in space.items()}
            return self.fit(self.trial_config(params), trial)
        return run


def _storage(path: Path) -> Any:
    import optuna

    return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}})


def _study(path: Path, direction: str, opts: TuneOptions, salt: int = 0) -> Any:
    """The study at `path`, new or resumed. The sampler's seed moves on with the trials already
    there (and `salt`, a dask worker's index), so a resumed search or a second worker does not
    draw the same configurations again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="tune", storage=_storage(path), load_if_exists=True, direction=direction,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=opts.startup_trials, n_warmup_steps=2 * WARMUP_EPOCHS),
    )
    seed = opts.seed + 1000 * salt + len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=opts.startup_trials)
    return study


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def _fail_stale(study: Any) -> int:
    """Trials left RUNNING by a killed search: marked failed so the study can go on."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def _worker(run: TrainOptions, study_path: str, direction: str, opts: TuneOptions, space: dict, n: int,
            timeout_s: float | None, index: int) -> int:
    """Runs on a dask worker: its own data, `n` trials of the shared study."""
    study = _study(Path(study_path), direction, opts, salt=index + 1)
    study.optimize(Search(run).objective(space), n_trials=n, timeout=timeout_s, catch=())
    return n


def trials_table(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        secs = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "last_step": max(t.intermediate_values, default=None), "seconds": secs,
                     **{f"param_{k}": v for k, v in t.params.items()}})
    return rows


def _read_meta(path: Path) -> dict[str, Any]:
    """A resumed search's tune.json; {} for a new one. A link or a damaged file is refused by name
    (a search's own files are never read through, nor written through, a link)."""
    if path.is_symlink():
        raise IntegrityError(f"{path} is a symbolic link; pipe never follows links in its own folders: "
                             "remove it and run again")
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"{path}: unreadable ({type(e).__name__}); remove the search's folder "
                             f"{path.parent} to start it again") from None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import polars as pl

    atomic_write_bytes(path, pl.DataFrame(rows, infer_schema_length=None).write_csv().encode())  # never through a link


def tune(opts: TuneOptions, say: Callable[[str], None] = lambda m: None) -> Path:
    """Search, then train the best config as a normal run; returns the run folder. One search
    per name at a time: it holds `runs/.tune/NAME.lock` throughout, so a second `pipe tune` of
    the same name refuses instead of marking the first one's live trials failed."""
    name = opts.run.name or default_run_name(f"tune-{opts.run.head}")
    staging = real_folder(paths.runs_root(opts.run.runs) / STAGING, create=True)
    lock = hold_lock(staging / f"{paths.check_name(name, 'run name')}.lock",
                     f"study {name!r} is being searched by another `pipe tune`; wait for it to end (then the same "
                     "--name resumes or finds it finished) or pass another --name")
    try:
        return _tune(dataclasses.replace(opts, run=dataclasses.replace(opts.run, name=name)), say)
    finally:
        os.close(lock)


def _tune(opts: TuneOptions, say: Callable[[str], None]) -> Path:
    import optuna

    if opts.trials < 1:
        raise PipeError(f"--trials must be at least 1, got {opts.trials}")
    run = opts.run
    name = run.name or default_run_name(f"tune-{run.head}")
    final = paths.run_dir(name, run.runs)
    if (final / CONFIG).exists():
        raise PipeError(f"run {final} already exists: this search has finished; pass another --name")
    stage = paths.contained(paths.runs_root(run.runs) / STAGING / paths.check_name(name, "run name"),
                            paths.runs_root(run.runs))
    real_folder(stage, create=True)
    search = Search(run)
    for n in search.notes:
        say(n)
    fixed = set(run.sets)
    space = space_of(search.cls, fixed)
    direction = "maximize" if search.task.higher_is_better else "minimize"
    study = _study(stage / STUDY_FILE, direction, opts)
    meta_path = stage / TUNE_FILE
    meta = _read_meta(meta_path)
    if (stale := _fail_stale(study)):
        say(f"resuming: {stale} trial(s) left running by an earlier search marked failed")
    crit = search.task.criterion
    if "defaults" not in meta:
        t0 = time.perf_counter()
        value = search.fit(search.config)
        meta = {"name": name, "head": run.head, "dataset": run.dataset, "criterion": crit, "direction": direction,
                "fixed": sorted(fixed), "space": {k: list(v) for k, v in space.items()}, "regime": search.regime,
                "defaults": {"valid": value, "config": config_to_dict(search.config),
                             "seconds": round(time.perf_counter() - t0, 1)}, **opts.extra}
        atomic_write_bytes(meta_path, json.dumps(meta, indent=1, default=list).encode())
        say(f"defaults: valid {crit} {value:.4f} ({meta['defaults']['seconds']:.0f}s)")
    left = opts.trials - _finished(study)
    timeout_s = opts.timeout * 60 if opts.timeout else None
    if left > 0:
        say(f"searching {left} trial(s) of {run.head} over {', '.join(space)} (study {stage / STUDY_FILE})")
        if opts.scheduler or opts.dask_workers:
            from pipeline.core.cluster import dask_client

            with dask_client(opts.scheduler, opts.dask_workers) as client:
                k = max(1, min(len(client.scheduler_info()["workers"]), left))
                shares = [left // k + (i < left % k) for i in range(k)]
                futures = [client.submit(_worker, run, str(stage / STUDY_FILE), direction, opts, space, n, timeout_s,
                                         i, pure=False) for i, n in enumerate(shares)]
                client.gather(futures)
        else:
            def log(study: Any, t: Any) -> None:
                v = f"{t.value:.4f}" if t.value is not None else "-"
                say(f"trial {t.number}: {t.state.name.lower()} {crit} {v} ({', '.join(f'{k}={p:.3g}' if isinstance(p, float) else f'{k}={p}' for k, p in t.params.items())})")
            study.optimize(search.objective(space), n_trials=left, timeout=timeout_s, callbacks=[log], catch=())
    rows = trials_table(study)
    _write_csv(stage / TRIALS_FILE, rows)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise PipeError(f"no trial completed; the study is kept in {stage / STUDY_FILE}")
    best = study.best_trial
    try:
        with warnings.catch_warnings():  # few trials: "importances will be equal" is no news
            warnings.simplefilter("ignore")
            importances = {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # too few completed trials
        importances = {}
    meta.update(best={"number": best.number, "valid": best.value, "params": best.params},
                trials={s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")},
                importances=importances)
    beats = search.task.improves(best.value, meta["defaults"]["valid"])
    meta["trained"] = "best trial" if beats else "defaults"
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1, default=list).encode())
    if beats:
        say(f"best trial {best.number}: valid {crit} {best.value:.4f} (defaults {meta['defaults']['valid']:.4f}); "
            "training it as a normal run")
    else:
        say(f"no trial beat the defaults (best trial {best.number}: valid {crit} {best.value:.4f}, defaults "
            f"{meta['defaults']['valid']:.4f}); training the defaults as a normal run")
    out = train(dataclasses.replace(run, sets={**run.sets, **(best.params if beats else {})}, name=name), say)
    for f in (STUDY_FILE, TRIALS_FILE, TUNE_FILE):
        shutil.move(str(stage / f), str(out / f))
    shutil.rmtree(stage, ignore_errors=True)
    return out
