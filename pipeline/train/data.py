"""What a head is given: one part of a split (`HeadData`), the roles it reads (`Role`), the
dataset as known before each post (`History`) and the run settings it executes under.

Posts columns (user_id, posted_at, user_* features, categories, `labels`, extra numeric
columns such as retweets) come with every `HeadData`; features come from the stores, by
post id. Task-specific examples (a ranking task's user-post pairs) travel in `examples`;
side tables (interactions, follows) in `side`, already cut to what the part may know.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.device import check_device
from pipeline.core.errors import PipeError
from pipeline.store import FeatureStore


@dataclass(frozen=True)
class Role:
    kinds: tuple[str, ...]  # feature kinds the role accepts: grid | vector | tokens | pixels
    default: str | None = None  # extractor-id prefix the paper used (e.g. "vgg16-pool5-448")
    required: bool = True  # False: the head works (worse) without it
    modality: str | None = None  # image | text: only stores of an extractor of this modality fill it; None: any


@dataclass
class RunSettings:
    """How a head runs, never what it is: not saved with the model, so a model trained with
    `--device cuda` scores on a CPU-only machine. `pipe train --set device=cpu` lands here."""

    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads while training/predicting; None = torch's default
    prefetch: int = 4  # batches the loader thread assembles ahead; 0 = assemble inline
    scheduler: str | None = None  # dask scheduler address, for heads that train on dask (lightgbm)
    dask_workers: int | None = None  # or a local dask cluster of this many processes

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.threads is not None and self.threads < 1:
            raise PipeError(f"threads must be >= 1 or None, got {self.threads}")
        if self.prefetch < 0:
            raise PipeError(f"prefetch must be >= 0, got {self.prefetch}")
        if self.dask_workers is not None and self.dask_workers < 1:
            raise PipeError(f"dask_workers must be at least 1, got {self.dask_workers}")
        if self.scheduler and self.dask_workers is not None:
            raise PipeError("give --dask-workers (a local cluster) or --scheduler (an existing one), not both")

    @property
    def on_dask(self) -> bool:
        return bool(self.scheduler or self.dask_workers)


@dataclass
class History:
    """The whole dataset as a sequence head may see it: every post's features (strictly
    earlier posts only: `pipeline.train.windows.window_index`) and labels of training posts only (`target` is null
    elsewhere), so a window never carries a label the model could not have known."""

    posts: pl.DataFrame  # every post, sorted by (posted_at, post_id); target null outside the training part
    stores: dict[str, FeatureStore] = field(default_factory=dict)  # role -> store, as for the parts


@dataclass
class HeadData:
    """One part of a split: its posts (in order), the stores that fill the head's roles, and
    whatever else the task hands its heads."""

    posts: pl.DataFrame  # posts-contract rows; the target may be null when predicting new posts
    stores: dict[str, FeatureStore] = field(default_factory=dict)  # role -> store
    target: str = "score"  # the posts column regression heads learn (`pipe train --target`)
    examples: pl.DataFrame | None = None  # task examples when they are not the posts (ranking: user-post pairs)
    side: dict[str, pl.DataFrame] = field(default_factory=dict)  # side tables as known to this part
    history: History | None = None  # the dataset before each post, for sequence heads
    task_config: Any = None  # the task's settings (pipeline/train/tasks: window, tags, ...); None when built bare

    @property
    def ids(self) -> list[str]:
        return self.posts["post_id"].to_list()

    @property
    def y(self) -> np.ndarray:
        """The target column as float32 (NaN where null)."""
        if self.target not in self.posts.columns:
            raise PipeError(f"the posts have no target column {self.target!r}; columns: {self.posts.columns}")
        return self.posts[self.target].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float32)

    def __len__(self) -> int:
        return self.posts.height

    def subset(self, rows: np.ndarray | slice) -> "HeadData":
        idx = np.arange(self.posts.height)[rows]
        return dataclasses.replace(self, posts=self.posts[idx])

    def with_posts(self, posts: pl.DataFrame) -> "HeadData":
        return dataclasses.replace(self, posts=posts)

    def features(self, role: str, ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, present): rows for ids (zeros where the store has none) and a bool mask."""
        store = self.stores[role]
        ids = self.ids if ids is None else ids
        present = np.array([p in store for p in ids], dtype=bool)  # any store-like role (images, memory)
        if present.all():  # read straight into the result
            return store.read(ids), present
        out = np.zeros((len(ids), *store.spec.shape), np.dtype(store.spec.dtype))
        if present.any():
            out[present] = store.read([p for p, ok in zip(ids, present) if ok])
        return out, present
