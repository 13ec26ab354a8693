"""The fast path of extraction on CUDA: mixed precision, channels_last, JPEGs decoded and
resized on the device, batches fitted to memory.

On a GPU the forward pass stops being the cost; decoding and resizing on the CPU become
the bottleneck (a peer tool tops out near 2,500 images/s per A100 on CPU resizing). So
on CUDA the DataLoader workers only read bytes, fingerprint them and check the JPEG
header; the main process decodes a whole batch with nvjpeg (`torchvision.io.decode_jpeg`
on the device) and resizes on the device with the extractor's own `preprocess`, which
accepts a (..., 3, H, W) uint8 tensor (a stack of same-size images) as well as a PIL
image (`accepts_tensors`). Anything nvjpeg should
not or cannot take (PNG and other formats, CMYK, EXIF-rotated or truncated JPEGs, a
decode error) goes the CPU way (`pipeline.extract.images`), in the worker or, after a device
decode error, in the main process, with the same failure reasons as the CPU path.

Every helper is the plain path on CPU: CPU output is unchanged. `decode="device"` runs
the device pipeline on CPU too (decode_jpeg on CPU), which is how the tests check it
without a GPU.


The CPU path (`ImageItems`, `collate`) decodes in DataLoader workers with PIL.
"""
from __future__ import annotations

import io
import warnings
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from extractors.base import Extractor
from pipeline.core.device import is_cuda
from pipeline.core.errors import ImageError, PipeError
from pipeline.extract.images import decode_image, fingerprint_bytes, load_image, read_bytes
from pipeline.extract.options import DECODES

EXIF_ORIENTATION = 0x0112
DEVICE_MODES = ("RGB", "L")  # JPEG colour modes nvjpeg decodes to RGB as PIL does (not CMYK/YCCK)

class ImageItems(Dataset):
    """Runs in DataLoader workers: read, fingerprint, decode, preprocess one image."""

    def __init__(self, extractor: Extractor, items: list[tuple[str, str]]) -> None:
        self.extractor = extractor  # pickled into workers before the model is loaded
        self.items = items  # (post_id, path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Any, str, str | None]:
        pid, path = self.items[i]
        try:
            image, source = load_image(path)
        except ImageError as e:
            return pid, None, e.source, e.reason
        return pid, self.extractor.preprocess(image), source, None


def collate(rows: list[tuple[str, Any, str, str | None]]) -> dict[str, Any]:
    ok = [r for r in rows if r[3] is None]
    return {
        "ids": [r[0] for r in ok],
        "x": torch.stack([r[1] for r in ok]) if ok else None,  # (B, C, H, W)
        "sources": [r[2] for r in ok],
        "failures": [(r[0], r[3], r[2]) for r in rows if r[3] is not None],
    }

def decodes_on_device(ex: Extractor, device: str, decode: str) -> bool:
    """Whether images go to the device as JPEG bytes (auto: on CUDA for extractors that accept tensors)."""
    if decode not in DECODES:
        raise PipeError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
    if decode == "cpu" or not ex.accepts_tensors:
        return False
    return decode == "device" or is_cuda(device)


def device_decodable(data: bytes) -> bool:
    """A complete baseline JPEG that decodes to what PIL gives: RGB or grey, upright (no EXIF
    rotation), not a decompression bomb. Reads headers only; the rest goes the CPU way."""
    if data[:3] != b"\xff\xd8\xff" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":  # truncated files lack the EOI marker
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            return im.format == "JPEG" and im.mode in DEVICE_MODES and im.getexif().get(EXIF_ORIENTATION, 1) == 1
    except Exception:  # any doubt: the CPU path decodes it or says why it cannot
        return False


def cpu_preprocess(ex: Any, data: bytes, source: str) -> torch.Tensor:
    """The CPU path for one image's bytes: PIL decode, the extractor's preprocess; ImageError if unreadable."""
    return ex.preprocess(decode_image(data, source))


class RawImages(Dataset):
    """Runs in DataLoader workers: read and fingerprint; JPEG bytes for the device, anything else
    decoded and preprocessed here on the CPU. Items: (post_id, payload, source, reason, kind)."""

    def __init__(self, extractor: Any, items: list[tuple[str, str]]) -> None:
        self.extractor = extractor  # pickled into workers without its model
        self.items = items  # (post_id, path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, Any, str, str | None, str]:
        pid, path = self.items[i]
        try:
            data = read_bytes(path)
            source = fingerprint_bytes(data)
            if device_decodable(data):
                return pid, torch.frombuffer(bytearray(data), dtype=torch.uint8), source, None, "jpeg"
            return pid, cpu_preprocess(self.extractor, data, source), source, None, "ready"
        except ImageError as e:
            return pid, None, e.source, e.reason, "failed"


def collate_raw(rows: list[tuple[str, Any, str, str | None, str]]) -> dict[str, Any]:
    ok = [r for r in rows if r[3] is None]
    return {
        "ids": [r[0] for r in ok],
        "payloads": [r[1] for r in ok],  # 1-d uint8 JPEG bytes or a preprocessed (3, h, w) tensor
        "kinds": [r[4] for r in ok],  # jpeg | ready
        "sources": [r[2] for r in ok],
        "failures": [(r[0], r[3], r[2]) for r in rows if r[3] is not None],
    }


def _decode_jpegs(datas: list[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """Batched nvjpeg decode; after an error (it returns nothing then), one by one, None for each failure."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for d in datas:
                try:
                    out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def _resize_on_device(ex: Any, decoded: dict[int, torch.Tensor | None]) -> dict[int, torch.Tensor]:
    """The extractor's preprocess on every decoded image, one call per image size: photos of
    one camera share a size, so a batch costs a few resize kernels, not one per image."""
    sizes: dict[tuple[int, ...], list[int]] = {}
    for i, img in decoded.items():
        if img is not None:
            sizes.setdefault(tuple(img.shape), []).append(i)
    out: dict[int, torch.Tensor] = {}
    for idx in sizes.values():
        out.update(zip(idx, ex.preprocess(torch.stack([decoded[i] for i in idx]))))  # (n, 3, h, w) uint8
    return out


def decode_batch(ex: Any, b: dict[str, Any], device: str) -> dict[str, Any]:
    """A `collate_raw` batch -> the CPU path's batch: ids, x (B, 3, h, w) uint8 on `device`, sources,
    failures. JPEGs are decoded and preprocessed on the device; a JPEG the device cannot decode is
    decoded on the CPU, and recorded as a failure with the CPU path's reason if that fails too."""
    jpegs = [i for i, k in enumerate(b["kinds"]) if k == "jpeg"]
    decoded = dict(zip(jpegs, _decode_jpegs([b["payloads"][i] for i in jpegs], device)))
    resized = _resize_on_device(ex, decoded)
    ids, xs, sources, failures = [], [], [], list(b["failures"])
    for i, (pid, payload, source) in enumerate(zip(b["ids"], b["payloads"], b["sources"])):
        if i in resized:
            x = resized[i]
        elif i in decoded:  # the device could not decode it
            try:
                x = cpu_preprocess(ex, payload.numpy().tobytes(), source)
            except ImageError as e:
                failures.append((pid, e.reason, source))
                continue
        else:
            x = payload  # preprocessed in the worker
        ids.append(pid)
        xs.append(x.to(device, non_blocking=True))
        sources.append(source)
    return {"ids": ids, "x": torch.stack(xs) if xs else None, "sources": sources, "failures": failures}
