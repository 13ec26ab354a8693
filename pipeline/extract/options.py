"""How to run an extraction (RunOptions) and what flows through it: tasks, results, reports.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.device import check_device, is_cuda, resolve_device
from pipeline.core.errors import PipeError

DECODES = ("auto", "cpu", "device")  # RunOptions.decode: where JPEGs are decoded


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
        check_device(self.device)
        if self.decode not in DECODES:
            raise PipeError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")
        if self.dask_workers is not None and self.scheduler:
            raise PipeError("give --dask-workers (a local cluster) or --scheduler (an existing one), not both")

    @property
    def on_dask(self) -> bool:
        return bool(self.dask_workers or self.scheduler)

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def resolved_workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    def resolved_batch_size(self, device: str) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 256 if is_cuda(device) else 32


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
