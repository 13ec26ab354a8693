"""Extractors by name with typed overrides, or rebuilt exactly from the store they wrote.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import extractors
from extractors.base import Extractor
from pipeline.core.config import coerce, config_from_dict, field_types
from pipeline.core.errors import PipeError
from pipeline.store import Manifest
from pipeline.store.coverage import kind_is_image


def build_extractor(name: str, **overrides: Any) -> Extractor:
    """The registered extractor `name` with its config defaults, overridden by every non-None value.

    Values may be typed or strings (`--set max_features=3000`): each is converted to its
    config field's annotated type.
    """
    cls = extractors.get(name)  # PipeError naming the known backbones
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
    except PipeError:
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


def reads_images(store: Any) -> bool:
    """Whether the extractor that wrote a store (a FeatureStore) reads images: its posts without an
    image have no row by design. Grid and pixel kinds when that extractor is not installed."""
    try:
        return extractors.get(store.manifest.extractor).modality == "image"
    except Exception:  # PipeError for an unknown name, or a module that fails to import
        return kind_is_image(store)
