"""Images as a role for fine-tuning: decoded by post id in DataLoader worker processes.

Fine-tuning cannot read a feature store (the features change as the backbone trains), so
the head's visual role is filled by `ImageRole`, which answers the same questions a
`FeatureStore` does (`in`, `spec`, `read`) from the posts' image files. Decoding uses
extraction's own reader (`pipeline.extract.reader.ImageItems` and `collate`: the same
RGB conversion, resize and failure reasons) in persistent DataLoader workers; each
`read` splits its ids over the workers, and the trainer's loader thread calls it a few
batches ahead, so decoding overlaps the training step.

A bad image (corrupt, truncated, missing, not an image) is recorded with its reason
(`failures`) and is not fatal: its row comes back as NaN, the fine-tuning model turns it
into "no image" for that batch (zero features, present = False), and from then on the
post is simply not `in` the role, as a post without a row in a store.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader

from pipeline.core.specs import FeatureSpec
from pipeline.extract.reader import ImageItems, collate
from pipeline.nn.backbone import resize_square


class _Resize:
    """What ImageItems asks of an extractor: `preprocess(PIL image)` -> (3, s, s) uint8."""

    def __init__(self, size: int) -> None:
        self.size = size

    def preprocess(self, image: Any) -> torch.Tensor:
        return resize_square(image, self.size)


class _Requests:
    """A batch sampler whose batches are set before each pass over the persistent loader."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageFeed:
    """Decode images by post id in `workers` persistent DataLoader processes (0: in this thread)."""

    def __init__(self, items: list[tuple[str, str]], size: int, workers: int) -> None:
        self.size, self.workers = size, workers
        self.index = {pid: i for i, (pid, _) in enumerate(items)}
        self.failures: dict[str, str] = {}  # post_id -> reason, as extraction's failures.parquet
        self._lock = threading.Lock()  # one pass over the loader at a time
        self._requests = _Requests()
        fork = "fork" if workers and sys.platform.startswith("linux") else None  # as extraction does
        self._loader: DataLoader | None = DataLoader(
            ImageItems(_Resize(size), items), batch_sampler=self._requests, num_workers=workers, collate_fn=collate,
            persistent_workers=workers > 0, multiprocessing_context=fork)
        if items:
            self.decode([items[0][0]])  # start the workers now, from the calling (main) thread

    def decode(self, ids: list[str]) -> np.ndarray:
        """(B, 3, s, s) float16 pixel values 0..255; a NaN row for an image that failed."""
        out = np.full((len(ids), 3, self.size, self.size), np.nan, np.float16)
        idx = [self.index[p] for p in ids if p in self.index]
        if not idx or self._loader is None:
            return out
        got: dict[str, torch.Tensor] = {}
        with self._lock:
            k = max(1, min(self.workers, len(idx)))
            self._requests.batches = [c.tolist() for c in np.array_split(np.array(idx), k) if len(c)]
            for b in self._loader:
                if b["x"] is not None:
                    got.update(zip(b["ids"], b["x"]))
                for pid, reason, _ in b["failures"]:
                    self.failures[pid] = reason
        for i, p in enumerate(ids):
            if p in got:
                out[i] = got[p].numpy()
        return out

    def close(self) -> None:
        """Stop the worker processes."""
        self._loader = None


class ImageRole:
    """A FeatureStore look-alike for one part: rows computed from the posts' images.

    In `features` mode (the head's `prepare`, e.g. UHAN's 1/RMS scale) `read` runs the
    backbone as it is now, without gradients; in `images` mode (training batches) it
    returns the decoded pixels and the fine-tuning model runs the backbone itself.
    """

    def __init__(self, posts: pl.DataFrame, feed: ImageFeed, features: FeatureSpec, extractor_id: str,
                 forward: Callable[[np.ndarray], np.ndarray]) -> None:
        has = posts.filter(pl.col("image").is_not_null() & (pl.col("image").str.strip_chars() != ""))
        self.posts = set(has["post_id"].to_list())
        self.feed = feed
        self.features = features  # the backbone's output: what the head's meta records
        self.extractor_id = extractor_id  # named in messages, like a store's
        self.forward = forward  # (B, 3, s, s) pixels -> (B, *features.shape) float32, no gradients
        self.mode = "features"

    @property
    def spec(self) -> FeatureSpec:
        if self.mode == "features":
            return FeatureSpec(self.features.kind, self.features.shape, "float32")
        return FeatureSpec(self.features.kind, (3, self.feed.size, self.feed.size), "float16")

    def __contains__(self, post_id: object) -> bool:
        return post_id in self.posts and post_id not in self.feed.failures

    def __len__(self) -> int:
        return len(self.posts)

    @property
    def ids(self) -> list[str]:
        return sorted(self.posts)

    def read(self, post_ids: list[str]) -> np.ndarray:
        pixels = self.feed.decode(list(post_ids))
        return pixels if self.mode == "images" else self.forward(pixels)
