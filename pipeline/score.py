"""`pipe score`: batch re-scoring of a new posts file with a trained run.

The file is ingested as a dataset of its own (labels optional), so its features are
cached like any other: for each store the run read, the exact extractor that wrote it
(config, weights fingerprint and fitted vocabulary, via `extractor_from_store`) extracts
only the posts not yet in that dataset's store of the same extractor id. The run's
model (repeat 0) then predicts every post; none is dropped. The run's task decides the
columns (regression: post_id, score; ranking: post_id, user_id, score, rank for every
follower of the post's author; embedding: post_id, embedding, top labels), then:

- `unseen_user`: the user has no post in the run's training part; the head's documented
  fallback applies (hisave: global training mean; svr/lightgbm: global mean as the user
  statistic, missing user category; torch heads: the unknown-user embedding row).
- `missing_image`: the post has no image, or an image store the run reads has no row for
  the post (an unreadable image, listed in the store's failures.parquet, or an old row
  withdrawn because the post's image changed, went or became unreadable since);
  the head scores it without the image where it can.

The run's task config (config.json `task.config`) is restored and the scored posts carry
it. Heads of a task with a `history` (regression) get a `History` as in training: the
run's dataset (labels of its training part only) and the scored posts (labels dropped), so
a scored post's window (DSN) and its user's earlier scores (`user_history`) are those of
the same definition (pipeline/train/windows.py); the task's extra tables (a sequence run's
windows) are written beside the scores as OUT.<name>.parquet (OUT.windows.parquet).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes, parquet_bytes
from pipeline.data.contract import load_posts, load_side_tables
from pipeline.data.ingest import claim_dataset, ingest
from pipeline.store import MANIFEST, FeatureStore
from pipeline.store.coverage import DEFAULT_MIN_COVERAGE, check_coverage
from pipeline.submission import external_data, write_submission
from pipeline.train import tasks
from pipeline.train.data import HeadData, RunSettings
from pipeline.run.rundir import Run, load_run


@dataclass
class ScoreReport:
    out: Path  # the scores file written
    dataset: str  # the dataset the posts file was ingested as
    posts: int  # posts scored (every ingested post)
    unseen_users: int  # posts whose user the run never saw in training
    missing_images: int  # posts scored without an image
    extracted: dict[str, int] = field(default_factory=dict)  # extractor id -> rows extracted now
    metrics: dict[str, float] | None = None  # when the file carries scores for every post
    windows: Path | None = None  # a window head's record of each scored post's window (OUT.windows.parquet)
    submission: Path | None = None  # the SMP Challenge submission file, when asked for


def dataset_name_for(posts_file: Path) -> str:
    """A dataset name from the file name: `new posts.csv` -> `new-posts`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(posts_file).stem).strip("-._")
    return name or "scored"


def training_store(run: Run, extractor_id: str, cache: str | Path | None) -> Path:
    """The run's store of `extractor_id`, under `cache` or the cache recorded in the run."""
    ds = run.config["dataset"]
    for root in dict.fromkeys([paths.cache_root(cache), Path(run.config.get("cache") or paths.cache_root(cache))]):
        d = paths.store_dir(ds, extractor_id, root)  # the id from config.json is checked like any name
        if (d / MANIFEST).is_file():
            return d
    raise PipeError(f"run {run.name} read store {extractor_id} of dataset {ds!r}, which is no longer in the cache "
                    f"({paths.features_dir(ds, cache) / extractor_id}); its extractor config and vocabulary are needed "
                    "to score new posts")


def open_training_store(run: Run, extractor_id: str, cache: str | Path | None) -> FeatureStore:
    """The run's store of `extractor_id`, opened read-only (nothing written: no lock file, no
    stamps) when it lies outside this command's cache root: a run's recorded paths never widen
    where a command writes."""
    d = training_store(run, extractor_id, cache)
    root = paths.cache_root(cache).resolve()
    inside = d.resolve() == root or root in d.resolve().parents
    return FeatureStore(d, writes=inside)


def training_users(run: Run, cache: str | Path | None) -> pl.Series:
    """The users with a post in the run's training part."""
    train_ids = run.predictions().filter(pl.col("split") == "train")["post_id"]
    root = run.config.get("cache") or cache
    users = load_posts(run.config["dataset"], root).filter(pl.col("post_id").is_in(train_ids.implode()))["user_id"]
    return users.unique()


def unseen_users(head: Any, run: Run, data: HeadData, cache: str | Path | None,
                 users: pl.Series | None = None) -> np.ndarray:
    """The head's own answer (`Head.unseen_users`), else users absent from the run's training
    posts (`users`: `training_users`, when the caller keeps them)."""
    own = head.unseen_users(data)
    if own is not None:
        return np.asarray(own, dtype=bool)
    users = training_users(run, cache) if users is None else users
    return ~data.posts["user_id"].is_in(users.implode()).to_numpy()


def missing_images(posts: pl.DataFrame, stores: dict[str, Any]) -> np.ndarray:
    """(N,) bool: the post has no image, or an image store the run reads has no row for it (an
    unreadable image, or an old row withdrawn because the image changed, went or became unreadable)."""
    from pipeline.extract.build import reads_images

    no_image = posts["image"].is_null() | (posts["image"].str.strip_chars() == "")
    missing = no_image.fill_null(True).to_numpy()
    ids = posts["post_id"].to_list()
    for st in stores.values():
        if reads_images(st):
            missing |= ~np.array([p in st for p in ids], dtype=bool)
    return missing


@dataclass
class Scoring:
    """New posts made ready for a run's head: ingested, extracted, coverage checked. Shared by
    `pipe score`, `pipe rank` and `pipe explain --posts`, so all three see the same inputs."""

    run: Run
    head: Any  # the run's model (repeat 0)
    task: tasks.Task
    data: HeadData  # every ingested post, with the stores of the run's extractors
    dataset: str  # the name the posts were ingested as
    extracted: dict[str, int]  # extractor id -> rows extracted now
    missing: np.ndarray  # (N,) bool: no image, or none in the run's visual store
    unseen: np.ndarray  # (N,) bool: the user has no post in the run's training part


def prepare(
    run_ref: str | Path,
    posts_file: str | Path,
    dataset: str | None = None,
    cache: str | Path | None = None,
    runs: str | Path | None = None,
    fmt: str = "auto",
    say: Callable[[str], None] = lambda m: None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    users: list[str] | None = None,
    origin: tuple[str, str] | None = None,
    overwrite_dataset: bool = False,
    **extract_options: Any,
) -> Scoring:
    """Load the run's model, ingest the posts file as its own dataset and extract, with the
    run's exact extractors, only what is not cached. `origin` (command, posts file; default
    score and `posts_file`) is recorded with the dataset; an existing dataset of another
    origin is refused unless `overwrite_dataset`."""
    from pipeline.extract import extractor_from_store, run_extract
    from pipeline.extract.build import reads_images

    run = load_run(run_ref, runs)
    if run.metrics is None:
        raise PipeError(f"run {run.dir} has no metrics.json: it did not finish, so it has no final model")
    head = run.load_head()  # a damaged model stops here, named, before any ingest or extraction
    for line in run.store_changes(cache):  # its extractors and history come from those stores
        say(line)
    name = dataset or dataset_name_for(Path(posts_file))
    if name == run.config["dataset"]:
        raise PipeError(f"{name!r} is the run's training dataset; ingesting {posts_file} under that name would replace "
                        "its posts table: pass --dataset with another name")
    origin = origin or ("score", str(Path(posts_file).resolve()))
    claim_dataset(name, cache, *origin, overwrite=overwrite_dataset)
    rep = ingest(Path(posts_file), name, fmt, cache, unlabelled=True, origin=origin)
    say(f"ingested {rep.rows} posts from {posts_file} as dataset {name!r}")
    posts = load_posts(name, cache)

    stores: dict[str, FeatureStore] = {}
    extracted: dict[str, int] = {}
    for role, eid in run.stores.items():
        ex = extractor_from_store(training_store(run, eid, cache))
        r = run_extract(name, ex, cache, posts=posts, **extract_options)
        if r.extractor_id != eid:
            raise PipeError(f"rebuilt extractor wrote {r.extractor_id}, not the run's {eid}")
        extracted[eid] = r.extracted
        say(f"{role}: {eid}: {r.extracted} extracted, {r.skipped} already cached, {r.failed + r.skipped_failed} failed, "
            f"{r.no_image} without image")
        stores[role] = FeatureStore(r.store)

    for line in check_coverage(stores, posts, min_coverage, name, failures_count=False,  # unreadable inputs are flagged
                               image_store=reads_images):
        say(line)
    task, data = head_data(run, posts, stores, cache, say, users)
    head.settings = RunSettings(device=extract_options.get("device") or "auto")
    return Scoring(run, head, task, data, name, extracted, missing_images(data.posts, stores),
                   unseen_users(head, run, data, cache))


@dataclass
class RunContext:
    """What scoring reads of the run besides its model: its task (config restored), side tables
    and, for a task with a history, its labelled posts, training ids and stores. Built per
    `pipe score`; `pipe serve` builds it once and scores every request against it."""

    task: tasks.Task
    side: dict[str, pl.DataFrame]
    history_posts: pl.DataFrame | None = None  # the run's dataset, labelled by the task
    train_ids: list[str] = field(default_factory=list)  # posts of the run's training part
    stores: dict[str, FeatureStore] = field(default_factory=dict)  # role -> the run's store


def run_context(run: Run, cache: str | Path | None) -> RunContext:
    described = run.task_described  # built from config.json on each access: once here
    task = tasks.get(run.task)(described.get("target", "score"))
    task.restore(described)  # its config, the fitted target transform: scores come back in counts
    ctx = RunContext(task, load_side_tables(run.config["dataset"], run.config.get("cache") or cache))
    if task.history:
        root = run.config.get("cache") or cache
        ctx.history_posts = task.label(load_posts(run.config["dataset"], root))
        ctx.train_ids = run.predictions().filter(pl.col("split") == "train")["post_id"].to_list()
        ctx.stores = {r: open_training_store(run, eid, cache) for r, eid in run.stores.items()}
    return ctx


def head_data(run: Run, posts: pl.DataFrame, stores: dict[str, FeatureStore], cache: str | Path | None,
              say: Callable[[str], None] = lambda m: None, users: list[str] | None = None,
              ctx: RunContext | None = None) -> tuple[tasks.Task, HeadData]:
    """The run's task and the posts as its head reads them at scoring time (examples, side
    tables, history); `pipe explain` reads posts of the run's own dataset this way too."""
    ctx = run_context(run, cache) if ctx is None else ctx
    task, side = ctx.task, ctx.side
    data = HeadData(task.label(posts), stores, task.target, examples=task.score_examples(posts, side, users, run.name),
                    side=side, task_config=task.config)
    if task.history:
        data.history = _history(run, ctx, data, say)
    return task, data


def _history(run: Run, ctx: RunContext, data: HeadData, say: Callable[[str], None]):
    """Earlier posts for windows and user histories: the run's dataset (labels of its
    training part only) and the scored posts (labels dropped), as in training."""
    from pipeline.train.windows import scoring_history

    hist, replaced = scoring_history(ctx.history_posts, ctx.train_ids, data.posts, ctx.stores, data.stores,
                                     ctx.task.target)
    if replaced:
        say(f"{replaced} scored posts share an id with a post of {run.config['dataset']!r}: the scored one is used")
    return hist


def score_table(s: Scoring) -> tuple[pl.DataFrame, Any]:
    """The head's predictions as the task's `pipe score` rows with the two flags, and the
    checked output they came from."""
    out_value = s.task.check(s.head.predict(s.data), s.data, s.run.head, "scored")
    table = s.task.scores(s.data, out_value)
    per_row = len(s.unseen) != len(s.data.ids)  # a ranking head flags the user of each scored pair
    flags = pl.DataFrame({"post_id": s.data.ids, **({} if per_row else {"unseen_user": s.unseen}),
                          "missing_image": s.missing})
    if per_row:
        table = table.with_columns(unseen_user=pl.Series(s.unseen, dtype=pl.Boolean))
    return table.join(flags, on="post_id", how="left", maintain_order="left"), out_value


def score(run_ref: str | Path, posts_file: str | Path, out: str | Path, submission: str | Path | None = None,
          **options: Any) -> ScoreReport:
    """Ingest, extract what is missing, predict, write post_id/score/unseen_user/missing_image
    (and, with `submission`, the SMP Challenge JSON: pipeline/submission.py). `options` are
    `prepare`'s (dataset, cache, runs, fmt, say, min_coverage, users, origin, overwrite_dataset,
    extraction's)."""
    s = prepare(run_ref, posts_file, **options)
    table, out_value = score_table(s)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, parquet_bytes(table))  # a failed write (a full disk) leaves the old scores
    windows = record_windows(s, out)
    if submission is not None:
        # the scored stores were written by the run's exact extractors (same ids, same configs)
        write_submission(submission, table, external_data({r: (st.manifest.extractor, st.config)
                                                           for r, st in s.data.stores.items()}))

    metrics = None
    if s.task.measurable(s.data):
        metrics = s.task.metrics(s.data, out_value)
    return ScoreReport(out, s.dataset, s.data.posts.height, int(s.unseen.sum()), int(s.missing.sum()), s.extracted, metrics,
                       windows, Path(submission) if submission is not None else None)


def record_windows(s: Scoring, out: Path) -> Path | None:
    """The task's tables of the scored posts, as the run records its own (a sequence run's
    windows: OUT.windows.parquet); the windows file's path, if any."""
    written = {}
    for name, frame in s.task.scored_files(s.data).items():
        written[name] = out.with_name(f"{out.stem}.{name}.parquet")
        atomic_write_bytes(written[name], parquet_bytes(frame))
    return written.get("windows")


def read_users(spec: str) -> list[str]:
    """`--users`: a file (Parquet/CSV/JSONL with a user_id column, else one id per line) or ID,ID,..."""
    path = Path(spec)
    if path.is_file():
        if path.suffix.lower() in (".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json"):
            from pipeline.data.readers import read_raw

            df = read_raw(path).df
            if "user_id" not in df.columns:
                raise PipeError(f"--users {path}: no user_id column (columns: {', '.join(c for c in df.columns if c != '__line')})")
            ids = [str(u).strip() for u in df["user_id"].to_list() if u is not None]
        else:
            ids = [line.strip() for line in path.read_text().splitlines()]
    else:
        ids = [u.strip() for u in spec.split(",")]
    ids = [u for u in ids if u]
    if not ids:
        raise PipeError(f"--users {spec!r}: no user ids")
    return ids

