"""Extraction on a dask cluster: one shard is one task, the store stays the single-process one.

The driver (`run_extract`) holds the store's lock, plans the shard tasks and submits them;
a worker loads the extractor once per process (`_LOADED`, keyed by extractor id and
device), maps its shard and writes the shard file itself (`write_result`: temp file and
rename, on the filesystem it shares with the driver). Only the manifest entry and the
failures come back, and the driver adds them as tasks finish (`ShardLedger.record`), so
the manifest grows shard by shard exactly as in one process.

Faults: a task that raises is retried (`RETRIES`); a task whose worker dies is re-run on
another worker by the scheduler (up to `distributed.scheduler.allowed-failures`). A shard
renamed into place before its worker died is found by the re-run and returned, never
rewritten (`store.finished_shard`); one finished after the driver died is adopted by the
next `StoreWriter` open. A task that fails for good stops the run with a PipeError; every
shard finished until then is kept, and a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from pipeline.core.device import resolve_device
from pipeline.core.errors import PipeError
from pipeline.extract.options import RunOptions, ShardOutcome, ShardTask

if TYPE_CHECKING:
    from distributed import Client

    from extractors.base import Extractor

RETRIES = 2  # re-runs of a task that raised (a worker's death is counted by the scheduler instead)
_LOADED: dict[tuple[str, str], Any] = {}  # per worker process: (extractor id, device) -> loaded extractor


def _workers_offer(client: "Client", resource: str) -> bool:
    return any(resource in (w.get("resources") or {}) for w in client.scheduler_info()["workers"].values())


def run_shards(client: "Client", ex: "Extractor", tasks: Sequence["ShardTask"], opts: "RunOptions",
               directory: Path) -> Iterator["ShardOutcome"]:
    """Submit one task per shard; yield each outcome as it finishes (any order).

    On workers started with `--resources GPU=1`, image tasks of a non-CPU run ask for one GPU each.
    """
    from distributed import as_completed

    gpu = ex.modality == "image" and opts.device != "cpu" and _workers_offer(client, "GPU")
    run = uuid.uuid4().hex[:8]
    eid = ex.extractor_id()
    futures = {
        client.submit(_run_shard, ex, t, opts, str(directory), key=f"extract-{eid}-{run}-shard-{t.index:05d}",
                      retries=RETRIES, resources={"GPU": 1} if gpu else None): t
        for t in tasks
    }
    try:
        for f in as_completed(list(futures)):
            t = futures.pop(f)
            try:
                outcome = f.result()
            except PipeError:
                raise
            except Exception as e:  # KilledWorker, an I/O error after the retries...
                raise PipeError(
                    f"shard {t.index} ({len(t.post_ids)} posts, first {t.post_ids[0]}) failed on the dask cluster: "
                    f"{type(e).__name__}: {e}. Every finished shard is kept: rerun to resume"
                ) from None
            f.release()
            yield outcome
    finally:
        if futures:
            client.cancel(list(futures))


# -- on the worker --------------------------------------------------------------------
def worker_device(device: str) -> str:
    """This worker's device: auto/cuda on a multi-GPU node with a local cluster -> cuda:<worker number
    mod GPUs> (one GPU per worker); otherwise what `RunOptions.resolved_device` says."""
    from distributed import get_worker

    resolved = resolve_device(device)
    if resolved != "cuda" or torch.cuda.device_count() < 2:
        return resolved
    try:
        name = get_worker().name
    except ValueError:  # not on a dask worker
        return resolved
    return f"cuda:{name % torch.cuda.device_count()}" if isinstance(name, int) else resolved


def _loader_workers(opts: "RunOptions") -> int:
    """DataLoader processes inside a dask worker: none by default (a worker is one core), and none
    in a daemonic worker, which may not start children."""
    if multiprocessing.current_process().daemon:
        return 0
    return opts.num_workers or 0


def _run_shard(ex: "Extractor", task: "ShardTask", opts: "RunOptions", directory: str) -> "ShardOutcome":
    """One shard on a dask worker: the extractor loaded once per process, the shard file written here."""
    from pipeline.extract.mapper import map_shards
    from pipeline.extract.writer import write_result

    device = worker_device(opts.device)
    key = (ex.extractor_id(), device)
    t0 = time.perf_counter()
    if key not in _LOADED:
        _LOADED.clear()  # one model per worker at a time: a long-lived cluster serves many runs
        ex.load(device)
        _LOADED[key] = ex
    load_s = time.perf_counter() - t0
    loaded = _LOADED[key]
    local = dataclasses.replace(opts, num_workers=_loader_workers(opts), quiet=True, dask_workers=None, scheduler=None)
    result = next(map_shards(loaded, [task], local, device))
    outcome = write_result(Path(directory), result, loaded.spec())
    outcome.load_seconds = load_s
    return outcome
