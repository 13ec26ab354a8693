"""Shard files: written whole (temp file, rename), never rewritten, read back by their metadata.

Why HDF5 with contiguous, uncompressed `features`: the reader memory-maps the dataset at
its byte offset, so reads run at `np.memmap` speed while the files stay self-describing
HDF5 that any tool can open.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import h5py
import numpy as np

from pipeline.core.errors import IntegrityError, StoreError
from pipeline.core.io import sha256_file
from pipeline.core.specs import FeatureSpec


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
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("post_id", data=np.array(list(post_ids), dtype=object), dtype=str_dt)
            f.create_dataset("source", data=np.array(list(sources), dtype=object), dtype=str_dt)
            # Contiguous and uncompressed on purpose: the reader memory-maps it.
            f.create_dataset("features", data=features)
            f.attrs["kind"] = spec.kind
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except OSError as e:  # a full disk: no half-written temp left, and the message names the file
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(final)) from None
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
    ids = read_shard_meta(final)[0]
    if ids != list(post_ids):
        raise StoreError(f"{final} already exists with other rows ({len(ids)} posts); finished shards are never rewritten")
    return {"file": final.name, "rows": len(ids), "sha256": sha256_file(final)}


class ShardMeta(NamedTuple):
    """What a shard says about itself: its rows' ids and sources, and its own spec."""
    ids: list[str]
    sources: list[str]
    offset: int | None  # byte offset of `features` (None: not contiguous, read through h5py)
    shape: tuple[int, ...]  # of `features`, rows first
    dtype: str  # numpy dtype string of `features`
    kind: str | None  # the `kind` attribute the writer recorded


def read_shard_meta(path: Path) -> ShardMeta:
    """A shard's metadata; IntegrityError naming the file when it is not a readable shard
    (truncated, a damaged header, another file renamed `shard-*.h5`)."""
    try:
        with h5py.File(path, "r") as f:
            why = _storage_problem(f, Path(path).stat().st_size)
            if why:
                raise IntegrityError(f"{path}: {why}; pipe serves only bytes its checksum covers: "
                                     f"{repair_hint(Path(path).parent)}")
            ids = [s.decode() if isinstance(s, bytes) else s for s in f["post_id"][()]]
            sources = [s.decode() if isinstance(s, bytes) else s for s in f["source"][()]] if "source" in f else [""] * len(ids)
            ds = f["features"]
            kind = f.attrs.get("kind")
            return ShardMeta(ids, sources, ds.id.get_offset(), tuple(ds.shape), ds.dtype.str,
                             kind.decode() if isinstance(kind, bytes) else kind)
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError, RuntimeError) as e:
        raise IntegrityError(f"{path}: not a readable shard ({type(e).__name__}: {e}); {repair_hint(path.parent)}") from None


ROW_ID_BYTES = 16  # an id takes at least this in a shard (HDF5's reference to a variable-length string)


def _storage_problem(f: h5py.File, file_size: int) -> str | None:
    """Why a shard's datasets are not plain data inside its own file, or declare more rows than
    the file can hold; checked before any id is read (a 6 KB file declaring 4*10^7 rows costs
    nothing). External storage, virtual datasets and links would serve bytes the sha256 of
    the shard never covered."""
    for name in ("post_id", "source", "features"):
        link = f.get(name, getlink=True)
        if link is None:
            if name == "source":
                continue
            return f"has no {name!r} dataset"
        if not isinstance(link, h5py.HardLink):
            return f"{name!r} is a {type(link).__name__} (a link to data elsewhere), not data inside the shard"
        ds = f[name]
        if not isinstance(ds, h5py.Dataset):
            return f"{name!r} is not a dataset"
        if ds.is_virtual:
            return f"{name!r} is a virtual dataset (its bytes live in other files)"
        if ds.external:
            return f"{name!r} uses external storage ({ds.external[0][0]!r}), not bytes inside the shard"
    ids, feats = f["post_id"], f["features"]
    if ids.ndim != 1 or feats.ndim < 1 or feats.shape[0] != ids.shape[0]:
        return f"declares {ids.shape} ids for features of shape {feats.shape}"
    if "source" in f and f["source"].shape != ids.shape:
        return f"declares {f['source'].shape} sources for {ids.shape} ids"
    rows = ids.shape[0]
    need = rows * ROW_ID_BYTES + (feats.nbytes if feats.compression is None else 0)
    if need > file_size:
        return f"declares {rows} rows, more than its {file_size} bytes can hold"
    return None


def repair_hint(directory: Path) -> str:
    """What to run about a damaged store, with its dataset and id when it sits in a cache."""
    d = Path(directory)
    args = f" --dataset {d.parent.parent.name} --extractor {d.name}" if d.parent.name == "features" else ""
    return (f"`pipe store verify{args}` lists the damage and `pipe store repair{args}` sets bad shards aside "
            "(the next `pipe extract` redoes their posts)")
