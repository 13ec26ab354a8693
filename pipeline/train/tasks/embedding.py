"""Multi-label image embedding (DMAN): one example is a post with its ground-truth `labels`.

Posts without labels are left out and counted. Split: `random:0` (70/10/20) by default,
as DMAN's datasets have no time order that matters; `--split` fractions give a
chronological one. The label vocabulary is the labels of the training part, sorted
(`label_vocabulary`); labels met only outside it cannot be predicted and are ignored when
scoring, which the run's notes count. A head's `predict` returns an `EmbeddingOutput`: an
embedding row per post, a confidence per label (sigmoid scale, positive above 0.5) and,
for heads with a tag branch, a confidence per tag of their tag vocabulary. Loss:
binary cross-entropy of (B, L) label logits against the (B, L) multi-hot `labels` batch
(heads such as DMAN add their own terms). Early stopping on valid mAP. Metrics: mAP,
micro / macro P, R, F1 (see pipeline/train/metrics.py) and, with tag outputs, cross-modal
P@1/5/10/20/50 (each label that is also a tag queried as a one-hot tag vector; images
ranked by the head's search, `EmbeddingOutput.search`: the paper's Euclidean distance of the
tag outputs, or cosine on them, normalized). `p@k` is the head's search; `p@k_euclidean`
always the paper's, so the two compare run for run.

Task config (`--task-set`; `--set tags=N` is an alias): `tags`, the size of the tag
vocabulary (the most frequent tags of the training part; None: no tag vocabulary). A head
with a tag branch declares its default (DMAN: 1,000); the run counts the training posts
with none of the vocabulary tags, which such a head leaves out of training.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.data.splits import SplitSpec, assign_split, split_summary
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData
from pipeline.train.metrics import CROSS_MODAL_K, EMBEDDING, cross_modal_precision, embedding_metrics
from pipeline.train.tasks import register
from pipeline.train.tasks.base import Parts, Task, post_users

PREDICTION_ROWS = 4096  # posts per predictions.parquet chunk (row group): bounds the memory of writing it


@dataclass
class EmbeddingOutput:
    vectors: np.ndarray  # (N, D) float32 embedding per post
    labels: list[str]  # the label vocabulary, columns of `confidence`
    confidence: np.ndarray  # (N, L) in [0, 1]
    tags: list[str] | None = None  # tag vocabulary of a tag branch, columns of `tag_confidence`
    tag_confidence: np.ndarray | None = None  # (N, T) in [0, 1]
    search: str = "euclidean"  # how a tag query ranks images (SEARCHES): the paper's euclidean | cosine


@dataclass
class EmbeddingConfig:
    tags: int | None = None  # tag vocabulary size: the most frequent tags of the training part; None: no tags

    def __post_init__(self) -> None:
        if self.tags is not None and self.tags < 1:
            raise ValueError(f"tags must be at least 1 or none, got {self.tags}")


def label_vocabulary(posts: pl.DataFrame) -> list[str]:
    """Sorted distinct labels of these (training) posts."""
    if "labels" not in posts.columns:
        return []
    return sorted({x for row in posts["labels"].to_list() if row for x in row})


def tag_vocabulary(posts: pl.DataFrame, size: int) -> list[str]:
    """The `size` most frequent tags of these (training) posts, ties broken by name so that
    the vocabulary does not depend on row order (DMAN: the 1,000 most frequent tags)."""
    if "tags" not in posts.columns or size <= 0:
        return []
    counts = Counter(t for row in posts["tags"].to_list() if row for t in set(row) if t)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def multi_hot(posts: pl.DataFrame, vocab: list[str], column: str = "labels") -> np.ndarray:
    """(N, L) float32 0/1 of each post's `column` (labels, or tags) over `vocab` (others ignored)."""
    index = {v: j for j, v in enumerate(vocab)}
    out = np.zeros((posts.height, len(vocab)), np.float32)
    rows = posts[column].to_list() if column in posts.columns else [None] * posts.height
    for i, row in enumerate(rows):
        for x in row or ():
            if x in index:
                out[i, index[x]] = 1.0
    return out


def _rows(a: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """A 2-d array as a list column, one list per row, without a Python object per value
    (float32 vectors as Float64 lists: the values and dtype `.tolist()` gave)."""
    flat = pl.Series(a.reshape(-1)).cast(dtype)
    if a.shape[1] == 0:
        return pl.Series([[]] * a.shape[0], dtype=pl.List(dtype))
    return flat.reshape((a.shape[0], a.shape[1])).cast(pl.List(dtype))


SEARCHES = ("euclidean", "cosine")


def tag_query_distance(tag_confidence: np.ndarray, queries: list[int], search: str = "euclidean") -> np.ndarray:
    """(Q, N) distances between one-hot tag queries (tag indices) and the (N, T) tag outputs
    of the images. `euclidean`: DMAN's cross-modal search (section 4.4), where outputs an
    uninformative tag pushes to .5-.75 dominate the distance (issue 19: near chance);
    `cosine`: 1 - cos(query, outputs) = 1 - y_t / |y|, the tag's share of the image's norm.
    Both in (Q, N) memory, never (Q, N, T)."""
    if search not in SEARCHES:
        raise PipeError(f"search {search!r}: expected one of {', '.join(SEARCHES)}")
    y = np.asarray(tag_confidence, np.float64)
    sq = np.einsum("nt,nt->n", y, y)  # (N,) squared norms
    if search == "cosine":
        return 1.0 - y[:, queries].T / np.maximum(np.sqrt(sq), 1e-12)[None, :]  # (Q, N)
    return np.sqrt(np.maximum(sq[None, :] - 2.0 * y[:, queries].T + 1.0, 0.0))  # ||e_q - y||^2 = ||y||^2 - 2 y_q + 1


@register
class Embedding(Task):
    name = "embedding"
    summary = "an embedding and label confidences per post (multi-label, cross-modal search); mAP, P/R/F1"
    metrics_names = (EMBEDDING + tuple(f"p@{k}" for k in CROSS_MODAL_K)  # p@k: null for heads without tag outputs
                     + tuple(f"p@{k}_euclidean" for k in CROSS_MODAL_K))  # the paper's search, whatever the head's
    criterion = "map"
    higher_is_better = True
    default_split = "random:0"
    Config = EmbeddingConfig
    ALIASES = ("tags",)
    plots = "labels"
    searchable = True
    constant_predictor = "the label prior"

    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore]) -> Parts:
        if "labels" not in posts.columns:
            raise PipeError("the embedding task needs a posts column `labels` (a list of classes per post)")
        has = posts["labels"].list.len().fill_null(0) > 0
        labelled = posts.filter(has)
        parts = assign_split(labelled, split, what="posts with labels")
        data = {p: HeadData(parts.filter(pl.col("split") == p).drop("split"), stores, self.target, side=side,
                            task_config=self.config) for p in ("train", "valid", "test")}
        vocab = set(label_vocabulary(data["train"].posts))
        outside = {x for p in ("valid", "test") for x in label_vocabulary(data[p].posts)} - vocab
        notes = [f"{posts.height - labelled.height} posts without labels left out"] if labelled.height < posts.height else []
        if outside:
            notes.append(f"{len(outside)} labels of valid/test never occur in training and are ignored, e.g. "
                         f"{sorted(outside)[:5]}")
        counts = {"labelled": labelled.height, "unlabelled_skipped": posts.height - labelled.height,
                  "labels": len(vocab)}
        size = self.config.tags  # heads with a tag vocabulary (DMAN) train on posts with a vocabulary tag
        if size is not None and "tags" in posts.columns:
            tags = set(tag_vocabulary(data["train"].posts, size))
            counts["train_without_vocabulary_tag"] = sum(
                1 for row in data["train"].posts["tags"].to_list() if not tags.intersection(row or ()))
            if counts["train_without_vocabulary_tag"]:
                notes.append(f"{counts['train_without_vocabulary_tag']} training posts have none of the {len(tags)} "
                             f"vocabulary tags (tags={size}) and are left out of training")
        return Parts(data, split_summary(parts), counts, notes)

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(pred, batch["labels"])

    @property
    def judged_on(self) -> str:
        return "labels"

    def check_data(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], head: str, dataset: str) -> None:
        if "labels" in posts.columns and bool((posts["labels"].list.len().fill_null(0) > 0).any()):
            return
        raise self.wrong_data(head, dataset, "has no posts column `labels`" if "labels" not in posts.columns
                              else "has no post with a label", "posts with `labels` (a list of classes per post)",
                              "make one with `pipe synth --task embedding`, or ingest posts with a `labels` column "
                              "(`pipe ingest POSTS --name NAME`)")

    def constant_criterion(self, train: HeadData, valid: HeadData) -> float | None:
        """mAP of the label prior (one confidence per label for every post: a random order
        within each label): each label's expected AP is its share of the valid posts, over
        the training labels with a valid positive."""
        truth = multi_hot(valid.posts, label_vocabulary(train.posts))
        share = truth.mean(axis=0) if len(truth) else np.zeros(0)
        share = share[truth.any(axis=0)] if len(truth) else share
        return float(share.mean()) if len(share) else None

    def check(self, out: Any, data: HeadData, head: str, what: str) -> EmbeddingOutput:
        if not isinstance(out, EmbeddingOutput):
            raise PipeError(f"head {head!r} returned {type(out).__name__}, not an EmbeddingOutput")
        n = len(data)
        if out.vectors.shape[0] != n or out.confidence.shape != (n, len(out.labels)):
            raise PipeError(f"head {head!r} returned vectors {out.vectors.shape} and confidences "
                            f"{out.confidence.shape} for {n} {what} posts and {len(out.labels)} labels")
        for name, a in (("vectors", out.vectors), ("confidence", out.confidence)):
            if not np.isfinite(a).all():
                raise PipeError(f"head {head!r} returned non-finite {name} on {what}")
        return out

    def metrics(self, data: HeadData, out: EmbeddingOutput) -> dict[str, float]:
        truth = multi_hot(data.posts, out.labels)
        m = embedding_metrics(truth, out.confidence)
        if out.tags is not None and out.tag_confidence is not None:
            tag_index = {t: j for j, t in enumerate(out.tags)}
            queries = [(j, tag_index[lab]) for j, lab in enumerate(out.labels) if lab in tag_index]
            if queries:
                relevant = truth[:, [j for j, _ in queries]].T
                for search, suffix in ((out.search, ""), ("euclidean", "_euclidean")):
                    dist = tag_query_distance(out.tag_confidence, [t for _, t in queries], search)  # (Q, N)
                    m.update({f"{k}{suffix}": v for k, v in cross_modal_precision(relevant, dist).items()})
        return m

    def criterion_value(self, data: HeadData, out: Any) -> float:
        return embedding_metrics(multi_hot(data.posts, out.labels), out.confidence)["map"]

    def _top(self, out: EmbeddingOutput, k: int = 3) -> tuple[pl.Series, pl.Series]:
        """Each post's k most confident labels and their confidences, as list columns."""
        order = np.argsort(-out.confidence, axis=1, kind="stable")[:, :k]
        names = pl.Series(list(out.labels), dtype=pl.Utf8).gather(order.ravel())
        conf = np.take_along_axis(out.confidence, order, axis=1)
        return _rows(names.to_numpy().reshape(order.shape), pl.Utf8), _rows(conf.astype(np.float64), pl.Float64)

    def predictions(self, data: HeadData, out: EmbeddingOutput, part: str) -> pl.DataFrame:
        names, confs = self._top(out)
        every = pl.DataFrame(out.confidence.astype(np.float64), schema=list(out.labels), orient="row")
        return pl.DataFrame({"post_id": data.ids, "split": [part] * len(data),
                             **post_users(data.posts), "labels": data.posts["labels"],
                             "top_labels": names, "top_confidence": confs,
                             "embedding": _rows(out.vectors.astype(np.float32), pl.Float64)}).with_columns(
            every.to_struct("confidence"))  # every label's confidence, one struct field per label

    def prediction_chunks(self, data: HeadData, out: EmbeddingOutput, part: str) -> Iterator[pl.DataFrame]:
        """`predictions` PREDICTION_ROWS posts at a time: a row holds the post's vector and
        every label's confidence as float64, so a whole part would be several copies of both."""
        for i in range(0, max(len(data), 1), PREDICTION_ROWS):
            rows = slice(i, i + PREDICTION_ROWS)
            yield self.predictions(data.subset(rows), dataclasses.replace(
                out, vectors=out.vectors[rows], confidence=out.confidence[rows],
                tag_confidence=None if out.tag_confidence is None else out.tag_confidence[rows]), part)

    def scores(self, data: HeadData, out: EmbeddingOutput) -> pl.DataFrame:
        names, confs = self._top(out)
        return pl.DataFrame({"post_id": data.ids, "embedding": _rows(out.vectors.astype(np.float32), pl.Float64),
                             "top_labels": names, "top_confidence": confs})
