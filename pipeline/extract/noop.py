"""A `pipe extract` with nothing new to do finishes without importing its extractor (torch).

Which store a request fills is the extractor id, which only the extractor's module can
compute (config defaults, weights fingerprint) and most extractor modules import torch (1-20
s). So each `pipe extract` that ran remembers its answer in the dataset's features folder
(`.extract-requests.json`): the request (backbone, the settings as given, the size and mtime
of any file a setting names, the extractor code's and libraries' versions) -> extractor id and
modality. A later identical request first reads that store's manifest and shard keys and
plans with the posts' fingerprints exactly as an extraction does (`plan`); only when some
post is new, changed, withdrawn or not yet recorded as failed does the extractor get built.
Extractors fitted on the posts (tfidf, bow, tokens: their id follows the vocabulary) or with
artifacts are never remembered; a store being repaired (orphan shards, temp files) is not
taken as done either. Losing the file only costs the slow path.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import polars as pl

from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes
from pipeline.extract.options import ExtractReport, RunOptions
from pipeline.extract.plan import plan
from pipeline.store.coverage import NO_IMAGE
from pipeline.store.manifest import SHARD_RE, Manifest, read_failures
from pipeline.store.writer import done_sources

MEMO = ".extract-requests.json"  # in <cache>/<dataset>/features/
LIBRARIES = ("torch", "torchvision", "open_clip_torch", "transformers", "sentence-transformers")


def _code_version() -> list[Any]:
    """What an extractor id may depend on besides its settings: the extractor and network code
    (size and mtime of each file) and the libraries' versions."""
    import extractors

    root = Path(extractors.__file__).parent
    files = sorted([*root.glob("*.py"), *(root.parent / "pipeline" / "nn").glob("*.py"),
                    root.parent / "pipeline" / "core" / "specs.py"])
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    versions = []
    for lib in LIBRARIES:
        try:
            versions.append(metadata.version(lib))
        except metadata.PackageNotFoundError:
            versions.append(None)
    return [stats, versions]


def request_key(backbone: str, settings: dict[str, Any]) -> str:
    """A digest of one extraction request (see the module's docstring)."""
    given = {}
    for k, v in sorted(settings.items()):
        if v is None:
            continue
        item: list[Any] = [str(v)]
        if isinstance(v, (str, Path)) and os.path.isfile(v):  # a weights or vocabulary file: its content may change
            st = os.stat(v)
            item += [os.path.abspath(v), st.st_size, st.st_mtime_ns]
        given[k.replace("-", "_")] = item
    doc = json.dumps([backbone, given, _code_version()], sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def _memo_path(dataset: str, cache: str | Path | None) -> Path:
    return paths.features_dir(dataset, cache) / MEMO


def _read_memo(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def remember(dataset: str, cache: str | Path | None, key: str, extractor: Any, extractor_id: str) -> None:
    """Record which store the request `key` fills (best effort: a failure to write costs nothing but time)."""
    if extractor.needs_fit or extractor.artifacts():
        return
    path = _memo_path(dataset, cache)
    memo = _read_memo(path)
    if memo.get(key, {}).get("extractor_id") == extractor_id:
        return
    memo[key] = {"extractor_id": extractor_id, "extractor": extractor.name, "modality": extractor.modality}
    try:
        atomic_write_bytes(path, json.dumps(memo, indent=1, sort_keys=True).encode())
    except OSError:
        pass


@dataclass
class StoreState:
    """A store as `plan` reads it, without its lock: the manifest, served rows and failures."""

    directory: Path  # the store folder
    manifest: Manifest  # as last saved
    _done: dict[str, str] = field(default_factory=dict)

    def done_sources(self) -> dict[str, str]:
        return self._done

    def failures(self) -> pl.DataFrame:
        return read_failures(self.directory)

    def next_index(self) -> int:
        return max((int(SHARD_RE.match(s["file"]).group(1)) for s in self.manifest.shards), default=-1) + 1  # type: ignore[union-attr]


def nothing_new(dataset: str, backbone: str, key: str, cache: str | Path | None, opts: RunOptions,
                posts: Callable[[], pl.DataFrame]) -> ExtractReport | None:
    """The report of an extraction with nothing to do, when the request is remembered and its
    store already holds every post as it is now (`posts()` reads them, only then); None when
    the extractor has to run."""
    t0 = time.perf_counter()
    entry = _read_memo(_memo_path(dataset, cache)).get(key)
    if not isinstance(entry, dict) or entry.get("extractor") != backbone:
        return None
    try:
        store = paths.store_dir(dataset, entry["extractor_id"], cache)
        manifest = Manifest.load(store)
    except (PipeError, KeyError):
        return None
    listed = {s["file"] for s in manifest.shards}
    if manifest.extractor != backbone or any(p.name not in listed for p in store.glob("shard-*.h5")) \
            or any(store.glob(".tmp-*")):  # a killed run's leftovers: the writer adopts or removes them
        return None
    try:
        state = StoreState(store, manifest, done_sources(manifest, store))
        p = plan(entry["modality"], posts(), state, opts)
        recorded = set(state.failures().filter(pl.col("reason") == NO_IMAGE)["post_id"].to_list())
    except PipeError:  # a damaged shard or table: the extraction path says so properly
        return None
    if p.tasks or p.stale or not set(p.no_image) <= recorded:
        return None
    return ExtractReport(extractor_id=manifest.extractor_id, store=store, extracted=0, skipped=p.skipped, failed=0,
                         skipped_failed=p.skipped_failed, no_image=len(p.no_image), shards_written=0,
                         seconds=time.perf_counter() - t0, load_seconds=0.0, images_per_s=0.0)
