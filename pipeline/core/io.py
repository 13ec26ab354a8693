"""Small file helpers every layer shares: atomic writes, checksums, strict JSON.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


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

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete `.tmp-PID-*` files left by writers that died (their PID is gone); a live writer's stay."""
    removed = []
    for tmp in Path(directory).glob(".tmp-*"):
        pid = tmp.name.split("-")[1] if tmp.name.count("-") >= 2 else ""
        if not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid))):
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
