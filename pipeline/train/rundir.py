"""Run directories: self-describing results of one `pipe train`.

    runs/<name>/
        config.json          written when the run starts: head, resolved head config,
                             dataset, stores read (extractor ids, specs), split, seeds,
                             library versions, git revision
        train_log.jsonl      one JSON object per line: run/repeat events and each
                             repeat's validation curve (the head's `history`)
        model/               the fitted head of repeat 0 (`Head.save`; no pickled code)
        predictions.parquet  post_id, split, y, yhat for every labelled post, from repeat 0
                             (the saved model, so `pipe score` reproduces these numbers)
        metrics.json         written at the end: {"valid": {...}, "test": {...}, "std":
                             {"valid": {...}, "test": {...}}, "repeats": [...]}; means
                             and sample stds over the repeats

"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes, json_safe

CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
TRAIN_LOG = "train_log.jsonl"
MODEL_DIR = "model"

LIBRARIES = ("pipe", "numpy", "polars", "pyarrow", "h5py", "scipy", "scikit-learn", "lightgbm", "torch", "torchvision")


def library_versions() -> dict[str, str | None]:
    found: dict[str, str] = {}
    for dist in metadata.distributions():  # one scan of site-packages
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        found.setdefault(name, dist.version)
    return {"python": sys.version.split()[0], **{lib: found.get(lib) for lib in LIBRARIES}}


def git_revision() -> dict[str, Any]:
    """Commit of the code that trained (and whether it had local changes); None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"revision": None, "dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def default_run_name(head: str, ablate: tuple[str, ...] | list[str] = ()) -> str:
    """head, ablations, then a timestamp: `uhan-no-user-20250101-120000`."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join([head, *[f"no-{a}" for a in ablate], stamp])


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=1, allow_nan=False) + "\n").encode())


class RunWriter:
    """Creates a run directory and writes its files in the order the run produces them.

    A name the user chose must be new; a default name gets `-2`, `-3`, ... when runs
    started in the same second would collide.
    """

    def __init__(self, runs: str | Path | None, name: str, unique: bool = False) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise PipeError(f"invalid run name {name!r}: use a plain folder name")
        self.dir = paths.runs_root(runs) / name
        k = 1
        while unique and self.dir.exists():
            k += 1
            self.dir = paths.runs_root(runs) / f"{name}-{k}"
        if self.dir.exists() and any(self.dir.iterdir()):
            raise PipeError(f"run folder {self.dir} already exists; pass another --name or remove it")
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def model_dir(self) -> Path:
        d = self.dir / MODEL_DIR
        d.mkdir(exist_ok=True)
        return d

    def write_config(self, config: dict[str, Any]) -> None:
        _write_json(self.dir / CONFIG, config)

    def log(self, event: dict[str, Any]) -> None:
        """Append one line to train_log.jsonl (flushed at once, so a crashed run keeps its log)."""
        with open(self.dir / TRAIN_LOG, "a") as f:
            f.write(json.dumps(json_safe({"time": now_utc(), **event}), allow_nan=False) + "\n")

    def write_predictions(self, df: pl.DataFrame) -> None:
        df.select("post_id", "split", "y", "yhat").write_parquet(self.dir / PREDICTIONS)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_json(self.dir / METRICS, metrics)


@dataclass
class Run:
    """A finished or running run, as `pipe evaluate` and `pipe score` read it."""

    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any] | None  # None while running or after a crash

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def head(self) -> str:
        return self.config["head"]

    @property
    def stores(self) -> dict[str, str]:
        """role -> extractor id the run read."""
        return {role: r["extractor_id"] for role, r in self.config.get("stores", {}).items()}

    def load_head(self) -> Any:
        import heads

        model = self.dir / MODEL_DIR
        if not model.is_dir():
            raise PipeError(f"run {self.dir} has no saved model ({MODEL_DIR}/); did training finish?")
        return heads.get(self.head).load(model)

    def predictions(self) -> pl.DataFrame:
        return pl.read_parquet(self.dir / PREDICTIONS)


def find_run(ref: str | Path, runs: str | Path | None = None) -> Path:
    """A run by path, or by name under the runs root."""
    p = Path(ref)
    for cand in (p, paths.runs_root(runs) / p):
        if (cand / CONFIG).is_file():
            return cand
    raise PipeError(f"no run at {ref!r} (looked for {CONFIG} in {p} and in {paths.runs_root(runs) / p})")


def load_run(ref: str | Path, runs: str | Path | None = None) -> Run:
    d = find_run(ref, runs)
    try:
        config = json.loads((d / CONFIG).read_text())
        metrics = json.loads((d / METRICS).read_text()) if (d / METRICS).exists() else None
    except ValueError as e:
        raise PipeError(f"run {d} has an unreadable JSON file: {e}") from e
    return Run(d, config, metrics)
