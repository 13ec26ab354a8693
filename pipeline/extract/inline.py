"""Extraction in memory, for a service: the mapper's forward on bytes and texts already in hand.

`pipe score` writes a store per dataset (pipeline/extract/local.py); `pipe serve` cannot
afford a store per request, so it calls the same steps on what a request carried: image
bytes decoded by `decode_image` (same RGB conversion, same bad-input reasons), the
extractor's `preprocess`, `forward` under the mapper's autocast in chunks of the CPU batch
size (`FittedBatch`), or `transform` on the texts `post_text` gives. Rows come back in the
store's dtype, so they are the bytes a store would hold.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from extractors.base import Extractor
from pipeline.core.errors import ImageError
from pipeline.extract.images import decode_image, fingerprint_bytes
from pipeline.extract.mapper import _text_autocast
from pipeline.extract.options import RunOptions


def _as_stored(ex: Extractor, feats: np.ndarray) -> np.ndarray:
    spec = ex.spec()
    return np.ascontiguousarray(feats, dtype=np.dtype(spec.dtype)).reshape(len(feats), *spec.shape)


def preprocess_image(ex: Extractor, data: bytes) -> Any:
    """One image's bytes -> the extractor's input tensor; ImageError (with its reason) when unreadable."""
    return ex.preprocess(decode_image(data, fingerprint_bytes(data)))


def image_features(ex: Extractor, inputs: Sequence[Any], device: str, amp: bool = True) -> np.ndarray:
    """Rows of preprocessed images (`preprocess_image`), in order; `ex` loaded on `device`."""
    import torch

    from pipeline.nn.device import FittedBatch, autocast

    if not inputs:
        spec = ex.spec()
        return np.empty((0, *spec.shape), np.dtype(spec.dtype))
    x = torch.stack(list(inputs))
    with autocast(device, amp):
        feats = FittedBatch(RunOptions().resolved_batch_size(device))(ex.forward, x)
    return _as_stored(ex, feats)


def text_features(ex: Extractor, texts: Sequence[str], device: str, amp: bool = True) -> np.ndarray:
    """Rows of `post_text` strings, in order; `ex` loaded on `device` (torch text models)."""
    if not texts:
        spec = ex.spec()
        return np.empty((0, *spec.shape), np.dtype(spec.dtype))
    with _text_autocast(ex, device, amp):
        return _as_stored(ex, ex.transform(list(texts)))


__all__ = ["ImageError", "image_features", "preprocess_image", "text_features"]
