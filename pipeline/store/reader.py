"""Read-only view of one store through memory maps: the only way heads see features.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import polars as pl

from pipeline.core.errors import IntegrityError, StoreError
from pipeline.core.io import sha256_file
from pipeline.store.integrity import check_shard, load_stamps, save_stamps
from pipeline.store.manifest import Manifest, read_failures, store_lock


ROW_LOOP = 16384  # bytes: a scattered row at least this large is copied on its own (the copy dominates)


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
        self._row_bytes = int(np.prod(self.spec.shape)) * self._dtype.itemsize
        self._shards: list[tuple[Path, int | None, int]] = []  # (path, byte offset, rows)
        self._index: dict[str, int] = {}  # post id -> row over all shards (shard start + row in the shard)
        start = 0
        for s, meta in zip(self.manifest.shards, metas):
            self._shards.append((self.directory / s["file"], meta.offset, len(meta.ids)))
            served = self.manifest.serves(s["file"])
            for row, pid in enumerate(meta.ids):
                if served(pid):  # a withdrawn (stale) row is never served
                    self._index[pid] = start + row  # newer shards come later and win
                else:
                    self._index.pop(pid, None)
            start += len(meta.ids)
        counts = [rows for _, _, rows in self._shards]
        self._starts = np.cumsum([0] + counts)  # (shards + 1,) the first row of each shard
        self._shard_of = np.repeat(np.arange(len(counts), dtype=np.int32), counts)  # row -> its shard
        self._row_of = (np.arange(start, dtype=np.int64) - np.repeat(self._starts[:-1], counts)).astype(np.int32)
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

    def contains(self, post_ids: Sequence[str]) -> np.ndarray:
        """(n,) bool: which of `post_ids` the store has."""
        return np.array(list(map(self._index.__contains__, post_ids)), bool)

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
        """One array per shard: plain ndarray views of read-only memory maps (a np.memmap
        slice costs a Python object of its own on every row)."""
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
                    maps.append(np.memmap(path, dtype=self._dtype, mode="r", offset=offset, shape=shape).view(np.ndarray))
            self._maps = maps
        return self._maps

    def release(self) -> None:
        """Unmaps the shards: the file pages read so far leave this process's resident memory
        (they stay in the page cache); the next read maps them again. For a pass over a
        store larger than the memory one wants to hold (LightGBM's Dataset, heads/lightgbm.py)."""
        self._maps = None

    def locate(self, post_ids: Sequence[str]) -> np.ndarray:
        """(n,) int64 store rows of `post_ids` (for `read_rows`); KeyError naming the first few missing ids."""
        try:
            return np.array(list(map(self._index.__getitem__, post_ids)), np.int64)  # 4x np.fromiter's speed
        except KeyError:
            missing = [p for p in post_ids if p not in self._index]
            raise KeyError(f"{len(missing)} post ids not in {self.extractor_id}: {missing[:5]}") from None

    def positions(self, post_ids: Sequence[str]) -> np.ndarray:
        """(n,) int64 store rows of `post_ids`, -1 where the store has none (`locate` without the error)."""
        return np.array(list(map(self._index.get, post_ids, itertools.repeat(-1, len(post_ids)))), np.int64)

    def read(self, post_ids: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
        """Rows for `post_ids` in that order; KeyError naming the first few missing ids."""
        return self.read_rows(self.locate(post_ids), out)

    def read_rows(self, pos: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at store rows `pos` (from `locate`), in that order.

        A run of consecutive rows is one slice copied straight into `out`, as is a scattered
        row of at least ROW_LOOP bytes; smaller scattered rows are gathered with numpy, one
        call per shard they fall in, where a Python step per row would cost more than its copy."""
        n = len(pos)
        if out is None:
            out = np.empty((n, *self.spec.shape), self._dtype)
        if n == 0:
            return out
        maps, shard, row = self._mapped(), self._shard_of[pos], self._row_of[pos]
        if shard[0] == shard[-1] and pos[-1] - pos[0] == n - 1 and (n < 3 or (np.diff(pos) == 1).all()):
            out[:] = maps[shard[0]][row[0] : row[0] + n]  # one run: the sequential reader's case
            return out
        if (shard == shard[0]).all() and out.flags.c_contiguous:  # one shard: one gather straight into out
            np.take(maps[shard[0]], row, axis=0, out=out, mode="clip")  # rows are in range: "clip" skips a buffer
            return out
        cut = np.flatnonzero((shard[1:] != shard[:-1]) | (row[1:] != row[:-1] + 1)) + 1
        if len(cut) < n // 4 or self._row_bytes >= ROW_LOOP:  # mostly runs, or rows whose copy dwarfs a step
            bounds, sh, rw = [0, *cut.tolist(), n], shard.tolist(), row.tolist()
            for a, b in zip(bounds, bounds[1:]):
                if b - a == 1:  # a row on its own: integer indexing is the cheaper view
                    out[a] = maps[sh[a]][rw[a]]
                else:
                    out[a:b] = maps[sh[a]][rw[a] : rw[a] + b - a]
            return out
        order = np.argsort(pos, kind="stable")  # small scattered rows: gathered shard by shard in row order
        sh, rw = shard[order], row[order]
        edges = [0, *(np.flatnonzero(sh[1:] != sh[:-1]) + 1).tolist(), n]
        gathered = np.empty((n, *self.spec.shape), self._dtype)
        for a, b in zip(edges, edges[1:]):
            np.take(maps[sh[a]], rw[a:b], axis=0, out=gathered[a:b], mode="clip")
        out[order] = gathered
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
        pos = self.locate(ids)  # once, not per batch
        for i in range(0, len(ids), batch_size):
            yield ids[i : i + batch_size], self.read_rows(pos[i : i + batch_size])
