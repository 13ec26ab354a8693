"""`pipe search`: a dataset's images nearest to a tag query, with an embedding run that
has a tag branch (DMAN, or its `--ablate attention` variant).

DMAN's cross-modal search (section 4.4): the query is a one-hot vector over the run's tag
vocabulary; each image is represented by the tag outputs its model gives from the image
alone; images are ranked by Euclidean distance (the same distance the embedding task's
cross-modal P@k uses). The dataset must hold the run's feature stores (the training
dataset, or one made by `pipe score` / `pipe extract` with the run's extractors); posts
without a row in them (no usable image) cannot be found and are counted.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core import paths
from pipeline.core.errors import NotApplicable, PipeError
from pipeline.core.io import atomic_write_bytes, parquet_bytes
from pipeline.data.contract import load_posts
from pipeline.head.embedding import EmbeddingHead
from pipeline.store import MANIFEST, FeatureStore
from pipeline.train.data import HeadData, RunSettings
from pipeline.run.rundir import load_run
from pipeline.train import tasks
from pipeline.train.tasks.embedding import EmbeddingOutput, tag_query_distance


@dataclass
class SearchResult:
    tag: str  # the query tag
    run: str  # the run's name
    dataset: str  # the dataset searched
    searched: int  # posts ranked (those with a row in every store the run reads)
    without_image: int  # posts left out: no row in a store the run reads
    table: pl.DataFrame  # rank, post_id, image, distance, tag_confidence (+ labels when the posts have them)
    out: Path | None = None  # the Parquet file written, if any


def search(run_ref: str | Path, dataset: str, tag: str, k: int = 10, out: str | Path | None = None,
           cache: str | Path | None = None, runs: str | Path | None = None, device: str = "auto") -> SearchResult:
    """Rank the dataset's images by the distance of their tag outputs to the one-hot `tag`."""
    if k < 1:
        raise PipeError(f"--k must be at least 1, got {k}")
    run = load_run(run_ref, runs)
    if not tasks.get(run.task).searchable:
        raise NotApplicable(f"run {run.name} is a {run.task} run ({run.head}); searching by tag needs an embedding run")
    if run.metrics is None:
        raise PipeError(f"run {run.dir} has no metrics.json: it did not finish, so it has no final model")
    head = run.load_head()
    tags = head.tag_names() if isinstance(head, EmbeddingHead) else []
    if not tags:
        raise NotApplicable(f"run {run.name} ({run.head}) has no tag outputs: search needs a dman run "
                        "(DMAN_Triplet, `--ablate tags`, has none)")
    if tag not in tags:
        near = difflib.get_close_matches(tag, tags, n=5)
        raise PipeError(f"tag {tag!r} is not in the run's {len(tags)}-tag vocabulary"
                        + (f"; close: {', '.join(near)}" if near else ""))
    posts = load_posts(dataset, cache)
    stores = {}
    for role, eid in run.stores.items():
        d = paths.store_dir(dataset, eid, cache)
        if not (d / MANIFEST).is_file():
            raise PipeError(f"dataset {dataset!r} has no store {eid} (the run's {role}): extract it with the run's "
                            f"extractor first (`pipe score --run {run.name} --posts FILE` does)")
        stores[role] = FeatureStore(d)
    has = np.array([all(p in s for s in stores.values()) for p in posts["post_id"].to_list()], bool)
    found = posts.filter(pl.Series(has))
    head.settings = RunSettings(device=device)
    result = head.predict(HeadData(found, stores))
    if not isinstance(result, EmbeddingOutput) or result.tag_confidence is None:
        raise PipeError(f"run {run.name} gave no tag outputs to search")
    j = tags.index(tag)
    dist = tag_query_distance(result.tag_confidence, [j], result.search)[0]  # (N,): the run's search
    order = np.argsort(dist, kind="stable")[:k]
    table = pl.DataFrame({"rank": np.arange(1, len(order) + 1), "post_id": [found["post_id"][int(i)] for i in order],
                          "image": found["image"].gather(order),
                          "distance": dist[order].astype(np.float64),
                          "tag_confidence": result.tag_confidence[order, j].astype(np.float64)})
    if "labels" in found.columns:
        table = table.with_columns(labels=found["labels"].gather(order))
    path = None
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, parquet_bytes(table))  # whole or not at all, never through a link
    return SearchResult(tag, run.name, dataset, found.height, posts.height - found.height, table, path)
