"""Extractor registry: one module per backbone, each registered by name."""
from __future__ import annotations

from extractors.base import Extractor

REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Extractor]:
    _load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    import importlib
    import pkgutil

    import extractors

    for m in pkgutil.iter_modules(extractors.__path__):
        if m.name != "base" and not m.name.startswith("_"):
            importlib.import_module(f"extractors.{m.name}")


__all__ = ["Extractor", "REGISTRY", "register", "get", "names"]
