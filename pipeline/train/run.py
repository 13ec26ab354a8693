"""`pipe train`: posts -> split -> role stores -> K seeded fits -> a run directory.

The orchestration every head shares, neural or not: it resolves which store fills each
of the head's roles, splits the labelled posts (chronologically by default), fits
`repeats` copies with seeds `seed, seed+1, ...`, evaluates each on valid and test, and
writes the run (see `pipeline/train/rundir.py`). Heads see labels only through the `HeadData` they
are given, so statistics they compute in `fit` come from the training part.

"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

import heads
from heads.base import Head
from pipeline.core import paths
from pipeline.core.config import build_config, config_to_dict, with_seed
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts
from pipeline.data.splits import assign_split, parse_split, split_summary
from pipeline.train.data import HeadData
from pipeline.train.metrics import mean_std, regression_metrics
from pipeline.train.roles import describe_stores, resolve_roles
from pipeline.train.rundir import RunWriter, default_run_name, git_revision, library_versions, now_utc


def head_class(name: str) -> type[Head]:
    try:
        return heads.get(name)
    except KeyError:
        raise PipeError(f"unknown head {name!r}; known heads: {', '.join(heads.names())}") from None

@dataclass
class TrainOptions:
    dataset: str  # posts table and stores under <cache>/<dataset>/
    head: str  # registry name
    stores: dict[str, str] = field(default_factory=dict)  # role -> extractor id or unique prefix
    split: str | None = None  # see pipeline.data.splits.parse_split
    sets: list[str] = field(default_factory=list)  # "key=value" config overrides
    ablate: list[str] = field(default_factory=list)  # appended to the config's `ablate`
    repeats: int = 1  # seeds seed .. seed+repeats-1
    name: str | None = None  # run folder name; default head + ablations + timestamp
    runs: str | Path | None = None  # runs root
    cache: str | Path | None = None  # store root
    scheduler: str | None = None  # dask scheduler address (heads whose config has `scheduler`)
    dask_workers: int | None = None  # or a local dask cluster of this many processes (same heads)


def _labelled(posts: pl.DataFrame, dataset: str) -> tuple[pl.DataFrame, int]:
    if "score" not in posts.columns:
        raise PipeError(f"dataset {dataset!r} has no score column: nothing to train on")
    ok = posts["score"].cast(pl.Float64).is_finite().fill_null(False)
    return posts.filter(ok), int(posts.height - ok.sum())


def _history_lines(head: Head) -> list[dict[str, Any]]:
    hist = getattr(head, "history", None) or []
    return [h if isinstance(h, dict) else {"step": i, "value": h} for i, h in enumerate(hist)]


def _predict(head: Head, data: HeadData, what: str) -> np.ndarray:
    yhat = np.asarray(head.predict(data), dtype=np.float32).reshape(-1)
    if yhat.shape[0] != len(data):
        raise PipeError(f"head {head.name!r} returned {yhat.shape[0]} predictions for {len(data)} {what} posts")
    if not np.isfinite(yhat).all():
        raise PipeError(f"head {head.name!r} predicted {int((~np.isfinite(yhat)).sum())} non-finite scores on {what}")
    return yhat


def train(opts: TrainOptions, say: Callable[[str], None] = lambda m: None) -> Path:
    """Train and evaluate; returns the run directory."""
    if opts.repeats < 1:
        raise PipeError(f"--repeats must be at least 1, got {opts.repeats}")
    cls = head_class(opts.head)
    sets = list(opts.sets)
    if opts.scheduler and opts.dask_workers is not None:
        raise PipeError("give --dask-workers (a local cluster) or --scheduler (an existing one), not both")
    for option, value in (("scheduler", opts.scheduler), ("dask_workers", opts.dask_workers)):
        if value is None or value == "":
            continue
        if not any(f.name == option for f in dataclasses.fields(cls.Config)):
            raise PipeError(f"--{option.replace('_', '-')} is for heads that train on dask (lightgbm); "
                            f"{opts.head!r} does not")
        sets.append(f"{option}={value}")
    known = getattr(cls, "ABLATIONS", None)
    bad = [a for a in opts.ablate if known is not None and a not in known]
    if bad:
        raise PipeError(f"--ablate {' '.join(bad)}: head {opts.head!r} knows {', '.join(known) or 'no ablations'}")
    config = build_config(opts.head, cls.Config, sets, opts.ablate)
    split = parse_split(opts.split)
    posts, dropped = _labelled(load_posts(opts.dataset, opts.cache), opts.dataset)
    parts = assign_split(posts, split)
    stores, notes = resolve_roles(cls(config).roles(), opts.dataset, opts.cache, opts.stores)
    for n in notes:
        say(n)
    data = {p: HeadData(parts.filter(pl.col("split") == p).drop("split"), stores) for p in ("train", "valid", "test")}

    ablate = tuple(getattr(config, "ablate", ()) or ())
    run = RunWriter(opts.runs, opts.name or default_run_name(opts.head, ablate), unique=opts.name is None)
    base_seed = int(getattr(config, "seed", 0) or 0)
    seeds = [base_seed + k for k in range(opts.repeats)]
    run.write_config({
        "name": run.dir.name, "created_at": now_utc(), "head": opts.head, "config": config_to_dict(config),
        "ablate": list(ablate), "dataset": opts.dataset, "cache": str(paths.cache_root(opts.cache).resolve()),
        "stores": describe_stores(stores), "split": {**split.to_json(), "parts": split_summary(parts)},
        "posts": {"labelled": posts.height, "unlabelled_skipped": dropped}, "repeats": opts.repeats, "seeds": seeds,
        "notes": notes, "versions": library_versions(), "git": git_revision(),
    })
    say(f"run {run.dir}: {opts.head} on {opts.dataset} ({', '.join(f'{r}={s.extractor_id}' for r, s in stores.items()) or 'no stores'}); "
        f"split {split.text}: " + ", ".join(f"{p} {len(d)}" for p, d in data.items()))
    run.log({"event": "start", "repeats": opts.repeats, "seeds": seeds})

    repeats: list[dict[str, Any]] = []
    try:
        for k, seed in enumerate(seeds):
            head = cls(with_seed(config, seed))
            t0 = time.perf_counter()
            head.fit(data["train"], data["valid"])
            fit_s = time.perf_counter() - t0
            for h in _history_lines(head):
                run.log({"event": "valid", "repeat": k, "seed": seed, **h})
            preds = {p: _predict(head, data[p], p) for p in (("train", "valid", "test") if k == 0 else ("valid", "test"))}
            res = {"repeat": k, "seed": seed, "fit_seconds": round(fit_s, 3),
                   **{p: regression_metrics(data[p].y, preds[p]) for p in ("valid", "test")}}
            repeats.append(res)
            run.log({"event": "repeat_end", **res})
            say(f"repeat {k + 1}/{opts.repeats} (seed {seed}): fit {fit_s:.1f}s, valid mse {res['valid']['mse']:.4f}, "
                f"test mse {res['test']['mse']:.4f}")
            if k == 0:
                head.save(run.model_dir)
                run.write_predictions(pl.concat([
                    pl.DataFrame({"post_id": data[p].ids, "split": [p] * len(data[p]),
                                  "y": data[p].y.astype(np.float64), "yhat": preds[p].astype(np.float64)})
                    for p in ("train", "valid", "test")]))
    except Exception as e:
        run.log({"event": "error", "message": f"{type(e).__name__}: {e}"})
        raise
    valid_mean, valid_std = mean_std(r["valid"] for r in repeats)
    test_mean, test_std = mean_std(r["test"] for r in repeats)
    run.write_metrics({"valid": valid_mean, "test": test_mean, "std": {"valid": valid_std, "test": test_std},
                       "repeats": repeats})
    run.log({"event": "end", "test_mse": test_mean["mse"] if math.isfinite(test_mean["mse"]) else None})
    return run.dir
