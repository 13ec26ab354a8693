"""Where datasets, stores and runs live: `$PIPE_CACHE` (./cache) and `$PIPE_RUNS` (./runs)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache: str | Path | None = None) -> Path:
    return Path(cache or os.environ.get("PIPE_CACHE") or "cache")


def runs_root(runs: str | Path | None = None) -> Path:
    return Path(runs or os.environ.get("PIPE_RUNS") or "runs")


def dataset_dir(dataset: str, cache: str | Path | None = None) -> Path:
    return cache_root(cache) / dataset


def posts_path(dataset: str, cache: str | Path | None = None) -> Path:
    return dataset_dir(dataset, cache) / "posts.parquet"


def features_dir(dataset: str, cache: str | Path | None = None) -> Path:
    return dataset_dir(dataset, cache) / "features"
