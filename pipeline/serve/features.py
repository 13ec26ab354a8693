"""Features of a service's posts, in memory: a bounded cache keyed by content, and a store view.

`MemoryStore` answers what a head asks of a `FeatureStore` (spec, ids, rows by id) for
the posts of one forward pass; its identity (manifest, config, artifacts such as the
token vocabulary) is the run's own store's, since the same extractor made both.
`FeatureCache` keeps rows by (extractor id, blake2b of the image bytes or post text), so a
draft sent again is not extracted again; only complete rows enter it, after their forward
pass returned, so a request that fails half-way leaves nothing half-made behind.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl

from pipeline.store import FeatureStore
from pipeline.store.manifest import FAILURE_SCHEMA


class MemoryStore:
    """Rows by post id, read like a FeatureStore; identity from the run's store `base`."""

    def __init__(self, base: FeatureStore, rows: dict[str, np.ndarray]) -> None:
        self.base = base
        self.spec = base.spec
        self.manifest = base.manifest
        self._rows = rows
        self._dtype = np.dtype(self.spec.dtype)

    @property
    def extractor_id(self) -> str:
        return self.base.extractor_id

    @property
    def config(self) -> dict[str, Any]:
        return self.base.config

    @property
    def ids(self) -> list[str]:
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, post_id: object) -> bool:
        return post_id in self._rows

    def failures(self) -> pl.DataFrame:
        return pl.DataFrame(schema=FAILURE_SCHEMA)

    def artifact_path(self, name: str) -> Path:
        return self.base.artifact_path(name)

    def read(self, post_ids: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        missing = [p for p in post_ids if p not in self._rows]
        if missing:
            raise KeyError(f"{len(missing)} post ids not in {self.extractor_id}: {missing[:5]}")
        if out is None:
            out = np.empty((len(post_ids), *self.spec.shape), self._dtype)
        for i, p in enumerate(post_ids):
            out[i] = self._rows[p]
        return out

    def iter_batches(self, batch_size: int, post_ids: Sequence[str] | None = None, shuffle: bool = False,
                     seed: int = 0) -> Iterator[tuple[list[str], np.ndarray]]:
        ids = list(self._rows) if post_ids is None else list(post_ids)
        if shuffle:
            ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
        for i in range(0, len(ids), batch_size):
            yield ids[i:i + batch_size], self.read(ids[i:i + batch_size])


class FeatureCache:
    """Least-recently-used rows, at most `max_bytes` in all; safe across threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # 0 turns the cache off
        self.bytes = 0
        self.hits = self.misses = 0
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                self.misses += 1
                return None
            self._rows.move_to_end(key)
            self.hits += 1
            return row

    def has(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._rows

    def put(self, key: tuple[str, str], row: np.ndarray) -> None:
        if row.nbytes > self.max_bytes:
            return
        row = np.array(row, copy=True)  # its own memory, never a view into a batch
        row.flags.writeable = False
        with self._lock:
            old = self._rows.pop(key, None)
            self.bytes -= old.nbytes if old is not None else 0
            self._rows[key] = row
            self.bytes += row.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self._rows.popitem(last=False)
                self.bytes -= dropped.nbytes

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"rows": len(self._rows), "bytes": self.bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                    "misses": self.misses}
