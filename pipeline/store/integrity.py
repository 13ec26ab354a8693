"""Checking a store's shards against its manifest: on every open, in `verify`, in `repair`.

A shard is served only when its own spec (the `kind` attribute, the shape and dtype of
`features`) equals the manifest's, its row count matches, and its sha256 is the
manifest's. Hashing costs a full read, so a successful check is stamped in
`.verified.json` beside the manifest (file -> size, mtime_ns, inode, sha256); a shard
whose stat still matches its stamp is not hashed again. `verify` ignores the stamps.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import IntegrityError
from pipeline.core.io import append_line, atomic_write_bytes, real_folder, sha256_file
from pipeline.core.specs import FeatureSpec
from pipeline.store.manifest import SHARD_RE, Manifest, store_lock
from pipeline.store.shards import ShardMeta, read_shard_meta, repair_hint

STAMPS = ".verified.json"
QUARANTINE = "quarantine"


# -- stamps -----------------------------------------------------------------------
def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def load_stamps(directory: Path) -> dict[str, Any]:
    try:
        d = json.loads((Path(directory) / STAMPS).read_bytes())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}  # no stamps (or a damaged file): everything is hashed again, which is safe


def save_stamps(directory: Path, stamps: dict[str, Any]) -> None:
    """Best effort: a read-only store is checked again next time instead of failing now."""
    try:
        atomic_write_bytes(Path(directory) / STAMPS, json.dumps(stamps).encode())
    except OSError:
        pass


def stamp(stamps: dict[str, Any], path: Path, sha256: str) -> None:
    stamps[path.name] = {"stat": _stat(path), "sha256": sha256}


# -- one shard --------------------------------------------------------------------
def spec_problem(meta: ShardMeta, spec: FeatureSpec, rows: int | None = None) -> str | None:
    """Why a shard's own spec or row count differs from what the manifest says, or None."""
    try:
        want = np.dtype(spec.dtype)
    except TypeError:
        return f"the manifest's dtype {spec.dtype!r} is not a dtype"
    if meta.kind != spec.kind:
        return f"holds {meta.kind!r} rows, the manifest says {spec.kind!r}"
    if tuple(meta.shape[1:]) != tuple(spec.shape) or np.dtype(meta.dtype) != want:
        return (f"holds rows of shape {tuple(meta.shape[1:])} {np.dtype(meta.dtype).name}, the manifest says "
                f"{tuple(spec.shape)} {want.name}")
    if meta.shape[0] != len(meta.ids) or (rows is not None and rows != len(meta.ids)):
        return f"holds {len(meta.ids)} ids and {meta.shape[0]} rows, the manifest lists {rows}"
    if len(set(meta.ids)) != len(meta.ids) or any(not isinstance(i, str) or not i for i in meta.ids):
        return "has empty or repeated post ids"
    return None


def check_shard(directory: Path, entry: dict[str, Any], spec: FeatureSpec, stamps: dict[str, Any] | None) -> ShardMeta:
    """The shard's metadata once its bytes (sha256, unless its stamp still matches) and spec
    are the manifest's; IntegrityError naming the shard otherwise. `stamps` None: always hash."""
    path = Path(directory) / entry["file"]
    if not path.is_file():
        raise IntegrityError(f"{path}: listed in the manifest but missing; {repair_hint(directory)}")
    st = (stamps or {}).get(entry["file"])
    if not (st and st.get("sha256") == entry["sha256"] and st.get("stat") == _stat(path)):
        if sha256_file(path) != entry["sha256"]:
            raise IntegrityError(f"{path}: checksum mismatch (corrupted: its bytes changed since it was written); "
                                 f"{repair_hint(directory)}")
        if stamps is not None:
            stamp(stamps, path, entry["sha256"])
    meta = read_shard_meta(path)
    why = spec_problem(meta, spec, entry["rows"])
    if why:
        raise IntegrityError(f"{path}: {why}; {repair_hint(directory)}")
    return meta


def orphan_problem(meta: ShardMeta, spec: FeatureSpec, stored: set[tuple[str, str]]) -> str | None:
    """Why an unlisted shard (its metadata read) must not be adopted: another spec, or rows the store
    already has with the same input (a copy). A shard a killed run renamed into place passes."""
    why = spec_problem(meta, spec)
    if why:
        return why
    if any(pair in stored for pair in zip(meta.ids, meta.sources)):
        return "repeats rows the store already holds (a copy of another shard)"
    return None


def quarantine(directory: Path, path: Path, reason: str) -> Path:
    """Move a bad shard into `quarantine/` (kept for inspection, out of every read) and say why."""
    q = real_folder(Path(directory) / QUARANTINE, create=True)  # never a link to elsewhere
    dest = q / path.name
    k = 1
    while dest.exists():
        k += 1
        dest = q / f"{path.stem}.{k}{path.suffix}"
    os.replace(path, dest)
    append_line(q / "reasons.jsonl", json.dumps({"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                                 "file": path.name, "moved_to": dest.name, "reason": reason}))
    return dest


# -- whole stores -----------------------------------------------------------------
def verify_store(directory: Path) -> list[str]:
    """Problems found (empty when the store is sound): every shard rehashed (stamps ignored), its
    spec and rows checked; missing or corrupted artifacts; unlisted shard files."""
    directory = Path(directory)
    problems = []
    man = Manifest.load(directory)
    for s in man.shards:
        try:
            check_shard(directory, s, man.spec, None)
        except IntegrityError as e:
            problems.append(str(e).split("; `pipe")[0])
    for name, digest in man.artifacts.items():
        p = directory / name
        if not p.exists():
            problems.append(f"{p}: missing artifact")
        elif sha256_file(p) != digest:
            problems.append(f"{p}: artifact checksum mismatch (corrupted)")
    listed = {s["file"] for s in man.shards}
    for p in sorted(directory.glob("shard-*.h5")):
        if SHARD_RE.match(p.name) and p.name not in listed:
            problems.append(f"{p}: not in the manifest (the next extraction adopts it only if its spec and rows fit)")
    return problems


def repair_store(directory: Path) -> list[str]:
    """Under the writer's lock: quarantine every listed shard that fails its check, drop missing ones
    from the manifest. Their posts are then absent, so the next `pipe extract` redoes them."""
    directory = Path(directory)
    done = []
    with store_lock(directory):
        man = Manifest.load(directory)
        stamps, keep = {}, []
        for s in man.shards:
            path = directory / s["file"]
            try:
                check_shard(directory, s, man.spec, stamps)
                keep.append(s)
            except IntegrityError as e:
                why = str(e).split("; `pipe")[0]
                if path.exists():
                    done.append(f"{why} -> moved to {quarantine(directory, path, why)}")
                else:
                    done.append(f"{why} -> dropped from the manifest")
        if len(keep) != len(man.shards):
            man.shards = keep
            man.save(directory)
        save_stamps(directory, stamps)
        for name, digest in man.artifacts.items():
            p = directory / name
            if not p.exists() or sha256_file(p) != digest:
                done.append(f"{p}: artifact missing or corrupted; cannot be repaired: `pipe store rm` and extract again")
    return done


def remove_tree(path: Path, root: Path) -> None:
    """rmtree, only for a real folder (not a symlink) inside `root`."""
    from pipeline.core.paths import contained

    contained(path, root)
    if path.is_symlink():
        raise IntegrityError(f"{path} is a symbolic link; pipe does not delete through links")
    shutil.rmtree(path)
