"""Small file helpers every layer shares: atomic writes, checksums, strict JSON.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import io
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from pipeline.core.errors import IntegrityError, PipeError


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


_NOFOLLOW = os.O_NOFOLLOW  # POSIX: the final component is never followed


def real_folder(directory: Path, create: bool = False) -> Path:
    """`directory` when it is a folder and not a symbolic link (created when `create`); else
    IntegrityError naming it: pipe never writes into a folder through a link."""
    directory = Path(directory)
    if create and not os.path.lexists(directory):
        directory.mkdir(parents=True, exist_ok=True)
    if directory.is_symlink() or (os.path.lexists(directory) and not directory.is_dir()):
        raise IntegrityError(f"{directory} is a symbolic link or not a folder; pipe never writes through a link: "
                             "remove it and run again")
    return directory


def open_for_write(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode: int = 0o644) -> int:
    """The one way pipe opens a file for writing: its folder must be a real folder and the file
    itself is opened with O_NOFOLLOW, so a planted link (to a file outside the roots) is refused
    by name instead of truncated or written through. Returns an OS file descriptor."""
    path = Path(path)
    real_folder(path.parent)
    try:
        return os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (path.is_symlink() and e.errno == errno.EEXIST):
            raise IntegrityError(f"{path} is a symbolic link; pipe never writes through a link: remove it and run "
                                 "again") from None
        raise


def hold_lock(path: Path, busy: str) -> int:
    """One writer per name: an exclusive flock on `path` (created, never through a link), held
    until the returned descriptor is closed or the process ends (the kernel drops it on a kill).
    PipeError `busy` when another process holds it."""
    fd = open_for_write(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PipeError(busy) from None
    return fd


def append_line(path: Path, line: str) -> None:
    """Append one line (a log such as quarantine/reasons.jsonl), never through a link."""
    fd = open_for_write(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "a") as f:
        f.write(line.rstrip("\n") + "\n")


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a sibling temp file (created exclusively, never
    through a link), fsynced and renamed over `path` when the block ends without an error:
    readers see the old or the new file; a link at `path` is replaced, never written through."""
    path = Path(path)
    remove_stale_temps(path.parent, of=path.name)  # a killed writer's temp of this file goes now
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if os.path.lexists(tmp):  # a leftover (or a planted link) of this pid: removing it touches no target
        tmp.unlink()
    fd = open_for_write(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # no half-written temp left behind (ENOSPC, a kill signal)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a write or fsync error names no file: the message must
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` written to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_parquet(path: Path, frames: pl.DataFrame | Iterable[pl.DataFrame]) -> None:
    """Frames streamed to one Parquet file, a row group each (atomically, `atomic_file`), so
    the whole table never sits in memory. The file reads back as `pl.concat(frames,
    how="diagonal_relaxed")`: zero-row frames only matter when every frame is empty; the
    others must share the first's columns and dtypes (in any column order)."""
    import pyarrow.parquet as pq

    empty: list[pl.DataFrame] = []
    frames = [frames] if isinstance(frames, pl.DataFrame) else frames
    with atomic_file(path) as f:
        writer = first = None
        for df in frames:
            if df.height == 0:
                empty.append(df)
                continue
            if first is None:
                first = df
                writer = pq.ParquetWriter(f, df.to_arrow().schema, compression="zstd")
            elif df.schema != first.schema:
                aligned = pl.concat([first.clear(), df], how="diagonal_relaxed")
                if aligned.schema != first.schema:
                    raise IntegrityError(f"{path.name}: chunks disagree on the columns: {dict(first.schema)} vs "
                                         f"{dict(df.schema)}")
                df = aligned
            writer.write_table(df.to_arrow())
        if writer is None:
            (pl.concat(empty, how="diagonal_relaxed") if empty else pl.DataFrame()).write_parquet(f)
        else:
            writer.close()

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temps(directory: Path, of: str | None = None) -> list[Path]:
    """Delete `.tmp-PID-*` files (and temp folders) left by writers that died (their PID is gone);
    a live writer's stay. A link is removed itself, never followed. `of`: only the temps of
    that file name (what `atomic_write_bytes` sweeps before each write)."""
    removed = []
    for tmp in Path(directory).glob(".tmp-*" if of is None else f".tmp-*-{glob.escape(of)}"):
        pid = tmp.name.split("-")[1] if tmp.name.count("-") >= 2 else ""
        if not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid))):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """A table as Parquet bytes (for `atomic_write_bytes`)."""
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()

def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, recursively, so metrics files are strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.floating):
        return json_safe(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
