"""A store's layout: file names, the manifest, the writer lock and the failures table.

    manifest.json        extractor id, config, spec, finished shards (rows, sha256)
    shard-00000.h5       datasets `post_id` (utf-8), `features` (N, *shape), `source` (utf-8)
    failures.parquet     post_id, reason, source: inputs that could not be read
    .lock                an flock held by the one writer (dies with its process)
    <artifacts>          e.g. vocab.json, listed in the manifest with their sha256
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from pipeline.core.errors import StoreError, StoreLocked
from pipeline.core.io import atomic_write_bytes
from pipeline.core.specs import FeatureSpec

MANIFEST = "manifest.json"
FAILURES = "failures.parquet"
LOCK = ".lock"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
FORMAT_VERSION = 1

@dataclass
class Manifest:
    extractor_id: str  # directory name: registry name, layer/size, config hash
    extractor: str  # registry name of the extractor that wrote the store
    config: dict[str, Any]  # the extractor config that determines the output
    spec: FeatureSpec  # kind, per-row shape and dtype of `features`
    shards: list[dict[str, Any]]  # finished shards in write order: file, rows, sha256
    artifacts: dict[str, str]  # file name -> sha256 of side files (vocabularies, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "extractor_id": self.extractor_id,
            "extractor": self.extractor,
            "config": self.config,
            "spec": self.spec.to_json(),
            "shards": self.shards,
            "artifacts": self.artifacts,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Manifest":
        return cls(
            extractor_id=d["extractor_id"],
            extractor=d["extractor"],
            config=d.get("config", {}),
            spec=FeatureSpec.from_json(d["spec"]),
            shards=list(d.get("shards", [])),
            artifacts=dict(d.get("artifacts", {})),
        )

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST
        if not path.exists():
            raise StoreError(f"no feature store at {directory} (missing {MANIFEST})")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError) as e:
            raise StoreError(f"{path} is not a valid manifest: {e}") from e

    def save(self, directory: Path) -> None:
        atomic_write_bytes(directory / MANIFEST, json.dumps(self.to_json(), indent=1).encode())


@contextmanager
def store_lock(directory: Path, wait: bool = False) -> Iterator[None]:
    """An OS file lock: released by the kernel when its process dies, so a killed run never blocks."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise StoreLocked(
                    f"another process (pid {holder}) is writing to {directory}; "
                    "wait for it to finish, or pass --wait to queue behind it"
                ) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock

FAILURE_SCHEMA = {"post_id": pl.Utf8, "reason": pl.Utf8, "source": pl.Utf8}

def read_failures(directory: Path) -> pl.DataFrame:
    p = Path(directory) / FAILURES
    if not p.exists():
        return pl.DataFrame(schema=FAILURE_SCHEMA)
    return pl.read_parquet(p).cast(FAILURE_SCHEMA)
