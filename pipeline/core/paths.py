"""Where datasets, stores and runs live: `$PIPE_CACHE` (./cache) and `$PIPE_RUNS` (./runs).

Every name that becomes a path component (dataset, run, extractor id) is checked here, and
every path built from one is checked to resolve inside its root, so no option can make
pipe write or delete outside the cache or runs folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.core.errors import PipeError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "one folder name of letters, digits, '.', '_' and '-', starting with a letter or digit"


def cache_root(cache: str | Path | None = None) -> Path:
    return Path(cache or os.environ.get("PIPE_CACHE") or "cache")


def runs_root(runs: str | Path | None = None) -> Path:
    return Path(runs or os.environ.get("PIPE_RUNS") or "runs")


def check_name(name: str, what: str = "name") -> str:
    """`name` when it is a valid single path component (e.g. `flickr-2016`), else PipeError."""
    if not isinstance(name, str) or len(name) > 200 or not NAME_RE.fullmatch(name):
        raise PipeError(f"invalid {what} {name!r}: use {NAME_RULE} (no '/', '..' or absolute paths)")
    return name


def contained(path: Path, root: Path) -> Path:
    """`path` when it resolves (symlinks followed) inside `root`, else PipeError before any file is touched."""
    real, base = Path(path).resolve(), Path(root).resolve()
    if real != base and base not in real.parents:
        raise PipeError(f"{path} resolves to {real}, outside {base}; pipe only writes inside its cache and runs folders")
    return Path(path)


def dataset_dir(dataset: str, cache: str | Path | None = None) -> Path:
    root = cache_root(cache)
    return contained(root / check_name(dataset, "dataset name"), root)


def posts_path(dataset: str, cache: str | Path | None = None) -> Path:
    return dataset_dir(dataset, cache) / "posts.parquet"


def dataset_names(cache: str | Path | None = None) -> list[str]:
    """The datasets of the cache: folders holding a posts table (`pipe list datasets`, "did you mean")."""
    root = cache_root(cache)
    return sorted(d.name for d in root.iterdir() if (d / "posts.parquet").is_file()) if root.is_dir() else []


def run_names(runs: str | Path | None = None) -> list[str]:
    """The runs of the runs root: folders holding a config.json (`pipe list runs`, "did you mean")."""
    root = runs_root(runs)
    return sorted(d.name for d in root.iterdir() if (d / "config.json").is_file()) if root.is_dir() else []


def features_dir(dataset: str, cache: str | Path | None = None) -> Path:
    return contained(dataset_dir(dataset, cache) / "features", cache_root(cache))


def store_dir(dataset: str, extractor_id: str, cache: str | Path | None = None) -> Path:
    """`<cache>/<dataset>/features/<extractor_id>`, both names checked."""
    return contained(features_dir(dataset, cache) / check_name(extractor_id, "extractor id"), cache_root(cache))


def run_dir(name: str, runs: str | Path | None = None) -> Path:
    root = runs_root(runs)
    return contained(root / check_name(name, "run name"), root)
