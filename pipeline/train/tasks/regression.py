"""Regression (UHAN, DSN, hybrid CNN): one example is a post, its label a posts column.

The target is `score` unless `pipe train --target COLUMN` names another numeric column
(retweets, likes). Posts without a finite target are left out and counted. Split: posts
in time order (`0.7,0.1,0.2` chronological by default, `uhan[:SEED]`, `random[:SEED]`).
Loss MSE; early stopping on valid MSE; metrics MSE, MAE, SRC, MedAE. Every part carries a
`History`: all posts of the dataset with the target kept for training posts only.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.data.splits import SplitSpec, assign_split, split_summary
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData, History
from pipeline.train.metrics import REGRESSION, regression_metrics
from pipeline.train.tasks import register
from pipeline.train.tasks.base import Parts, Task, finite_1d


@register
class Regression(Task):
    name = "regression"
    summary = "a number per post (popularity score, retweets, likes); MSE, MAE, SRC, MedAE"
    metrics_names = REGRESSION
    criterion = "mse"
    higher_is_better = False

    def labelled(self, posts: pl.DataFrame, dataset: str = "") -> tuple[pl.DataFrame, int]:
        """Posts with a finite target, and how many were left out."""
        if self.target not in posts.columns:
            numeric = [c for c, t in posts.schema.items() if t.is_numeric()]
            raise PipeError(f"dataset {dataset!r} has no column {self.target!r} to learn; numeric columns: {numeric}")
        if not posts.schema[self.target].is_numeric():
            raise PipeError(f"--target {self.target}: column is {posts.schema[self.target]}, not numeric")
        ok = posts[self.target].cast(pl.Float64).is_finite().fill_null(False)
        return posts.filter(ok), int(posts.height - ok.sum())

    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore], config: Any) -> Parts:
        labelled, dropped = self.labelled(posts)
        parts = assign_split(labelled, split)
        train_ids = parts.filter(pl.col("split") == "train")["post_id"].implode()
        known = posts.sort("posted_at", "post_id").with_columns(
            pl.when(pl.col("post_id").is_in(train_ids)).then(pl.col(self.target)).otherwise(None).alias(self.target))
        history = History(known, stores)
        data = {p: HeadData(parts.filter(pl.col("split") == p).drop("split"), stores, self.target, side=side,
                            history=history) for p in ("train", "valid", "test")}
        notes = [f"{dropped} posts without a finite {self.target!r} left out"] if dropped else []
        return Parts(data, split_summary(parts), {"labelled": labelled.height, "unlabelled_skipped": dropped}, notes)

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.mse_loss(pred, batch["y"])

    def check(self, out: Any, data: HeadData, head: str, what: str) -> np.ndarray:
        return finite_1d(out, len(data), head, what)

    def metrics(self, data: HeadData, out: np.ndarray) -> dict[str, float]:
        return regression_metrics(data.y, out)

    def predictions(self, data: HeadData, out: np.ndarray, part: str) -> pl.DataFrame:
        return pl.DataFrame({"post_id": data.ids, "split": [part] * len(data),
                             "y": data.posts[self.target].cast(pl.Float64), "yhat": out.astype(np.float64)})

    def scores(self, data: HeadData, out: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame({"post_id": data.ids, "score": out.astype(np.float64)})
