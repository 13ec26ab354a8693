"""Reading images for extraction: every bad file becomes a reason, every odd one RGB.

Image extractors see only PIL RGB images. This module turns whatever a posts table
points at into one, or into an `ImageError` whose reason lands in `failures.parquet`.
It runs inside DataLoader workers, so it never raises anything else for bad input: a
single unreadable file must not stop a run over half a million posts.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.errors import ImageError

MISSING = "missing"  # fingerprint of a path that cannot be read: retried once a file appears


def fingerprint_bytes(data: bytes) -> str:
    """What the store records per row: a changed input is extracted again."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint_text(text: str) -> str:
    return fingerprint_bytes(text.encode("utf-8"))


MAX_IMAGE_BYTES = 256 << 20  # an image file above this is refused unread, beside PIL's pixel limit


def _regular_file_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file of at most MAX_IMAGE_BYTES. A FIFO would block a worker forever
    and /dev/zero never ends: anything but a regular file is an ImageError, never read. Opened
    non-blocking so a FIFO without a writer cannot hang the open itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"not a regular file (a FIFO, socket or device): {path}", MISSING)
        if st.st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"file too large ({st.st_size} bytes, limit {MAX_IMAGE_BYTES}): {path}", MISSING)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(MAX_IMAGE_BYTES + 1)[:MAX_IMAGE_BYTES]
    finally:
        os.close(fd)


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or an ImageError saying why there are none."""
    try:
        return _regular_file_bytes(path)
    except FileNotFoundError:
        raise ImageError(f"missing file: {path}", MISSING) from None
    except IsADirectoryError:
        raise ImageError(f"not a file (a directory): {path}", MISSING) from None
    except OSError as e:
        raise ImageError(f"unreadable file: {path}: {e.strerror or e}", MISSING) from None


def fingerprint_file(path: str | Path) -> str:
    """blake2b of the file's bytes; MISSING when it cannot be read (the worker says why)."""
    try:
        return fingerprint_bytes(_regular_file_bytes(path))
    except (OSError, ImageError):
        return MISSING


def decode_image(data: bytes, source: str = "") -> Image.Image:
    """Bytes -> RGB image. Bad input raises ImageError with a reason a person can act on."""
    if not data:
        raise ImageError("empty file", source)
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            im.seek(0)  # animations (GIF, APNG, WebP): the first frame
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb: {e}", source) from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)", source) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = "truncated image" if "truncated" in str(e).lower() else "corrupt image"
        raise ImageError(f"{kind}: {e}", source) from None
    try:
        return to_rgb(im)
    except (OSError, ValueError) as e:
        raise ImageError(f"unsupported image ({im.mode}): {e}", source) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF rotation applied, alpha dropped, CMYK/palette/16-bit converted."""
    im = ImageOps.exif_transpose(im)
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        # 16-bit (and 32-bit) grey: PIL's convert clips at 255, so rescale the range.
        a = np.asarray(im, dtype=np.float32)
        wide = im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255)
        scale = 255.0 / 65535.0 if wide else 1.0
        grey = np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL warns converting such palettes straight to RGB
    return im.convert("RGB")  # RGBA/LA drop alpha; CMYK, YCbCr, P, L, 1 convert


def load_image(path: str | Path) -> tuple[Image.Image, str]:
    """Read, fingerprint and decode one file: (RGB image, fingerprint of its bytes)."""
    data = read_bytes(path)
    source = fingerprint_bytes(data)
    return decode_image(data, source), source
