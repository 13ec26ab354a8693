"""The feature store: sharded, resumable, content-addressed, read through memory maps.

Layout of one store, `<cache>/<dataset>/features/<extractor-id>/`:

    manifest.json        extractor id, config, spec, finished shards (rows, sha256)
    shard-00000.h5       datasets `post_id` (utf-8), `features` (N, *shape), `source` (utf-8)
    failures.parquet     post_id, reason, source: inputs that could not be read
    .lock                an flock held by the one writer (dies with its process)
    <artifacts>          e.g. vocab.json, listed in the manifest with their sha256

Why HDF5 with contiguous, uncompressed `features`: the reader memory-maps the dataset at
its byte offset, so sequential and random-batch reads run at `np.memmap` speed, while the
files stay self-describing HDF5 that any tool can open. Shards are written to a
temporary file (no `shard-` prefix) and renamed when complete; a finished shard is never
rewritten. A post extracted again (its input changed) lands in a newer shard, and the
newest row wins when reading.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import polars as pl

from pipeline import paths
from pipeline.errors import PipeError
from pipeline.specs import FeatureSpec

MANIFEST = "manifest.json"
FAILURES = "failures.parquet"
LOCK = ".lock"
SHARD_RE = re.compile(r"^shard-(\d{5,})\.h5$")
FORMAT_VERSION = 1


class StoreError(PipeError):
    """A store problem the user can act on; the CLI prints it without a traceback."""


class StoreLocked(StoreError):
    pass


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a sibling temp file, fsync, rename: readers see the old or the new file."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def write_shard_file(
    directory: Path,
    index: int,
    post_ids: Sequence[str],
    features: np.ndarray,
    sources: Sequence[str],
    spec: FeatureSpec,
) -> dict[str, Any]:
    """Write one complete shard (temp file, then rename) and return its manifest entry.

    A pure function of its arguments, so a dask worker can call it; only the process
    holding the lock adds the entry to the manifest.
    """
    features = np.ascontiguousarray(features, dtype=np.dtype(spec.dtype))
    if features.shape[1:] != spec.shape or features.shape[0] != len(post_ids) or len(sources) != len(post_ids):
        raise StoreError(
            f"shard rows do not match the spec: features {features.shape}, "
            f"{len(post_ids)} ids, {len(sources)} sources, spec shape {spec.shape}"
        )
    final = directory / shard_name(index)
    if final.exists():
        raise StoreError(f"{final} already exists; finished shards are never rewritten")
    tmp = directory / f".tmp-{os.getpid()}-{index:05d}.h5"
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("post_id", data=np.array(list(post_ids), dtype=object), dtype=str_dt)
        f.create_dataset("source", data=np.array(list(sources), dtype=object), dtype=str_dt)
        # Contiguous and uncompressed on purpose: the reader memory-maps it.
        f.create_dataset("features", data=features)
        f.attrs["kind"] = spec.kind
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, final)
    return {"file": final.name, "rows": int(len(post_ids)), "sha256": digest}


def finished_shard(directory: Path, index: int, post_ids: Sequence[str]) -> dict[str, Any] | None:
    """The manifest entry of shard `index` when it is already in place holding exactly `post_ids`.

    For a retried task (a dask worker killed after its rename): the shard is returned, not
    rewritten. None when the shard is absent; StoreError when it holds other rows.
    """
    final = Path(directory) / shard_name(index)
    if not final.exists():
        return None
    ids = _read_shard_meta(final)[0]
    if ids != list(post_ids):
        raise StoreError(f"{final} already exists with other rows ({len(ids)} posts); finished shards are never rewritten")
    return {"file": final.name, "rows": len(ids), "sha256": sha256_file(final)}


def _read_shard_meta(path: Path) -> tuple[list[str], list[str], int | None, tuple[int, ...], str]:
    with h5py.File(path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["post_id"][()]]
        sources = [s.decode() if isinstance(s, bytes) else s for s in f["source"][()]] if "source" in f else [""] * len(ids)
        ds = f["features"]
        return ids, sources, ds.id.get_offset(), ds.shape, ds.dtype.str


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

    def __enter__(self) -> "StoreWriter":
        self._lock_cm = store_lock(self.directory, self.wait)
        self._lock_cm.__enter__()
        try:
            self._open()
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._lock_cm is not None
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
        # Leftovers of a killed run: temp files are partial by construction.
        for tmp in d.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
        # Complete shards renamed into place whose manifest update was lost (a kill between
        # rename and manifest write, or a dask worker's shard): adopt them.
        listed = {s["file"] for s in self.manifest.shards}
        orphans = sorted(p for p in d.glob("shard-*.h5") if SHARD_RE.match(p.name) and p.name not in listed)
        for p in orphans:
            ids, _, _, shape, _ = _read_shard_meta(p)
            self.manifest.shards.append({"file": p.name, "rows": len(ids), "sha256": sha256_file(p)})
        self.manifest.shards.sort(key=lambda s: s["file"])
        self.manifest.save(d)

    # -- what is already there ------------------------------------------------------
    def done_sources(self) -> dict[str, str]:
        """post_id -> source fingerprint of its newest stored row."""
        out: dict[str, str] = {}
        for s in self.manifest.shards:
            ids, sources, *_ = _read_shard_meta(self.directory / s["file"])
            out.update(zip(ids, sources))
        return out

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

    def record_failures(self, failed: pl.DataFrame, succeeded: Sequence[str] = ()) -> None:
        """Merge failures (post_id, reason, source); drop ids that have since succeeded."""
        old = self.failures()
        new = pl.concat([old, failed.select(FAILURE_SCHEMA.keys()).cast(FAILURE_SCHEMA)], how="vertical")
        new = new.unique("post_id", keep="last", maintain_order=True)
        if succeeded:
            new = new.filter(~pl.col("post_id").is_in(list(succeeded)))
        buf = _parquet_bytes(new)
        atomic_write_bytes(self.directory / FAILURES, buf)

    def save_artifact(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.directory / name, data)
        self.manifest.artifacts[name] = hashlib.sha256(data).hexdigest()
        self.manifest.save(self.directory)


FAILURE_SCHEMA = {"post_id": pl.Utf8, "reason": pl.Utf8, "source": pl.Utf8}


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    import io

    b = io.BytesIO()
    df.write_parquet(b)
    return b.getvalue()


def read_failures(directory: Path) -> pl.DataFrame:
    p = Path(directory) / FAILURES
    if not p.exists():
        return pl.DataFrame(schema=FAILURE_SCHEMA)
    return pl.read_parquet(p).cast(FAILURE_SCHEMA)


class FeatureStore:
    """Read-only view of one store: ids, rows by id, batches. The only way heads see features.

    Memory maps are opened lazily per process (they are dropped when pickled), so
    DataLoader and dask workers each open their own read-only handles.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = Manifest.load(self.directory)
        self.spec = self.manifest.spec
        self._dtype = np.dtype(self.spec.dtype)
        self._shards: list[tuple[Path, int | None, int]] = []  # (path, byte offset, rows)
        self._index: dict[str, tuple[int, int]] = {}
        for si, s in enumerate(self.manifest.shards):
            path = self.directory / s["file"]
            if not path.exists():
                raise StoreError(f"shard {path} listed in the manifest is missing; run `pipe store verify`")
            ids, _, offset, shape, _ = _read_shard_meta(path)
            self._shards.append((path, offset, len(ids)))
            for row, pid in enumerate(ids):
                self._index[pid] = (si, row)  # newer shards come later and win
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
        if name not in self.manifest.artifacts:
            raise StoreError(f"{self.directory} has no artifact {name!r}")
        return self.directory / name

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


# -- finding stores -------------------------------------------------------------------
def list_stores(dataset: str, cache: str | Path | None = None) -> list[str]:
    d = paths.features_dir(dataset, cache)
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists())


def resolve_store(dataset: str, ref: str, cache: str | Path | None = None) -> Path:
    """A store by full extractor id or a unique prefix (e.g. `vgg16-pool5-224`)."""
    ids = list_stores(dataset, cache)
    if ref in ids:
        return paths.features_dir(dataset, cache) / ref
    hits = [i for i in ids if i.startswith(ref)]
    if len(hits) == 1:
        return paths.features_dir(dataset, cache) / hits[0]
    if not hits:
        raise StoreError(f"no store matching {ref!r} in dataset {dataset!r}; stores: {ids or 'none'}")
    raise StoreError(f"{ref!r} matches several stores in {dataset!r}: {hits}; give more of the id")


def open_store(dataset: str, ref: str, cache: str | Path | None = None) -> FeatureStore:
    return FeatureStore(resolve_store(dataset, ref, cache))


def verify_store(directory: Path) -> list[str]:
    """Problems found (empty when the store is sound): missing or corrupted shards."""
    problems = []
    man = Manifest.load(Path(directory))
    for s in man.shards:
        p = Path(directory) / s["file"]
        if not p.exists():
            problems.append(f"{p}: missing")
        elif sha256_file(p) != s["sha256"]:
            problems.append(f"{p}: checksum mismatch (corrupted)")
    for name, digest in man.artifacts.items():
        p = Path(directory) / name
        if not p.exists():
            problems.append(f"{p}: missing artifact")
        elif sha256_file(p) != digest:
            problems.append(f"{p}: artifact checksum mismatch (corrupted)")
    return problems
