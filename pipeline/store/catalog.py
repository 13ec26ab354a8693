"""Finding, opening and verifying the stores of a dataset.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import StoreError
from pipeline.core.io import sha256_file
from pipeline.store.manifest import MANIFEST, Manifest
from pipeline.store.reader import FeatureStore


def list_stores(dataset: str, cache: str | Path | None = None) -> list[str]:
    d = paths.features_dir(dataset, cache)
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if (p / MANIFEST).exists())


def resolve_store(dataset: str, ref: str, cache: str | Path | None = None) -> Path:
    """A store by full extractor id or a unique prefix (e.g. `vgg16-pool5-224`)."""
    ids = list_stores(dataset, cache)
    if ref in ids:
        return paths.features_dir(dataset, cache) / ref
    hits = [i for i in ids if i.startswith(ref)]
    if len(hits) == 1:
        return paths.features_dir(dataset, cache) / hits[0]
    if not hits:
        raise StoreError(f"no store matching {ref!r} in dataset {dataset!r}; stores: {ids or 'none'}")
    raise StoreError(f"{ref!r} matches several stores in {dataset!r}: {hits}; give more of the id")


def open_store(dataset: str, ref: str, cache: str | Path | None = None) -> FeatureStore:
    return FeatureStore(resolve_store(dataset, ref, cache))


def verify_store(directory: Path) -> list[str]:
    """Problems found (empty when the store is sound): missing or corrupted shards."""
    problems = []
    man = Manifest.load(Path(directory))
    for s in man.shards:
        p = Path(directory) / s["file"]
        if not p.exists():
            problems.append(f"{p}: missing")
        elif sha256_file(p) != s["sha256"]:
            problems.append(f"{p}: checksum mismatch (corrupted)")
    for name, digest in man.artifacts.items():
        p = Path(directory) / name
        if not p.exists():
            problems.append(f"{p}: missing artifact")
        elif sha256_file(p) != digest:
            problems.append(f"{p}: artifact checksum mismatch (corrupted)")
    return problems
