"""Finding, opening and verifying the stores of a dataset.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import StoreError, did_you_mean
from pipeline.store.integrity import repair_store, verify_store
from pipeline.store.manifest import MANIFEST
from pipeline.store.reader import FeatureStore

__all__ = ["list_stores", "resolve_store", "open_store", "verify_store", "repair_store"]


def list_stores(dataset: str, cache: str | Path | None = None) -> list[str]:
    d = paths.features_dir(dataset, cache)
    if not d.exists():
        return []
    return sorted(p.name for p in d.iterdir() if paths.NAME_RE.fullmatch(p.name) and (p / MANIFEST).exists())


def resolve_store(dataset: str, ref: str, cache: str | Path | None = None) -> Path:
    """A store by full extractor id or a unique prefix (e.g. `vgg16-pool5-224`)."""
    ids = list_stores(dataset, cache)
    if ref in ids:
        return paths.store_dir(dataset, ref, cache)
    hits = [i for i in ids if i.startswith(ref)]
    if len(hits) == 1:
        return paths.store_dir(dataset, hits[0], cache)
    if not hits:
        hint = did_you_mean(ref, ids) or did_you_mean(ref, {i[:len(ref)] for i in ids})  # a mistyped prefix
        raise StoreError(f"no store matching {ref!r} in dataset {dataset!r}{hint}; "
                         f"stores: {ids or 'none'}")
    raise StoreError(f"{ref!r} matches several stores in {dataset!r}: {hits}; give more of the id")


def open_store(dataset: str, ref: str, cache: str | Path | None = None) -> FeatureStore:
    return FeatureStore(resolve_store(dataset, ref, cache))


