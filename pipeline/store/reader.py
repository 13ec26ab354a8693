"""Read-only view of one store through memory maps: the only way heads see features.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import polars as pl

from pipeline.core.errors import IntegrityError, StoreError
from pipeline.core.io import sha256_file
from pipeline.store.integrity import check_shard, load_stamps, save_stamps
from pipeline.store.manifest import Manifest, read_failures, store_lock


class FeatureStore:
    """Read-only view of one store: ids, rows by id, batches. The only way heads see features.

    Opening checks every shard against the manifest (spec, rows, sha256 unless its
    verified stamp still matches; see `pipeline.store.integrity`), so no byte is served
    unchecked, and reads after that cost nothing extra.

    Memory maps are opened lazily per process (they are dropped when pickled), so
    DataLoader and dask workers each open their own read-only handles.
    """

    def __init__(self, directory: str | Path, wait: bool = False, writes: bool = True) -> None:
        """`writes=False`: a store outside the command's roots (found through a run's recorded
        cache) is only read: no lock file created, no verified stamps saved."""
        self.directory = Path(directory)
        # Under the shared lock: no extraction is half-way through this store while it is checked.
        with store_lock(self.directory, wait=wait, shared=True, create=writes):
            self.manifest = Manifest.load(self.directory)
            self.spec = self.manifest.spec
            stamps = load_stamps(self.directory)
            before = {k: dict(v) for k, v in stamps.items()}
            metas = [check_shard(self.directory, s, self.spec, stamps) for s in self.manifest.shards]
            if stamps != before and writes:
                save_stamps(self.directory, stamps)
        self._dtype = np.dtype(self.spec.dtype)
        self._shards: list[tuple[Path, int | None, int]] = []  # (path, byte offset, rows)
        self._index: dict[str, tuple[int, int]] = {}
        for si, (s, meta) in enumerate(zip(self.manifest.shards, metas)):
            self._shards.append((self.directory / s["file"], meta.offset, len(meta.ids)))
            served = self.manifest.serves(s["file"])
            for row, pid in enumerate(meta.ids):
                if served(pid):  # a withdrawn (stale) row is never served
                    self._index[pid] = (si, row)  # newer shards come later and win
                else:
                    self._index.pop(pid, None)
        self._maps: list[np.ndarray] | None = None

    # -- identity -------------------------------------------------------------------
    @property
    def extractor_id(self) -> str:
        return self.manifest.extractor_id

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def ids(self) -> list[str]:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, post_id: object) -> bool:
        return post_id in self._index

    def failures(self) -> pl.DataFrame:
        return read_failures(self.directory)

    def artifact_path(self, name: str) -> Path:
        """The artifact's file once its sha256 is the manifest's (artifacts are small: checked on every call)."""
        if name not in self.manifest.artifacts:
            raise StoreError(f"{self.directory} has no artifact {name!r}")
        path = self.directory / name
        if not path.is_file() or sha256_file(path) != self.manifest.artifacts[name]:
            raise IntegrityError(f"{path}: artifact missing or corrupted (its sha256 is not the manifest's); "
                                 "remove the store (`pipe store rm`) and extract again")
        return path

    # -- reading --------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

    def _mapped(self) -> list[np.ndarray]:
        if self._maps is None:
            maps = []
            for path, offset, rows in self._shards:
                shape = (rows, *self.spec.shape)
                if rows == 0:
                    maps.append(np.zeros(shape, self._dtype))
                elif offset is None:  # not contiguous (written by another tool): fall back to h5py
                    with h5py.File(path, "r") as f:
                        maps.append(f["features"][()])
                else:
                    maps.append(np.memmap(path, dtype=self._dtype, mode="r", offset=offset, shape=shape))
            self._maps = maps
        return self._maps

    def read(self, post_ids: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """Rows for `post_ids` in that order; KeyError naming the first few missing ids."""
        missing = [p for p in post_ids if p not in self._index]
        if missing:
            raise KeyError(f"{len(missing)} post ids not in {self.extractor_id}: {missing[:5]}")
        n = len(post_ids)
        if out is None:
            out = np.empty((n, *self.spec.shape), self._dtype)
        maps = self._mapped()
        loc = [self._index[p] for p in post_ids]
        k = 0
        while k < n:  # copy runs of consecutive rows as one slice, others row by row: one copy each
            si, row = loc[k]
            end = k + 1
            while end < n and loc[end] == (si, row + end - k):
                end += 1
            out[k:end] = maps[si][row : row + end - k]
            k = end
        return out

    def iter_batches(
        self,
        batch_size: int,
        post_ids: Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        ids = list(self._index) if post_ids is None else list(post_ids)
        if shuffle:
            rng = np.random.default_rng(seed)
            ids = [ids[i] for i in rng.permutation(len(ids))]
        for i in range(0, len(ids), batch_size):
            chunk = ids[i : i + batch_size]
            yield chunk, self.read(chunk)
