"""Which posts still need extracting (fingerprints vs the store), cut into shard tasks.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.data.contract import post_text
from pipeline.extract.images import fingerprint_file, fingerprint_text
from pipeline.extract.options import RunOptions, ShardTask


def _fingerprints(paths_: list[str]) -> list[str]:
    """blake2b of every image, on threads: hashing and reads release the GIL."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(fingerprint_file, paths_))


@dataclass
class Plan:
    tasks: list[ShardTask]
    skipped: int
    skipped_failed: int
    no_image: list[str]  # post ids without an image
    stale: list[str]  # post ids with a stored row of another input (changed, gone, unreadable): withdrawn first


def plan(modality: str, posts: pl.DataFrame, writer: Any, opts: RunOptions) -> Plan:
    """Which posts still need extracting, cut into shard tasks numbered after the store's last shard,
    and which stored rows no longer match their post's input (`stale`: the caller withdraws them
    before extracting, so a post whose image changed, went or became unreadable is never served
    its old features). `modality` is the extractor's (image | text); `writer` is the store
    (a StoreWriter, or a read-only `pipeline.extract.noop.StoreState`)."""
    ids = posts["post_id"].to_list()
    no_image: list[str] = []
    done = writer.done_sources()
    if modality == "text":
        inputs = post_text(posts)
        sources = [fingerprint_text(t) for t in inputs]
    else:
        images = posts["image"].to_list() if "image" in posts.columns else [None] * len(ids)
        keep = [i for i, p in enumerate(images) if p]
        no_image = [ids[i] for i, p in enumerate(images) if not p]
        ids = [ids[i] for i in keep]
        inputs = [images[i] for i in keep]
        sources = _fingerprints(inputs)
    current = dict(zip(ids, sources))
    stale = [pid for pid in posts["post_id"].to_list() if pid in done and current.get(pid) != done[pid]]
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
    size = opts.shard_size or (512 if modality == "image" else 8192)
    tasks = [
        ShardTask(first + k, [p for p, _ in chunk], [x for _, x in chunk])
        for k, chunk in enumerate(todo[i : i + size] for i in range(0, len(todo), size))
    ]
    return Plan(tasks, skipped, skipped_failed, no_image, stale)
