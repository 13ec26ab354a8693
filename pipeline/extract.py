"""The extraction runner: posts -> (reader -> mapper -> writer) -> a sharded feature store.

    reader   image paths decoded, converted and preprocessed in DataLoader worker
             processes (pipeline/images.py); bad files come back as per-item failures.
             On CUDA the workers read JPEG bytes and the device decodes and resizes
             them (pipeline/gpu.py)
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
(pipeline/distributed.py) write the same store through the same two steps.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

import extractors
from extractors.base import Extractor
from pipeline import gpu, paths
from pipeline.errors import PipeError
from pipeline.headconfig import coerce, config_from_dict, config_to_dict, field_types
from pipeline.images import ImageError, fingerprint_file, fingerprint_text, load_image
from pipeline.posts import load_posts, post_text
from pipeline.progress import Progress
from pipeline.specs import FeatureSpec
from pipeline.store import Manifest, StoreWriter, finished_shard, write_shard_file

NO_IMAGE = "no image"  # failure reason of posts whose `image` is null


@dataclass
class RunOptions:
    """How to run an extraction; none of it changes the output (nor the extractor id)."""

    batch_size: int | None = None  # inputs per forward pass; None: 32 on CPU, 256 on CUDA (halved on out-of-memory)
    shard_size: int | None = None  # posts per shard (unit of work, resume, dask task); None: 512 images, 8192 texts
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    num_workers: int | None = None  # image-decoding processes; None: min(8, CPUs - 1), at least 1 (0 in dask workers)
    retry_failed: bool = False  # try recorded failures again even if their input is unchanged
    wait: bool = False  # queue behind another writer of the store instead of refusing
    quiet: bool = False  # no progress output
    decode: str = "auto"  # auto: JPEGs decoded and resized on CUDA devices | cpu: always PIL in workers | device
    amp: bool = True  # CUDA: autocast to bfloat16 (float16 without bf16 support); False: float32 throughout
    dask_workers: int | None = None  # run the shards on a local dask cluster of this many worker processes
    scheduler: str | None = None  # run the shards on the dask cluster at this address (tcp://host:8786)

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_size", "dask_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PipeError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise PipeError(f"num_workers must be 0 or more, got {self.num_workers}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise PipeError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.decode not in gpu.DECODES:
            raise PipeError(f"decode must be one of {', '.join(gpu.DECODES)}, got {self.decode!r}")
        if self.dask_workers is not None and self.scheduler:
            raise PipeError("give --dask-workers (a local cluster) or --scheduler (an existing one), not both")

    @property
    def on_dask(self) -> bool:
        return bool(self.dask_workers or self.scheduler)

    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise PipeError(f"--device {self.device} asked for, but torch sees no CUDA device; use --device cpu")
        return self.device

    def resolved_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    def resolved_batch_size(self, device: str) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 256 if gpu.is_cuda(device) else 32


@dataclass
class ShardTask:
    """One unit of work: posts to extract into shard `index`."""

    index: int  # shard number in the store (shard-NNNNN.h5)
    post_ids: list[str]
    inputs: list[str]  # image paths (image extractors) or texts (text extractors)


@dataclass
class ShardResult:
    """What a task produced: rows to store and inputs that could not be read."""

    index: int
    post_ids: list[str]  # rows that were extracted, in `features` order
    features: np.ndarray  # (len(post_ids), *spec.shape)
    sources: list[str]  # input fingerprint per row
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (post_id, reason, source)


@dataclass
class ShardOutcome:
    """A written shard, as the store's lock holder needs it: small enough to come back from a dask worker."""

    index: int
    entry: dict[str, Any] | None  # manifest entry of the shard file; None when no row was extracted
    post_ids: list[str]  # rows in the shard
    failures: list[tuple[str, str, str]]  # (post_id, reason, source)
    load_seconds: float = 0.0  # model load this task paid (on dask: a worker's first task)


@dataclass
class ExtractReport:
    """What one `run_extract` did."""

    extractor_id: str
    store: Path  # the store directory
    extracted: int  # rows written this run
    skipped: int  # posts already stored with an unchanged input
    failed: int  # inputs that could not be read this run (see failures.parquet)
    skipped_failed: int  # recorded failures not retried (unchanged input, no retry_failed)
    no_image: int  # image extractors: posts without an image (listed as failures, not extracted)
    shards_written: int
    seconds: float  # wall time of the whole run
    load_seconds: float  # model build and weight loading (start-up, not throughput)
    images_per_s: float  # inputs (extracted + failed) per second of the extraction loop


# -- building extractors -------------------------------------------------------------
def build_extractor(name: str, **overrides: Any) -> Extractor:
    """The registered extractor `name` with its config defaults, overridden by every non-None value.

    Values may be typed or strings (`--set max_features=3000`): each is converted to its
    config field's annotated type.
    """
    try:
        cls = extractors.get(name)
    except KeyError:
        raise PipeError(f"unknown backbone {name!r}; known: {', '.join(extractors.names())}") from None
    types_ = field_types(cls.Config)
    given = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(types_))
    if unknown:
        opts = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise PipeError(f"{name} takes no {opts}; its options: {', '.join(sorted(types_)) or 'none'}")
    kwargs = {}
    for k, v in given.items():
        try:
            kwargs[k] = coerce(v, types_[k])
        except (ValueError, TypeError) as e:
            raise PipeError(f"{name}: {k}={v!r} is not a valid {getattr(types_[k], '__name__', types_[k])} ({e})") from None
    return cls(cls.Config(**kwargs))


def extractor_from_store(store_dir: str | Path) -> Extractor:
    """The exact extractor that wrote a store (config and fitted artifacts), e.g. to score new posts."""
    store_dir = Path(store_dir)
    man = Manifest.load(store_dir)
    try:
        cls = extractors.get(man.extractor)
    except KeyError:
        raise PipeError(f"{store_dir} was written by extractor {man.extractor!r}, which is not installed") from None
    ex = cls(config_from_dict(cls.Config, man.config))
    ex.load_artifacts(store_dir)
    got = ex.extractor_id()
    if got != man.extractor_id:
        raise PipeError(
            f"{store_dir} was written by {man.extractor_id}, but its config now gives {got} "
            "(a weights or vocabulary file changed since?)"
        )
    return ex


def is_fitted(ex: Extractor) -> bool:
    """A fitted extractor (fit or load_artifacts ran) can hand over its artifacts; an unfitted one raises."""
    if not ex.needs_fit:
        return True
    try:
        ex.artifacts()
    except PipeError:
        return False
    return True


# -- reader and mapper ---------------------------------------------------------------
class _Images(Dataset):
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


def _collate(rows: list[tuple[str, Any, str, str | None]]) -> dict[str, Any]:
    ok = [r for r in rows if r[3] is None]
    return {
        "ids": [r[0] for r in ok],
        "x": torch.stack([r[1] for r in ok]) if ok else None,  # (B, C, H, W)
        "sources": [r[2] for r in ok],
        "failures": [(r[0], r[3], r[2]) for r in rows if r[3] is not None],
    }


def _empty(ex: Extractor) -> np.ndarray:
    spec = ex.spec()
    return np.empty((0, *spec.shape), np.dtype(spec.dtype))


def map_shards(
    ex: Extractor, tasks: Sequence[ShardTask], opts: RunOptions, device: str = "cpu", progress: Progress | None = None
) -> Iterator[ShardResult]:
    """Tasks -> results, in order; `ex` must be loaded on `device` (`ex.load(device)`)."""
    if ex.modality == "text":
        for t in tasks:
            with gpu.autocast(device, opts.amp):
                feats = ex.transform(list(t.inputs)) if t.post_ids else _empty(ex)
            yield ShardResult(t.index, list(t.post_ids), feats, [fingerprint_text(x) for x in t.inputs])
            if progress:
                progress.advance(len(t.post_ids))
        return
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
    on_device = gpu.decodes_on_device(ex, device, opts.decode)  # JPEG bytes to the GPU, decoded there
    workers = opts.resolved_workers()
    loader = DataLoader(
        gpu.RawImages(ex, items) if on_device else _Images(ex, items), batch_sampler=batches, num_workers=workers,
        collate_fn=gpu.collate_raw if on_device else _collate, pin_memory=gpu.is_cuda(device),
        prefetch_factor=4 if workers else None,
        # fork on Linux, also inside dask workers (whose default is spawn: a fresh interpreter per shard)
        multiprocessing_context="fork" if workers and sys.platform.startswith("linux") else None,
    )
    fitted = gpu.FittedBatch(batch_size)  # halves on CUDA out-of-memory, for every later batch too
    batch_iter = iter(loader)
    for t, n in zip(tasks, per_task):
        got = []
        for _ in range(n):
            b = next(batch_iter)
            if on_device:
                b = gpu.decode_batch(ex, b, device)
            if b["x"] is None:
                feats = _empty(ex)
            else:
                with gpu.autocast(device, opts.amp):
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


# -- writing -------------------------------------------------------------------------
def write_result(directory: Path, r: ShardResult, spec: FeatureSpec) -> ShardOutcome:
    """The shard file of one result (temp file, rename), wherever the result is: pure, so a dask
    worker runs it. A retried task whose shard is already in place with its ids gets that entry back."""
    entry = None
    if r.post_ids:
        entry = finished_shard(directory, r.index, r.post_ids) or write_shard_file(
            directory, r.index, r.post_ids, r.features, r.sources, spec
        )
    return ShardOutcome(r.index, entry, list(r.post_ids), list(r.failures))


class ShardLedger:
    """The lock holder's half of writing: finished shards into the manifest, failures into failures.parquet."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.known_failures = set(writer.failures()["post_id"].to_list())  # ids listed in failures.parquet
        self.extracted = self.failed = self.shards = 0

    def record(self, o: ShardOutcome) -> None:
        """Shard, then manifest, then failures: a kill in between loses at most a redo."""
        if o.entry is not None:
            self.writer.add_shard(o.entry)
        ok_before = self.known_failures.intersection(o.post_ids)
        if o.failures or ok_before:
            self.writer.record_failures(_failure_frame(o.failures), succeeded=sorted(ok_before))
            self.known_failures.difference_update(ok_before)
            self.known_failures.update(f[0] for f in o.failures)
        self.extracted += len(o.post_ids)
        self.failed += len(o.failures)
        self.shards += o.entry is not None


# -- planning ------------------------------------------------------------------------
def _fingerprints(paths_: list[str]) -> list[str]:
    """blake2b of every image, on threads: hashing and reads release the GIL."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fingerprint_file, paths_))


@dataclass
class Plan:
    tasks: list[ShardTask]
    skipped: int
    skipped_failed: int
    no_image: list[str]  # post ids without an image, not yet stored


def plan(ex: Extractor, posts: pl.DataFrame, writer: StoreWriter, opts: RunOptions) -> Plan:
    """Which posts still need extracting, cut into shard tasks numbered after the store's last shard."""
    ids = posts["post_id"].to_list()
    no_image: list[str] = []
    done = writer.done_sources()
    if ex.modality == "text":
        inputs = post_text(posts)
        sources = [fingerprint_text(t) for t in inputs]
    else:
        images = posts["image"].to_list() if "image" in posts.columns else [None] * len(ids)
        keep = [i for i, p in enumerate(images) if p]
        no_image = [ids[i] for i, p in enumerate(images) if not p and ids[i] not in done]
        ids = [ids[i] for i in keep]
        inputs = [images[i] for i in keep]
        sources = _fingerprints(inputs)
    failed = {} if opts.retry_failed else dict(writer.failures().select("post_id", "source").iter_rows())
    todo, skipped, skipped_failed = [], 0, 0
    for pid, x, src in zip(ids, inputs, sources):
        if done.get(pid) == src:
            skipped += 1
        elif failed.get(pid) == src:  # still the same bad input
            skipped_failed += 1
        else:
            todo.append((pid, x))
    first = writer.next_index()
    # Text rows are small and cheap: bigger shards keep the per-shard fsync off the critical path.
    size = opts.shard_size or (512 if ex.modality == "image" else 8192)
    tasks = [
        ShardTask(first + k, [p for p, _ in chunk], [x for _, x in chunk])
        for k, chunk in enumerate(todo[i : i + size] for i in range(0, len(todo), size))
    ]
    return Plan(tasks, skipped, skipped_failed, no_image)


# -- the run -------------------------------------------------------------------------
def _failure_frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"post_id": pl.Utf8, "reason": pl.Utf8, "source": pl.Utf8}, orient="row")


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
    device = opts.device if opts.on_dask else opts.resolved_device()  # a bad --device fails before any work
    if posts is None:
        posts = load_posts(dataset, cache)
    if extractor.needs_fit and not is_fitted(extractor):
        extractor.fit(post_text(posts))
    eid = extractor.extractor_id()
    spec = extractor.spec()
    store = paths.features_dir(dataset, cache) / eid
    config = config_to_dict(extractor.config)
    with StoreWriter(store, eid, extractor.name, spec, config, wait=opts.wait) as w:
        for name, data in extractor.artifacts().items():  # before any shard
            if w.manifest.artifacts.get(name) != hashlib.sha256(data).hexdigest():
                w.save_artifact(name, data)
        p = plan(extractor, posts, w, opts)
        if p.no_image:
            w.record_failures(_failure_frame([(i, NO_IMAGE, "") for i in p.no_image]))
        ledger = ShardLedger(w)
        load_s = loop_s = 0.0
        total = sum(len(t.post_ids) for t in p.tasks)
        unit = "images" if extractor.modality == "image" else "posts"
        if total and opts.on_dask:
            from pipeline.distributed import dask_client, run_shards  # dask only when asked for

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
