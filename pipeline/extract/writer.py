"""Writing results: the shard file (pure, runs where the features are) and the ledger (lock holder only).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.core.specs import FeatureSpec
from pipeline.extract.options import ShardOutcome, ShardResult
from pipeline.store import StoreWriter, finished_shard, write_shard_file
from pipeline.store.manifest import FAILURE_SCHEMA


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
            self.writer.record_failures(failure_frame(o.failures), succeeded=sorted(ok_before))
            self.known_failures.difference_update(ok_before)
            self.known_failures.update(f[0] for f in o.failures)
        self.extracted += len(o.post_ids)
        self.failed += len(o.failures)
        self.shards += o.entry is not None

def failure_frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=FAILURE_SCHEMA, orient="row")
