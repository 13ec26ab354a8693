"""Images a request carried: checked against the limits, kept under the cache root, pruned.

No path from a request is ever opened: images arrive as multipart uploads or base64 and
are written, content-addressed (`<blake2b>.img`), to `<cache>/serve-uploads/`, the
folder the drafts' `image` column points at (the heat maps of `/explain` are drawn on
it). A file is written to a temporary name and renamed, so a crash leaves no
half-written image under a final name; temporary files are swept at start-up and on
every prune. The folder is pruned by age and total size.
"""
from __future__ import annotations

import io
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.core import paths
from pipeline.core.errors import PipeError

UPLOADS = "serve-uploads"  # folder under the cache root
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_body_bytes: int = 32 * 2**20  # a whole request body (413 above)
    max_image_bytes: int = 16 * 2**20  # one image's bytes (413 above)
    max_pixels: int = 40_000_000  # width x height of one image (413 above)
    max_posts: int = 64  # posts (drafts) in one request (413 above)


class ImageRefused(PipeError):
    """An image the service will not use; `status` is the HTTP status that says why (413, 415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_image(data: bytes, limits: Limits) -> None:
    """Size and pixel limits, read from the header before any decoding; ImageRefused if over or not an image."""
    if len(data) > limits.max_image_bytes:
        raise ImageRefused(413, f"image of {len(data)} bytes, over the limit of {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ImageRefused(413, f"image over {limits.max_pixels} pixels (decompression bomb)") from None
    except Exception:  # PIL raises several types for what is not an image
        raise ImageRefused(415, "not an image (unrecognised format)") from None
    if w * h > limits.max_pixels:
        raise ImageRefused(413, f"image of {w}x{h} pixels, over the limit of {limits.max_pixels}")


class Uploads:
    """The uploads folder: content-addressed files, written atomically, pruned by age and size."""

    def __init__(self, cache: str | Path | None, max_age_s: float = 24 * 3600, max_bytes: int = 2**30) -> None:
        self.dir = paths.cache_root(cache) / UPLOADS
        self.max_age_s = max_age_s  # files older than this go at the next prune
        self.max_bytes = max_bytes  # beyond this total, the oldest files go
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._written = 0
        self.prune(tmp_age_s=0)  # a crashed earlier server's temporary files

    def save(self, data: bytes, fingerprint: str) -> Path:
        """The image's file (written now, or already there: same bytes, same name)."""
        final = self.dir / f"{fingerprint}.img"
        if final.is_file():
            os.utime(final)  # recently used: pruned last
            return final
        tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{fingerprint}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._written += 1
            due = self._written % 256 == 0
        if due:
            self.prune()
        return final

    def prune(self, tmp_age_s: float = 3600) -> int:
        """Remove temporary files older than `tmp_age_s`, files older than max_age_s, then the
        oldest until the total is under max_bytes; the number of files removed."""
        now, removed, files = time.time(), 0, []
        with self._lock:
            for p in self.dir.iterdir():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                age = now - st.st_mtime
                if (p.name.startswith(TMP_PREFIX) and age >= tmp_age_s) or \
                        (not p.name.startswith(TMP_PREFIX) and age > self.max_age_s):
                    p.unlink(missing_ok=True)
                    removed += 1
                elif not p.name.startswith(TMP_PREFIX):
                    files.append((st.st_mtime, st.st_size, p))
            total = sum(s for _, s, _ in files)
            for _, size, p in sorted(files):
                if total <= self.max_bytes:
                    break
                p.unlink(missing_ok=True)
                total -= size
                removed += 1
        return removed
