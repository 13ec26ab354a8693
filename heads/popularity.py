"""Popularity: rank a tweet by how often its author's tweets were retweeted in training.

The non-personalised floor of the ranking task (every user gets the same order): a
tweet scores the number of training retweets (the training examples' positives) of
tweets by the same author; an author without any scores 0. No features, no user model:
what AMNL and the factorisation baselines must beat to show they learn preferences.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from heads import register
from pipeline.head.ranking import examples
from pipeline.head.base import Head, HeadData, Progress, Role
from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError

FILE = "popularity.json"


@dataclass
class PopularityConfig:
    seed: int = 0  # seeds the task's negative sampling


def _authors(data: HeadData, ids: list[str]) -> list[str | None]:
    author = dict(data.posts.select("post_id", "user_id").iter_rows())
    return [author.get(p) for p in ids]


@register
class Popularity(Head):
    __doc__ = __doc__
    name = "popularity"
    task = "ranking"
    Config = PopularityConfig

    def __init__(self, config: PopularityConfig | None = None) -> None:
        super().__init__(config if config is not None else PopularityConfig())
        self.counts: dict[str, int] | None = None  # author -> training retweets of their tweets

    def roles(self) -> dict[str, Role]:
        return {}

    @property
    def is_fitted(self) -> bool:
        return self.counts is not None

    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "Popularity":
        pos = examples(train, self.name).filter(pl.col("label") == 1)["post_id"].to_list()
        by = pl.DataFrame({"author": _authors(train, pos)}, schema={"author": pl.Utf8}).drop_nulls()
        self.counts = dict(by.group_by("author").len().iter_rows())
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        if self.counts is None:
            raise self.not_fitted()
        ids = examples(data, self.name)["post_id"].to_list()
        return np.array([self.counts.get(a, 0) for a in _authors(data, ids)], np.float32)

    def save(self, directory: Path) -> None:
        if self.counts is None:
            raise self.not_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / FILE).write_text(json.dumps({"head": self.name, "config": config_to_dict(self.config),
                                          "counts": self.counts}, indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "Popularity":
        try:
            doc = json.loads((Path(directory) / FILE).read_text())
        except FileNotFoundError:
            raise PipeError(f"no saved 'popularity' head in {directory} (missing {FILE})") from None
        head = cls(cls.saved_config(doc["config"])[0])
        head.counts = {str(k): int(v) for k, v in doc["counts"].items()}
        return head
