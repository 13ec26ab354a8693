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
- `missing_image`: the post has no image, or the run reads a `visual` store and that store
  has no row for the post (an unreadable image, listed in the store's failures.parquet);
  the head scores it without the image where it can.
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
from pipeline.data.contract import load_posts, load_side_tables
from pipeline.data.ingest import ingest
from pipeline.store import MANIFEST, FeatureStore
from pipeline.store.coverage import DEFAULT_MIN_COVERAGE, check_coverage
from pipeline.train import tasks
from pipeline.train.data import HeadData, RunSettings
from pipeline.train.rundir import Run, load_run


@dataclass
class ScoreReport:
    out: Path  # the scores file written
    dataset: str  # the dataset the posts file was ingested as
    posts: int  # posts scored (every ingested post)
    unseen_users: int  # posts whose user the run never saw in training
    missing_images: int  # posts scored without an image
    extracted: dict[str, int] = field(default_factory=dict)  # extractor id -> rows extracted now
    metrics: dict[str, float] | None = None  # when the file carries scores for every post


def dataset_name_for(posts_file: Path) -> str:
    """A dataset name from the file name: `new posts.csv` -> `new-posts`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(posts_file).stem).strip("-._")
    return name or "scored"


def _training_store(run: Run, extractor_id: str, cache: str | Path | None) -> Path:
    """The run's store of `extractor_id`, under `cache` or the cache recorded in the run."""
    ds = run.config["dataset"]
    for root in dict.fromkeys([paths.cache_root(cache), Path(run.config.get("cache") or paths.cache_root(cache))]):
        d = paths.features_dir(ds, root) / extractor_id
        if (d / MANIFEST).is_file():
            return d
    raise PipeError(f"run {run.name} read store {extractor_id} of dataset {ds!r}, which is no longer in the cache "
                    f"({paths.features_dir(ds, cache) / extractor_id}); its extractor config and vocabulary are needed "
                    "to score new posts")


def _unseen(head: Any, run: Run, data: HeadData, cache: str | Path | None) -> np.ndarray:
    """The head's own answer, else users absent from the run's training posts."""
    if hasattr(head, "unseen_users"):
        return np.asarray(head.unseen_users(data), dtype=bool)
    train_ids = run.predictions().filter(pl.col("split") == "train")["post_id"]
    root = run.config.get("cache") or cache
    users = load_posts(run.config["dataset"], root).filter(pl.col("post_id").is_in(train_ids.implode()))["user_id"]
    return ~data.posts["user_id"].is_in(users.unique().implode()).to_numpy()


def score(
    run_ref: str | Path,
    posts_file: str | Path,
    out: str | Path,
    dataset: str | None = None,
    cache: str | Path | None = None,
    runs: str | Path | None = None,
    fmt: str = "auto",
    say: Callable[[str], None] = lambda m: None,
    min_coverage: float = DEFAULT_MIN_COVERAGE,
    **extract_options: Any,
) -> ScoreReport:
    """Ingest, extract what is missing, predict, write post_id/score/unseen_user/missing_image."""
    from pipeline.extract import extractor_from_store, run_extract
    from pipeline.extract.build import reads_images

    run = load_run(run_ref, runs)
    if run.metrics is None:
        raise PipeError(f"run {run.dir} has no metrics.json: it did not finish, so it has no final model")
    head = run.load_head()  # a damaged model stops here, named, before any ingest or extraction
    name = dataset or dataset_name_for(Path(posts_file))
    if name == run.config["dataset"]:
        raise PipeError(f"{name!r} is the run's training dataset; ingesting {posts_file} under that name would replace "
                        "its posts table: pass --dataset with another name")
    rep = ingest(Path(posts_file), name, fmt, cache, unlabelled=True)
    say(f"ingested {rep.rows} posts from {posts_file} as dataset {name!r}")
    posts = load_posts(name, cache)

    stores: dict[str, FeatureStore] = {}
    extracted: dict[str, int] = {}
    for role, eid in run.stores.items():
        ex = extractor_from_store(_training_store(run, eid, cache))
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
    task = tasks.get(run.task)(run.config.get("task", {}).get("target", "score"))
    data = HeadData(posts, stores, task.target, examples=_score_examples(run, task.name, posts, cache),
                    side=load_side_tables(run.config["dataset"], run.config.get("cache") or cache))
    head.settings = RunSettings(device=extract_options.get("device") or "auto")
    out_value = task.check(head.predict(data), data, run.head, "scored")
    no_image = posts["image"].is_null() | (posts["image"].str.strip_chars() == "")
    missing = no_image.fill_null(True).to_numpy()
    if "visual" in stores:
        missing |= ~np.array([p in stores["visual"] for p in data.ids], dtype=bool)
    unseen = _unseen(head, run, data, cache)
    flags = pl.DataFrame({"post_id": data.ids, "unseen_user": unseen, "missing_image": missing})
    table = task.scores(data, out_value).join(flags, on="post_id", how="left", maintain_order="left")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out)

    metrics = None
    if task.name == "regression" and task.target in posts.columns:
        labels = posts[task.target].cast(pl.Float64)
        if labels.null_count() == 0 and labels.is_finite().all():
            metrics = task.metrics(data, out_value)
    return ScoreReport(out, name, posts.height, int(unseen.sum()), int(missing.sum()), extracted, metrics)


def _score_examples(run: Run, task: str, posts: pl.DataFrame, cache: str | Path | None) -> pl.DataFrame | None:
    """Ranking runs score user-post pairs: each new post for every follower of its author in
    the run's dataset (its follows table). Other tasks score the posts themselves."""
    if task != "ranking":
        return None
    side = load_side_tables(run.config["dataset"], run.config.get("cache") or cache)
    if "follows" not in side:
        raise PipeError(f"run {run.name} ranks posts for users, and its dataset has no follows table to find "
                        "who sees the new posts")
    pairs = posts.select("post_id", pl.col("user_id").alias("followee_id"), pl.col("posted_at").alias("at")).join(
        side["follows"].select("user_id", "followee_id"), on="followee_id")
    return pairs.select("user_id", "post_id", pl.lit(0, pl.Int8).alias("label"), pl.lit(0, pl.Int64).alias("group"), "at")
