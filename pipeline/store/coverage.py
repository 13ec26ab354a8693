"""How many of the posts a command is about a store has rows for, and whether that is enough.

A head silently reads zeros for a post its store lacks, so train and score first count,
per role, what the store covers. The rule:

- `present`: the store has a row for the post.
- `no image`: an image store (its extractor's modality is image, `image_store`) without a row for a post
  that has no image (`image` null or empty, or failures.parquet says `no image`). Known
  missing by design: reported, never counted against the store.
- `failed`: no row, and failures.parquet records why (unreadable input).
- `absent`: no row and no reason: the store is partial (an extraction not run or not
  finished for these posts) or a row was lost.

coverage = present / (posts - no image). Train refuses below `min_coverage` (failed and
absent both count against it). Score flags posts with a recorded failure as
`missing_image` and refuses only when (present + failed) / (posts - no image) is below
the threshold, i.e. for rows missing without a reason.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from pipeline.core.errors import PipeError, StoreError
from pipeline.store.reader import FeatureStore

NO_IMAGE = "no image"  # the failure reason extraction records for posts without an image
DEFAULT_MIN_COVERAGE = 0.95


@dataclass
class Coverage:
    role: str
    extractor_id: str
    total: int  # posts asked about
    present: int  # with a row
    no_image: int  # known missing: no image, image store
    failed: Counter = field(default_factory=Counter)  # reason -> posts without a row, reason recorded
    absent: list[str] = field(default_factory=list)  # post ids without a row or a reason

    @property
    def expected(self) -> int:
        return self.total - self.no_image

    def ratio(self, failures_count: bool = True) -> float:
        got = self.present + (0 if failures_count else sum(self.failed.values()))
        return got / self.expected if self.expected else 1.0

    def describe(self) -> str:
        parts = [f"{self.role}: {self.extractor_id} covers {self.present} of {self.expected} posts "
                 f"({100 * self.ratio():.1f}%)"]
        if self.no_image:
            parts.append(f"{self.no_image} without an image (known missing, not counted)")
        if self.failed:
            parts.append(f"{sum(self.failed.values())} failed (" +
                         ", ".join(f"{n} {r}" for r, n in self.failed.most_common(5)) + ")")
        if self.absent:
            parts.append(f"{len(self.absent)} not extracted (e.g. {', '.join(self.absent[:3])})")
        return "; ".join(parts)


def kind_is_image(store: FeatureStore) -> bool:
    """Fallback when the caller cannot ask the extractor registry: grid and pixels rows are images."""
    return store.spec.kind in ("grid", "pixels")


def store_coverage(store: FeatureStore, posts: pl.DataFrame, role: str = "", image: bool = False) -> Coverage:
    """Counts for one store; `image`: the store's extractor reads images (posts without one have no row)."""
    ids = posts["post_id"].to_list()
    missing = [i for i, p in enumerate(ids) if p not in store]
    cov = Coverage(role, store.extractor_id, len(ids), len(ids) - len(missing), 0)
    if not missing:
        return cov
    reasons = dict(store.failures().select("post_id", "reason").iter_rows())
    no_image = [False] * len(ids)
    if "image" in posts.columns and image:
        img = posts["image"].cast(pl.Utf8)
        no_image = (img.is_null() | (img.str.strip_chars() == "")).fill_null(True).to_list()
    for i in missing:
        why = reasons.get(ids[i])
        if why == NO_IMAGE or no_image[i]:
            cov.no_image += 1
        elif why:
            cov.failed[why] += 1
        else:
            cov.absent.append(ids[i])
    return cov


def check_coverage(stores: dict[str, FeatureStore], posts: pl.DataFrame, min_coverage: float = DEFAULT_MIN_COVERAGE,
                   dataset: str = "", failures_count: bool = True,
                   image_store: Callable[[FeatureStore], bool] = kind_is_image) -> list[str]:
    """One line per role; StoreError with the counts and the failures when a role is below `min_coverage`.
    `image_store` says which stores hold image features (the store layer does not know extractors)."""
    if not 0.0 <= min_coverage <= 1.0:
        raise PipeError(f"--min-coverage must be between 0 and 1 (a fraction of posts), got {min_coverage}")
    covs = [store_coverage(st, posts, role, image_store(st)) for role, st in stores.items()]
    low = [c for c in covs if c.ratio(failures_count) < min_coverage]
    if low:
        where = f" --dataset {dataset}" if dataset else ""
        raise StoreError(
            "stores cover too few posts (minimum " + f"{100 * min_coverage:.0f}%):\n  " +
            "\n  ".join(c.describe() for c in low) +
            f"\nrun `pipe extract{where} --backbone ...` to extract the missing posts (`--retry-failed` retries "
            "failures), `pipe store verify` if rows were lost, or pass a lower --min-coverage")
    return [c.describe() for c in covs]
