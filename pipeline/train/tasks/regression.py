"""Regression (UHAN, DSN, hybrid CNN): one example is a post, its label a posts column.

The target is `score` unless `pipe train --target COLUMN` names another numeric column
(retweets, likes). Posts without a finite target are left out and counted. Split: posts
in time order (`0.7,0.1,0.2` chronological by default, `uhan[:SEED]`, `random[:SEED]`).
Loss MSE; early stopping on valid MSE; metrics MSE, MAE, SRC, MedAE. Every part carries a
`History`: all posts of the dataset with the target kept for training posts only.

Task config (`--task-set`, or `--set` for `window` / `window_scope`): `window` (None: no
window) and `window_scope` of sequence heads. A sequence head (DSN) needs a window and
declares its default (`task_defaults`); the run records every post's window as
`windows.parquet`, and `pipe score` the scored posts' as OUT.windows.parquet.

Engagement targets (`--target-transform none|log1p|max`, `--min-target N`): posts below
N are dropped before the split and counted; the transform (pipeline/train/targets.py) is
fitted on the training part only and applied to the target column of every part, so
heads learn the transformed scale unchanged. Metrics are on that scale (what the
hybrid-CNN paper reports) plus, under a transform, on the original values as
`mse_counts`, `mae_counts`, `src_counts`, `medae_counts`; predictions.parquet (`y`,
`yhat`) and `pipe score` are mapped back to the original values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.data.smpd import CRAWLED_USER_COLUMNS
from pipeline.data.splits import SplitSpec, assign_split, split_summary
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData, History
from pipeline.train.metrics import REGRESSION, regression_metrics
from pipeline.train.targets import TargetTransform
from pipeline.train.tasks import register
from pipeline.train.tasks.base import Parts, Task, finite_1d, post_users
from pipeline.train.windows import check_scope, window_table

COUNTS = tuple(f"{m}_counts" for m in REGRESSION)  # metrics on the original values, under a transform


@dataclass
class RegressionConfig:
    window: int | None = None  # l of a sequence head: the post and the l - 1 posts before it; None: no window
    window_scope: str = "global"  # global: the whole time-ordered stream; user: the user's own posts

    def __post_init__(self) -> None:
        if self.window is not None and not 1 <= self.window <= 512:
            raise ValueError(f"window must be 1..512 (1 = the post alone) or none, got {self.window}")
        check_scope(self.window_scope)


@register
class Regression(Task):
    name = "regression"
    summary = "a number per post (popularity score, retweets, likes); MSE, MAE, SRC, MedAE"
    metrics_names = REGRESSION
    criterion = "mse"
    higher_is_better = False
    Config = RegressionConfig
    ALIASES = ("window", "window_scope")
    plots = "targets"
    history = True
    ranks_posts = True
    constant_predictor = "the training mean"

    def __init__(self, target: str = "score", config: RegressionConfig | None = None, transform: str = "none",
                 min_target: float | None = None) -> None:
        super().__init__(target, config)
        self.transform = TargetTransform(transform)  # fitted on the training part by `prepare`
        self.min_target = min_target  # keep posts with target >= this (None: all)
        self.metrics_names = REGRESSION + (COUNTS if transform != "none" else ())

    def check_data(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], head: str, dataset: str) -> None:
        if self.target in posts.columns and posts.schema[self.target].is_numeric() \
                and posts[self.target].cast(pl.Float64).is_finite().fill_null(False).any():
            return
        if self.target in posts.columns and posts.schema[self.target].is_numeric():
            lacks = f"has no finite {self.target!r} value"
        elif self.target in posts.columns:
            return  # a non-numeric target column: `labelled` names its type
        else:
            lacks = f"has no column {self.target!r}"
        raise self.wrong_data(head, dataset, lacks, f"a numeric posts column to learn (--target, here {self.target!r})",
                              "make one with `pipe synth --task regression` (or --task sequence), or ingest posts "
                              "with that column (`pipe ingest POSTS --name NAME`, without --unlabelled)")

    def labelled(self, posts: pl.DataFrame, dataset: str = "") -> tuple[pl.DataFrame, int]:
        """Posts with a finite target, and how many were left out."""
        if self.target not in posts.columns:
            numeric = [c for c, t in posts.schema.items() if t.is_numeric()]
            raise PipeError(f"dataset {dataset!r} has no column {self.target!r} to learn; numeric columns: {numeric}")
        if not posts.schema[self.target].is_numeric():
            raise PipeError(f"--target {self.target}: column is {posts.schema[self.target]}, not numeric")
        ok = posts[self.target].cast(pl.Float64).is_finite().fill_null(False)
        return posts.filter(ok), int(posts.height - ok.sum())

    @classmethod
    def options(cls, head: type, transform: str | None, min_target: float | None) -> dict[str, Any]:
        """Without `--target-transform`, the head's own default (`target_transform`, e.g. hybrid_cnn's max)."""
        return {"transform": transform or head.target_transform, "min_target": min_target}

    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore]) -> Parts:
        labelled, dropped = self.labelled(posts)
        counts, notes = self._min_target(labelled)
        labelled = labelled.filter(pl.col(self.target).cast(pl.Float64) >= self.min_target) \
            if self.min_target is not None else labelled
        parts = assign_split(labelled, split)
        is_train = pl.col("split") == "train"
        self.transform.fit(parts.filter(is_train)[self.target].to_numpy(), self.target)  # training part only
        parts = self.label(parts)
        train_ids = parts.filter(is_train)["post_id"].implode()
        known = self.label(posts).sort("posted_at", "post_id").with_columns(
            pl.when(pl.col("post_id").is_in(train_ids)).then(pl.col(self.target)).otherwise(None).alias(self.target))
        history = History(known, stores)
        data = {p: HeadData(parts.filter(pl.col("split") == p).drop("split"), stores, self.target, side=side,
                            history=history, task_config=self.config) for p in ("train", "valid", "test")}
        notes = ([f"{dropped} posts without a finite {self.target!r} left out"] if dropped else []) + notes
        crawled = [c for c in CRAWLED_USER_COLUMNS if c in posts.columns]
        smpd_only = set(crawled) - {"user_followers", "user_following", "user_views"}  # names any dataset may use
        if smpd_only:  # a fact of the dataset, whatever the head (one ablating its user features reads none)
            notes.append(f"the posts carry SMPD's crawled user statistics ({', '.join(crawled)}): collected after "
                         "posting, so a head reading user_* features sees a leak")
        files = self.windows(history, labelled["post_id"].to_list())
        return Parts(data, split_summary(parts), {"labelled": labelled.height, "unlabelled_skipped": dropped,
                                                  **counts}, notes, files)

    def windows(self, history: History, ids: list[str]) -> dict[str, pl.DataFrame]:
        """{"windows": every post's window} under a window (a sequence head's run), else {}."""
        c = self.config
        return {"windows": window_table(history, ids, c.window, c.window_scope)} if c.window else {}

    def scores_independent(self) -> bool:
        """A window holds the posts scored just before a post, so under a window they interact."""
        return not self.config.window

    def scored_files(self, data: HeadData) -> dict[str, pl.DataFrame]:
        return self.windows(data.history, data.ids) if data.history is not None else {}

    def _min_target(self, labelled: pl.DataFrame) -> tuple[dict[str, int], list[str]]:
        """How many posts `--min-target` drops (as the paper kept > 100 retweets), and the note saying so."""
        if self.min_target is None:
            return {}, []
        below = int((labelled[self.target].cast(pl.Float64) < self.min_target).sum())
        return {"below_min_target": below}, [f"--min-target {self.min_target:g}: {below} posts with {self.target} "
                                             f"below it dropped, {labelled.height - below} kept"]

    def label(self, posts: pl.DataFrame) -> pl.DataFrame:
        """The posts with the target column on the fitted scale (nulls stay null; a no-op for `none`)."""
        if self.transform.kind == "none" or self.target not in posts.columns:
            return posts
        y = posts[self.target].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return posts.with_columns(pl.Series(self.target, self.transform.forward(y)).fill_nan(None))

    def restore(self, described: dict[str, Any]) -> None:
        super().restore(described)
        self.transform = TargetTransform.from_json(described.get("transform"))
        self.metrics_names = REGRESSION + (COUNTS if self.transform.kind != "none" else ())

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        return F.mse_loss(pred, batch["y"])

    def check(self, out: Any, data: HeadData, head: str, what: str) -> np.ndarray:
        return finite_1d(out, len(data), head, what)

    def criterion_fn(self, valid: HeadData, y: np.ndarray | None,
                     output: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], float]:
        """Validation MSE of the raw outputs against the batches' targets (no output mapping)."""
        from pipeline.train.loop import mse_criterion  # torch, only when a torch head trains

        return mse_criterion(y).value

    def constant_criterion(self, train: HeadData, valid: HeadData) -> float | None:
        """Validation MSE of the training mean, on the learned scale (as the criterion)."""
        y_train, y_valid = self._y(train), self._y(valid)
        if not len(y_train) or not len(y_valid):
            return None
        return float(np.mean((y_valid - y_train.mean()) ** 2))

    def fitted_meta(self, y_train: np.ndarray | None) -> dict[str, Any]:
        """The training mean, where regression models start their output bias."""
        return {"y_mean": float(y_train.mean()) if y_train is not None and len(y_train) else 0.0}

    def empty_output(self, data: HeadData) -> Any:
        return np.zeros(0, np.float32) if len(data) == 0 else None

    def measurable(self, data: HeadData) -> bool:
        """Every scored post carries a finite target."""
        if self.target not in data.posts.columns:
            return False
        labels = data.posts[self.target].cast(pl.Float64)
        return bool(labels.null_count() == 0 and labels.is_finite().all())

    def _y(self, data: HeadData) -> np.ndarray:
        """The part's target on the learned scale, float64."""
        return data.posts[self.target].cast(pl.Float64).fill_null(np.nan).to_numpy()

    def metrics(self, data: HeadData, out: np.ndarray) -> dict[str, float]:
        y = self._y(data)
        m = regression_metrics(y, out)
        if self.transform.kind != "none":
            counts = regression_metrics(self.transform.inverse(y), self.transform.inverse(out))
            m.update({f"{k}_counts": v for k, v in counts.items()})
        return m

    def predictions(self, data: HeadData, out: np.ndarray, part: str) -> pl.DataFrame:
        y, t = self._y(data), self.transform
        cols = {"post_id": data.ids, "split": [part] * len(data), **post_users(data.posts),
                "y": t.inverse(y), "yhat": t.inverse(out)}
        if t.kind != "none":  # what the head learned and predicted, on its own scale
            cols.update(y_scaled=y, yhat_scaled=np.asarray(out, np.float64))
        return pl.DataFrame(cols)

    def scores(self, data: HeadData, out: np.ndarray) -> pl.DataFrame:
        return pl.DataFrame({"post_id": data.ids, "score": self.transform.inverse(out)})

    @property
    def transform_kind(self) -> str:
        return self.transform.kind

    def reported(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Under a transform, the `_counts` metrics (original scale) become the plain names and
        the learned-scale ones `<name>_scaled`: hybrid_cnn's max-scaled MSE never sits beside raw MSEs."""
        if not any(k in metrics for k in COUNTS):
            return dict(metrics)
        out = {m: metrics.get(f"{m}_counts") for m in REGRESSION}
        out.update({f"{m}_scaled": metrics.get(m) for m in REGRESSION})
        out.update({k: v for k, v in metrics.items() if k not in out and k not in COUNTS and k not in REGRESSION})
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "metrics": list(self.metrics_names), "transform": self.transform.to_json(),
                "min_target": self.min_target}
