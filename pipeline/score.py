"""`pipe score`: batch re-scoring of a new posts file with a trained run.

The file is ingested as a dataset of its own (labels optional), so its features are
cached like any other: for each store the run read, the exact extractor that wrote it
(config, weights fingerprint and fitted vocabulary, via `extractor_from_store`) extracts
only the posts not yet in that dataset's store of the same extractor id. The run's
model (repeat 0) then predicts every post; none is dropped:

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

from heads.base import HeadData
from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts
from pipeline.data.ingest import ingest
from pipeline.store import MANIFEST, FeatureStore
from pipeline.train.metrics import regression_metrics
from pipeline.train.rundir import PREDICTIONS, Run, load_run


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
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(posts_file).stem).strip("-.")
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
    train_ids = pl.read_parquet(run.dir / PREDICTIONS).filter(pl.col("split") == "train")["post_id"]
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
    **extract_options: Any,
) -> ScoreReport:
    """Ingest, extract what is missing, predict, write post_id/score/unseen_user/missing_image."""
    from pipeline.extract import extractor_from_store, run_extract

    run = load_run(run_ref, runs)
    if run.metrics is None:
        raise PipeError(f"run {run.dir} has no metrics.json: it did not finish, so it has no final model")
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

    head = run.load_head()
    data = HeadData(posts, stores)
    yhat = np.asarray(head.predict(data), dtype=np.float32).reshape(-1)
    if yhat.shape[0] != posts.height or not np.isfinite(yhat).all():
        raise PipeError(f"head {run.head!r} returned {yhat.shape[0]} scores ({int((~np.isfinite(yhat)).sum())} "
                        f"non-finite) for {posts.height} posts")
    no_image = posts["image"].is_null() | (posts["image"].str.strip_chars() == "")
    missing = no_image.fill_null(True).to_numpy()
    if "visual" in stores:
        missing |= ~np.array([p in stores["visual"] for p in data.ids], dtype=bool)
    unseen = _unseen(head, run, data, cache)
    table = pl.DataFrame({"post_id": data.ids, "score": yhat.astype(np.float64), "unseen_user": unseen,
                          "missing_image": missing})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(out)

    metrics = None
    labels = posts["score"].cast(pl.Float64)
    if labels.null_count() == 0 and labels.is_finite().all():
        metrics = regression_metrics(labels.to_numpy(), yhat)
    return ScoreReport(out, name, posts.height, int(unseen.sum()), int(missing.sum()), extracted, metrics)
