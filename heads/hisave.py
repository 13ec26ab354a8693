"""HisAve (UHAN paper, Table 2): a post's prediction is its user's historical average.

The average is over the user's posts in the training part; a user with no training post
gets the global training mean and is flagged by `unseen_users`. It reads no features, so
it is the floor every multimodal head must beat.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from heads import register
from pipeline.head.base import Head, HeadData, Progress, Role
from pipeline.core.config import config_to_dict


@register
class HisAve(Head):
    name = "hisave"

    search_space = {"min_posts": ("int", 1, 10)}  # `pipe tune`: its one hyper-parameter

    @dataclass
    class Config:
        seed: int = 0  # unused (the head is deterministic); kept so --repeats works alike for every head
        min_posts: int = 1  # users with fewer training posts than this get the global mean

    def __init__(self, config: "HisAve.Config | None" = None) -> None:
        super().__init__(config or self.Config())
        self.user_mean: dict[str, float] = {}
        self.global_mean: float | None = None  # None until fitted

    def roles(self) -> dict[str, Role]:
        return {}

    @property
    def is_fitted(self) -> bool:
        return self.global_mean is not None

    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "HisAve":
        df = pl.DataFrame({"u": train.posts["user_id"].cast(pl.Utf8), "y": train.y.astype(np.float64)})
        self.global_mean = float(df["y"].mean())
        g = df.group_by("u").agg(pl.col("y").mean().alias("m"), pl.len().alias("n"))
        g = g.filter(pl.col("n") >= self.config.min_posts)
        self.user_mean = dict(zip(g["u"].to_list(), g["m"].to_list()))
        return self

    def predict(self, data: HeadData) -> np.ndarray:
        if self.global_mean is None:
            raise self.not_fitted()
        users = data.posts["user_id"].cast(pl.Utf8).to_list()
        return np.array([self.user_mean.get(u, self.global_mean) for u in users], dtype=np.float32)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """True where the prediction fell back to the global training mean."""
        return np.array([u not in self.user_mean for u in data.posts["user_id"].cast(pl.Utf8).to_list()], dtype=bool)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {"config": config_to_dict(self.config), "global_mean": self.global_mean, "user_mean": self.user_mean}
        (directory / "hisave.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> "HisAve":
        state = json.loads((Path(directory) / "hisave.json").read_text())
        head = cls(cls.saved_config(state["config"])[0])
        head.global_mean = float(state["global_mean"])
        head.user_mean = {k: float(v) for k, v in state["user_mean"].items()}
        return head
