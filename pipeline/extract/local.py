"""The extraction runner: posts -> (reader -> mapper -> writer) -> a sharded feature store.

    reader   image paths decoded, converted and preprocessed in DataLoader worker
             processes (pipeline/extract/images.py); bad files come back as per-item failures.
             On CUDA the workers read JPEG bytes and the device decodes and resizes
             them (pipeline/extract/reader.py)
    mapper   `extractor.forward` on batches (eval mode, inference_mode; autocast and
             a batch size fitted to memory on CUDA), or `extractor.transform` on texts
    writer   one shard per `ShardTask`, then its failures (StoreWriter)

One shard is one unit of work: `plan` cuts the posts still to do into `ShardTask`s and
`map_shards` turns tasks into `ShardResult`s anywhere (this process, or a dask worker
that loaded the extractor once), so only the process holding the store lock adds them.
What decides "still to do" is a fingerprint per post (blake2b of the image bytes, or of
the text) compared with the newest stored row's: a rerun skips unchanged posts, extracts
new ones and re-extracts changed ones; a killed run resumes after its last finished shard.

Writing is split the same way: `write_result` (the shard file; pure, runs where the
features are: the writer thread here, or the dask worker) and `ShardLedger.record` (the
manifest and failures; only in the lock holder), so the local and the dask paths
(pipeline/extract/cluster.py) write the same store through the same two steps.

"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from extractors.base import Extractor
from pipeline.core import paths
from pipeline.core.config import config_to_dict
from pipeline.core.progress import Progress
from pipeline.data.contract import load_posts, post_text
from pipeline.extract.build import is_fitted
from pipeline.extract.mapper import map_shards
from pipeline.extract.options import ExtractReport, RunOptions
from pipeline.extract.plan import plan
from pipeline.extract.writer import ShardLedger, failure_frame, write_result
from pipeline.store import StoreWriter
from pipeline.store.coverage import NO_IMAGE


def run_extract(
    dataset: str,
    extractor: Extractor,
    cache: str | Path | None = None,
    posts: pl.DataFrame | None = None,
    **options: Any,
) -> ExtractReport:
    """Extract every post of `dataset` not yet in the extractor's store; options: RunOptions fields (None = default)."""
    t_start = time.perf_counter()
    opts = RunOptions(**{k: v for k, v in options.items() if v is not None})
    if not extractor.uses_torch:
        device = "cpu"  # numpy-only extractors: no device to resolve, and no torch import to resolve it
    else:
        device = opts.device if opts.on_dask else opts.resolved_device()  # a bad --device fails before any work
    if posts is None:
        posts = load_posts(dataset, cache)
    if extractor.needs_fit and not is_fitted(extractor):
        extractor.fit(post_text(posts))
    eid = extractor.extractor_id()
    spec = extractor.spec()
    store = paths.store_dir(dataset, eid, cache)  # both names checked: nothing written outside the cache
    config = config_to_dict(extractor.config)
    with StoreWriter(store, eid, extractor.name, spec, config, wait=opts.wait) as w:
        for name, data in extractor.artifacts().items():  # before any shard
            if w.manifest.artifacts.get(name) != hashlib.sha256(data).hexdigest():
                w.save_artifact(name, data)
        p = plan(extractor.modality, posts, w, opts)
        w.withdraw(p.stale)  # before anything else: a kill from here on never leaves a stale row served
        if p.no_image:
            w.record_failures(failure_frame([(i, NO_IMAGE, "") for i in p.no_image]))
        ledger = ShardLedger(w)
        load_s = loop_s = 0.0
        total = sum(len(t.post_ids) for t in p.tasks)
        unit = "images" if extractor.modality == "image" else "posts"
        if total and opts.on_dask:
            from pipeline.core.cluster import dask_client
            from pipeline.extract.cluster import run_shards  # dask only when asked for

            t0 = time.perf_counter()
            with dask_client(opts.scheduler, opts.dask_workers, opts.num_workers) as client:
                cluster_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                with Progress(total, f"extract {eid} on dask", unit, opts.quiet) as prog:
                    for o in run_shards(client, extractor, p.tasks, opts, w.directory):
                        ledger.record(o)
                        load_s = max(load_s, o.load_seconds)
                        prog.advance(len(o.post_ids) + len(o.failures))
                loop_s = time.perf_counter() - t1
            load_s += cluster_s
        elif total:
            t0 = time.perf_counter()
            extractor.load(device)
            load_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            # One writer thread, in order: the forward pass goes on while a shard is fsynced.
            pending: list[Future] = []
            with ThreadPoolExecutor(max_workers=1) as disk, Progress(total, f"extract {eid}", unit, opts.quiet) as prog:
                for r in map_shards(extractor, p.tasks, opts, device, prog):
                    while len(pending) >= 2:  # bounded: at most two shards held in memory
                        pending.pop(0).result()
                    pending.append(disk.submit(lambda r: ledger.record(write_result(w.directory, r, spec)), r))
                for f in pending:
                    f.result()
            loop_s = time.perf_counter() - t1
    return ExtractReport(
        extractor_id=eid, store=store, extracted=ledger.extracted, skipped=p.skipped, failed=ledger.failed,
        skipped_failed=p.skipped_failed, no_image=len(p.no_image), shards_written=ledger.shards,
        seconds=time.perf_counter() - t_start, load_seconds=load_s,
        images_per_s=(ledger.extracted + ledger.failed) / loop_s if loop_s > 0 else 0.0,
    )
