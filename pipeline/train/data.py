"""What every head answers, neural or not, so train/evaluate/score treat them alike.

A head declares the feature roles it reads (`roles()`), e.g. UHAN needs a `visual` grid
and `text` tokens. The CLI resolves each role to a store (`--visual`, `--text`, or the
role's paper default). Posts columns (user_id, posted_at, user_* features, categories)
come with every `HeadData`; features come from the stores, by post id.

"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline.store import FeatureStore


@dataclass(frozen=True)
class Role:
    kinds: tuple[str, ...]  # feature kinds the role accepts: grid | vector | tokens | pixels
    default: str | None = None  # extractor-id prefix the paper used (e.g. "vgg16-pool5-448")
    required: bool = True  # False: the head works (worse) without it


@dataclass
class HeadData:
    """One part of a split: its posts (in order) and the stores that fill the head's roles."""

    posts: pl.DataFrame  # posts-contract rows; `score` may be null when predicting new posts
    stores: dict[str, FeatureStore] = field(default_factory=dict)  # role -> store

    @property
    def ids(self) -> list[str]:
        return self.posts["post_id"].to_list()

    @property
    def y(self) -> np.ndarray:
        return self.posts["score"].to_numpy().astype(np.float32)

    def __len__(self) -> int:
        return self.posts.height

    def subset(self, rows: np.ndarray | slice) -> "HeadData":
        idx = np.arange(self.posts.height)[rows]
        return HeadData(self.posts[idx], self.stores)

    def features(self, role: str, ids: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, present): rows for ids (zeros where the store has none) and a bool mask."""
        store = self.stores[role]
        ids = self.ids if ids is None else ids
        present = np.array([p in store for p in ids], dtype=bool)
        out = np.zeros((len(ids), *store.spec.shape), np.dtype(store.spec.dtype))
        if present.any():
            have = [p for p, ok in zip(ids, present) if ok]
            out[present] = store.read(have)
        return out, present

