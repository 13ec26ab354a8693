"""The feature store: sharded, resumable, content-addressed, read through memory maps.

Layout of one store, `<cache>/<dataset>/features/<extractor-id>/`:

    manifest.json        extractor id, config, spec, finished shards (rows, sha256)
    shard-00000.h5       datasets `post_id` (utf-8), `features` (N, *shape), `source` (utf-8)
    failures.parquet     post_id, reason, source: inputs that could not be read
    .lock                an flock: exclusive for the one writer, shared while a reader opens
    .verified.json       stamps of shards whose sha256 was checked (size, mtime, inode)
    quarantine/          shards set aside by `pipe store repair` or refused at adoption
    <artifacts>          e.g. vocab.json, listed in the manifest with their sha256

Shards are written to a temporary file (no `shard-` prefix) and renamed when complete; a
finished shard is never rewritten. A post extracted again (its input changed) lands in a
newer shard, and the newest row wins when reading.
"""
from pipeline.store.catalog import list_stores, open_store, repair_store, resolve_store, verify_store
from pipeline.store.manifest import FAILURES, MANIFEST, Manifest, read_failures, store_lock
from pipeline.store.reader import FeatureStore
from pipeline.store.shards import finished_shard, write_shard_file
from pipeline.store.writer import StoreWriter

__all__ = ["list_stores", "open_store", "repair_store", "resolve_store", "verify_store", "FAILURES", "MANIFEST", "Manifest",
           "read_failures", "store_lock", "FeatureStore", "finished_shard", "write_shard_file", "StoreWriter"]
