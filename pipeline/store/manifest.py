"""A store's layout: file names, the manifest, the writer lock and the failures table.

    manifest.json        extractor id, config, spec, finished shards (rows, sha256)
    shard-00000.h5       datasets `post_id` (utf-8), `features` (N, *shape), `source` (utf-8)
    failures.parquet     post_id, reason, source: inputs that could not be read
    .lock                an flock held by the one writer (dies with its process)
    <artifacts>          e.g. vocab.json, listed in the manifest with their sha256
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl

from pipeline.core.errors import IntegrityError, StoreError, StoreLocked
from pipeline.core.io import atomic_write_bytes, open_for_write, real_folder
from pipeline.core.specs import FeatureSpec

MANIFEST = "manifest.json"
FAILURES = "failures.parquet"
LOCK = ".lock"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
ARTIFACT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FORMAT_VERSION = 1

@dataclass
class Manifest:
    extractor_id: str  # directory name: registry name, layer/size, config hash
    extractor: str  # registry name of the extractor that wrote the store
    config: dict[str, Any]  # the extractor config that determines the output
    spec: FeatureSpec  # kind, per-row shape and dtype of `features`
    shards: list[dict[str, Any]]  # finished shards in write order: file, rows, sha256
    artifacts: dict[str, str]  # file name -> sha256 of side files (vocabularies, ...)
    # post_id -> shard index: its rows in shards numbered below are withdrawn (its input changed,
    # went or became unreadable since), so a stale row is never served; a newer shard serves it again
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows the finished shards hold (0 for a store whose extraction never finished a shard)."""
        return sum(int(s["rows"]) for s in self.shards)

    @property
    def digest(self) -> str:
        """sha256 of the manifest's content (shards with their sha256, withdrawn rows, artifacts):
        a run records it per role, so a later command can tell the store changed since."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def serves(self, file: str) -> Callable[[str], bool]:
        """Whether a row of `file` for a post id is served (not withdrawn by a later `dropped` entry)."""
        index = shard_index(file)
        return lambda pid: self.dropped.get(pid, -1) <= index

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "extractor_id": self.extractor_id,
            "extractor": self.extractor,
            "config": self.config,
            "spec": self.spec.to_json(),
            "shards": self.shards,
            "artifacts": self.artifacts,
            **({"dropped": self.dropped} if self.dropped else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Manifest":
        for s in d.get("shards", []):  # names only: a manifest never points outside its folder
            if not SHARD_RE.match(str(s.get("file"))) or not isinstance(s.get("rows"), int) or not isinstance(s.get("sha256"), str):
                raise ValueError(f"bad shard entry {s!r}")
        for name in d.get("artifacts", {}):
            if not ARTIFACT_RE.fullmatch(name):
                raise ValueError(f"bad artifact name {name!r}")
        dropped = d.get("dropped", {})
        if not isinstance(dropped, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in dropped.values()):
            raise ValueError("bad dropped entry: post id -> shard index")
        return cls(
            extractor_id=d["extractor_id"],
            extractor=d["extractor"],
            config=d.get("config", {}),
            spec=FeatureSpec.from_json(d["spec"]),
            shards=list(d.get("shards", [])),
            artifacts=dict(d.get("artifacts", {})),
            dropped=dict(dropped),
        )

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST
        if not path.exists():
            raise StoreError(f"no feature store at {directory} (missing {MANIFEST})")
        try:
            return cls.from_json(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise IntegrityError(f"{path} is not a valid manifest ({type(e).__name__}: {e}); remove the store "
                                 "(`pipe store rm`) and extract again") from None

    def save(self, directory: Path) -> None:
        atomic_write_bytes(directory / MANIFEST, json.dumps(self.to_json(), indent=1).encode())


def shard_index(file: str) -> int:
    """The number in `shard-NNNNN.h5`."""
    return int(SHARD_RE.match(file).group(1))  # type: ignore[union-attr]


@contextmanager
def store_lock(directory: Path, wait: bool = False, shared: bool = False, create: bool = True) -> Iterator[None]:
    """An OS file lock: released by the kernel when its process dies, so a killed run never blocks.

    The one writer holds it exclusive; a reader holds it shared while it opens the store, so a
    train never starts on a half-grown store and an extraction never starts mid-check. The lock
    file is never opened through a link; `create=False` (a store outside the command's roots)
    creates nothing: no lock file, no lock.
    """
    if shared:
        if not directory.is_dir():
            raise StoreError(f"no feature store at {directory}")
        try:
            fd = open_for_write(directory / LOCK, os.O_RDONLY | (os.O_CREAT if create else 0))
        except OSError:  # a read-only store nobody can write to (or no lock file): nothing to wait for
            yield
            return
    else:
        real_folder(directory, create=True)
        fd = open_for_write(directory / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                if shared:
                    raise StoreLocked(f"an extraction (pid {holder}) is writing to {directory}; wait for it to finish "
                                      "and run again, so no head reads a half-written store") from None
                raise StoreLocked(
                    f"another process (pid {holder}) is writing to {directory}; "
                    "wait for it to finish, or pass --wait to queue behind it"
                ) from None
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        if not shared:
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
    try:
        return pl.read_parquet(p).select(FAILURE_SCHEMA.keys()).cast(FAILURE_SCHEMA)
    except Exception as e:  # polars raises several types for a damaged file
        raise IntegrityError(f"{p}: unreadable failures table ({type(e).__name__}); delete it and run "
                             "`pipe extract ... --retry-failed` to record failures again") from None
