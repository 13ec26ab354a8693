"""The single writer of one store: lock, adoption of orphan shards, manifest, failures, artifacts.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from pipeline.core.errors import IntegrityError, StoreError
from pipeline.core.io import atomic_write_bytes, parquet_bytes, sha256_file
from pipeline.core.specs import FeatureSpec
from pipeline.store.integrity import load_stamps, orphan_problem, quarantine, save_stamps, spec_problem, stamp
from pipeline.store.manifest import FAILURE_SCHEMA, FAILURES, MANIFEST, SHARD_RE, Manifest, read_failures, store_lock
from pipeline.store.shards import ShardMeta, read_shard_meta, repair_hint, write_shard_file


class StoreWriter:
    """The single writer of one store. Use as a context manager: it holds the lock."""

    def __init__(
        self,
        directory: Path,
        extractor_id: str,
        extractor: str,
        spec: FeatureSpec,
        config: dict[str, Any],
        wait: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.wait = wait
        self._lock_cm = None
        self.manifest = Manifest(extractor_id, extractor, config, spec, [], {})
        self._metas: dict[str, ShardMeta] = {}  # file -> metadata read at open
        self._stamps: dict[str, Any] = {}  # .verified.json, read at open

    def __enter__(self) -> "StoreWriter":
        self._created = not self.directory.exists()
        self.quarantined: list[str] = []  # orphan shards refused at adoption, with why
        self._lock_cm = store_lock(self.directory, self.wait)
        self._lock_cm.__enter__()
        try:
            self._open()
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock_cm is None:  # never entered
            return
        try:
            if exc[0] is not None and self._created and not self.manifest.shards:
                # failed before its first shard (e.g. a bad --weights): leave no empty store behind
                shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            self._lock_cm.__exit__(*exc)

    def _open(self) -> None:
        d = self.directory
        if (d / MANIFEST).exists():
            old = Manifest.load(d)
            if old.spec != self.manifest.spec or old.extractor_id != self.manifest.extractor_id:
                raise StoreError(
                    f"{d} holds {old.extractor_id} {old.spec}, not {self.manifest.extractor_id} {self.manifest.spec}"
                )
            self.manifest.shards = old.shards
            self.manifest.artifacts = old.artifacts
            self.manifest.dropped = old.dropped
        # Leftovers of a killed run: temp files are partial by construction.
        for tmp in d.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        spec = self.manifest.spec
        self._metas = {}
        for s in self.manifest.shards:  # a damaged listed shard stops here, named, not deep in h5py
            why = "missing"
            if (d / s["file"]).exists():
                self._metas[s["file"]] = meta = read_shard_meta(d / s["file"])
                why = spec_problem(meta, spec, s["rows"])
            if why:
                raise IntegrityError(f"{d / s['file']}: {why}; {repair_hint(d)}")
        # Complete shards renamed into place whose manifest update was lost (a kill between
        # rename and manifest write, or a dask worker's shard): adopt them once their spec and
        # rows check out; anything else (a copy, another store's shard) goes to quarantine/.
        listed = {s["file"] for s in self.manifest.shards}
        orphans = sorted(p for p in d.glob("shard-*.h5") if SHARD_RE.match(p.name) and p.name not in listed)
        stored = set(self.done_sources().items()) if orphans else set()
        for p in orphans:
            try:
                meta = read_shard_meta(p)
                why = orphan_problem(meta, spec, stored)
            except IntegrityError as e:  # unreadable
                why = str(e).split(";")[0]
            if why:
                self.quarantined.append(f"{p.name}: {why} -> {quarantine(d, p, why)}")
                continue
            self._metas[p.name] = meta
            stored.update(zip(meta.ids, meta.sources))
            self.manifest.shards.append({"file": p.name, "rows": len(meta.ids), "sha256": sha256_file(p)})
        self.manifest.shards.sort(key=lambda s: s["file"])
        self.manifest.save(d)
        self._stamps = load_stamps(d)  # read once: nobody else writes them while this writer holds the lock

    # -- what is already there ------------------------------------------------------
    def done_sources(self) -> dict[str, str]:
        """post_id -> source fingerprint of its newest served row (withdrawn rows do not count)."""
        return done_sources(self.manifest, self.directory, self._metas)

    def withdraw(self, post_ids: Sequence[str]) -> None:
        """Stop serving the stored rows of `post_ids` (their input changed, went or became
        unreadable): rows of shards numbered below the next one are withdrawn; a post
        extracted again lands in a newer shard and is served again."""
        if post_ids:
            nxt = self.next_index()
            self.manifest.dropped.update(dict.fromkeys(post_ids, nxt))
            self.manifest.save(self.directory)

    def failures(self) -> pl.DataFrame:
        return read_failures(self.directory)

    def next_index(self) -> int:
        used = [int(SHARD_RE.match(s["file"]).group(1)) for s in self.manifest.shards]  # type: ignore[union-attr]
        return max(used, default=-1) + 1

    # -- writing --------------------------------------------------------------------
    def write_shard(self, post_ids: Sequence[str], features: np.ndarray, sources: Sequence[str]) -> dict[str, Any]:
        entry = write_shard_file(self.directory, self.next_index(), post_ids, features, sources, self.manifest.spec)
        self.add_shard(entry)
        return entry

    def add_shard(self, entry: dict[str, Any]) -> None:
        self.manifest.shards.append(entry)
        self.manifest.shards.sort(key=lambda s: s["file"])
        self.manifest.save(self.directory)
        # The sha256 was just computed from these bytes: stamp it so the first reader need not hash again.
        stamp(self._stamps, self.directory / entry["file"], entry["sha256"])
        save_stamps(self.directory, self._stamps)

    def record_failures(self, failed: pl.DataFrame, succeeded: Sequence[str] = ()) -> None:
        """Merge failures (post_id, reason, source); drop ids that have since succeeded."""
        old = self.failures()
        new = pl.concat([old, failed.select(FAILURE_SCHEMA.keys()).cast(FAILURE_SCHEMA)], how="vertical")
        new = new.unique("post_id", keep="last", maintain_order=True)
        if succeeded:
            new = new.filter(~pl.col("post_id").is_in(list(succeeded)))
        buf = parquet_bytes(new)
        atomic_write_bytes(self.directory / FAILURES, buf)

    def save_artifact(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.directory / name, data)
        self.manifest.artifacts[name] = hashlib.sha256(data).hexdigest()
        self.manifest.save(self.directory)


def done_sources(manifest: Manifest, directory: Path, metas: dict[str, ShardMeta] | None = None) -> dict[str, str]:
    """post_id -> source fingerprint of its newest served row in the store at `directory` (withdrawn
    rows do not count); `metas`: shard metadata already read, by file."""
    out: dict[str, str] = {}
    for s in manifest.shards:
        meta = (metas or {}).get(s["file"]) or read_shard_meta(directory / s["file"])
        served = manifest.serves(s["file"])
        for pid, src in zip(meta.ids, meta.sources):
            if served(pid):
                out[pid] = src
            else:
                out.pop(pid, None)
    return out
