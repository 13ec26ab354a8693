"""Shard tasks -> shard results: the forward pass over image batches, or `transform` over texts.

torch (DataLoader, autocast) is imported only on the paths that use it, so a tokens or
tfidf extraction runs without it.
"""
from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Iterator, Sequence

import numpy as np

from extractors.base import Extractor
from pipeline.core.device import is_cuda
from pipeline.core.progress import Progress
from pipeline.extract.images import fingerprint_text
from pipeline.extract.options import RunOptions, ShardResult, ShardTask


def _empty(ex: Extractor) -> np.ndarray:
    spec = ex.spec()
    return np.empty((0, *spec.shape), np.dtype(spec.dtype))


def _text_autocast(ex: Extractor, device: str, amp: bool) -> AbstractContextManager[Any]:
    """Mixed precision for torch text models on CUDA; nothing (and no torch import) otherwise."""
    if not ex.uses_torch or not is_cuda(device):
        return nullcontext()
    from pipeline.nn.device import autocast

    return autocast(device, amp)


def map_shards(
    ex: Extractor, tasks: Sequence[ShardTask], opts: RunOptions, device: str = "cpu", progress: Progress | None = None
) -> Iterator[ShardResult]:
    """Tasks -> results, in order; `ex` must be loaded on `device` (`ex.load(device)`)."""
    if ex.modality == "text":
        for t in tasks:
            with _text_autocast(ex, device, opts.amp):
                feats = ex.transform(list(t.inputs)) if t.post_ids else _empty(ex)
            yield ShardResult(t.index, list(t.post_ids), feats, [fingerprint_text(x) for x in t.inputs])
            if progress:
                progress.advance(len(t.post_ids))
        return
    from torch.utils.data import DataLoader

    from pipeline.extract.reader import ImageItems, RawImages, collate, collate_raw, decode_batch, decodes_on_device
    from pipeline.nn.device import FittedBatch, autocast

    # One loader over every task, with batches that never cross a shard, so the workers
    # stay warm across shards and the model never waits for a new pool to start.
    batch_size = opts.resolved_batch_size(device)
    items: list[tuple[str, str]] = []
    batches: list[list[int]] = []
    per_task: list[int] = []  # batches of each task
    for t in tasks:
        start = len(items)
        items += zip(t.post_ids, t.inputs)
        cuts = range(start, len(items), batch_size)
        batches += [list(range(c, min(c + batch_size, len(items)))) for c in cuts]
        per_task.append(len(cuts))
    on_device = decodes_on_device(ex, device, opts.decode)  # JPEG bytes to the GPU, decoded there
    workers = opts.resolved_workers()
    loader = DataLoader(
        RawImages(ex, items) if on_device else ImageItems(ex, items), batch_sampler=batches, num_workers=workers,
        collate_fn=collate_raw if on_device else collate, pin_memory=is_cuda(device),
        prefetch_factor=4 if workers else None,
        # fork on Linux, also inside dask workers (whose default is spawn: a fresh interpreter per shard)
        multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None,
    )
    fitted = FittedBatch(batch_size)  # halves on CUDA out-of-memory, for every later batch too
    batch_iter = iter(loader)
    for t, n in zip(tasks, per_task):
        got = []
        for _ in range(n):
            b = next(batch_iter)
            if on_device:
                b = decode_batch(ex, b, device)
            if b["x"] is None:
                feats = _empty(ex)
            else:
                with autocast(device, opts.amp):
                    feats = fitted(ex.forward, b["x"])
            got.append((b["ids"], feats, b["sources"], b["failures"]))
            if progress:
                progress.advance(len(b["ids"]) + len(b["failures"]))
        yield ShardResult(
            t.index,
            [i for g in got for i in g[0]],
            np.concatenate([g[1] for g in got]) if got else _empty(ex),
            [s for g in got for s in g[2]],
            [f for g in got for f in g[3]],
        )
