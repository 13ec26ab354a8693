"""A name -> class registry that imports its package's modules on first lookup.

Extractors and heads each keep one (one module per backbone / paper, registered by
name), so tests can loop over everything registered without a list to maintain.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, what: str) -> None:
        self.package = package  # dotted package whose modules register themselves
        self.what = what  # noun for error messages ("backbone", "head")
        self.classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        self.classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def get(self, name: str) -> type[T]:
        self._load_all()
        if name not in self.classes:
            raise KeyError(f"unknown {self.what} {name!r}; known: {sorted(self.classes)}")
        return self.classes[name]

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self.classes)

    def _load_all(self) -> None:
        pkg = importlib.import_module(self.package)
        for m in pkgutil.iter_modules(pkg.__path__):
            if m.name != "base" and not m.name.startswith("_"):
                importlib.import_module(f"{self.package}.{m.name}")
