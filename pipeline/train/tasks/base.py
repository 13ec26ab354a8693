"""What every task answers, so `pipe train`, `pipe evaluate` and `pipe score` need no special cases.

A task turns the posts (and side tables) of a dataset into the three parts a head fits
and is judged on (`prepare`), gives the shared trainer its loss and the validation
criterion early stopping watches, checks and scores what a head's `predict` returns, and
writes it: `predictions.parquet` rows (always `post_id` and `split`, then the task's
columns) and `pipe score` rows.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl

from pipeline.data.splits import SplitSpec
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData


@dataclass
class Parts:
    """A dataset prepared for one task: the parts, and what the run records about them."""

    data: dict[str, HeadData]  # "train", "valid", "test"
    summary: dict[str, Any]  # per part: counts and time range (config.json "split.parts")
    counts: dict[str, int] = field(default_factory=dict)  # examples used / left out (config.json "posts")
    notes: list[str] = field(default_factory=list)  # said to the user and kept in config.json
    files: dict[str, pl.DataFrame] = field(default_factory=dict)  # extra run files (candidates.parquet)


class Task(ABC):
    name: ClassVar[str]  # registry name, e.g. "regression"
    summary: ClassVar[str]  # one line for `pipe list tasks`
    metrics_names: ClassVar[tuple[str, ...]]  # keys of metrics.json "valid"/"test"
    criterion: ClassVar[str]  # the validation metric early stopping watches
    higher_is_better: ClassVar[bool]  # direction of `criterion`
    default_split: ClassVar[str | None] = None  # --split when none is given (None: chronological 0.7/0.1/0.2)

    def __init__(self, target: str = "score") -> None:
        self.target = target  # regression target column (`--target`); other tasks ignore it

    @abstractmethod
    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore], config: Any) -> Parts:
        """Split the dataset into HeadData parts; every statistic uses the training part only."""

    @abstractmethod
    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        """The training loss of a torch head's forward output (a scalar tensor)."""

    @abstractmethod
    def check(self, out: Any, data: HeadData, head: str, what: str) -> Any:
        """A head's `predict` output, validated (shape, finiteness); PipeError otherwise."""

    @abstractmethod
    def metrics(self, data: HeadData, out: Any) -> dict[str, float]:
        """The task's metrics of a checked output against the part's labels."""

    @abstractmethod
    def predictions(self, data: HeadData, out: Any, part: str) -> pl.DataFrame:
        """predictions.parquet rows: post_id, split, then the task's columns."""

    @abstractmethod
    def scores(self, data: HeadData, out: Any) -> pl.DataFrame:
        """`pipe score` rows for new posts (post_id first)."""

    def criterion_value(self, data: HeadData, out: Any) -> float:
        """The criterion of an output (the trainer turns NaN into "never best")."""
        return self.metrics(data, out)[self.criterion]

    def describe(self) -> dict[str, Any]:
        """What config.json records about the task."""
        return {"name": self.name, "target": self.target, "criterion": self.criterion,
                "higher_is_better": self.higher_is_better, "metrics": list(self.metrics_names)}

    def restore(self, described: dict[str, Any]) -> None:
        """Fitted state from what `describe` recorded (regression: the target transform), for scoring."""

    def label(self, posts: pl.DataFrame) -> pl.DataFrame:
        """New posts as the heads see them (regression: the target on the fitted scale)."""
        return posts


def finite_1d(out: Any, n: int, head: str, what: str) -> np.ndarray:
    """`out` as a float32 vector of n finite values; PipeError naming the head otherwise."""
    from pipeline.core.errors import PipeError

    y = np.asarray(out, dtype=np.float32).reshape(-1)
    if y.shape[0] != n:
        raise PipeError(f"head {head!r} returned {y.shape[0]} predictions for {n} {what} examples")
    if not np.isfinite(y).all():
        raise PipeError(f"head {head!r} predicted {int((~np.isfinite(y)).sum())} non-finite values on {what}")
    return y
