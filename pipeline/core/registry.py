"""A name -> class registry that imports its package's modules on first lookup.

Extractors and heads each keep one (one module per backbone / paper, registered by
name), so tests can loop over everything registered without a list to maintain.
`get(name)` first imports the module of that name alone: `pipe extract --backbone tokens`
must not pay for (or need) torch because `vgg16.py` sits next to `tokens.py`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from pipeline.core.errors import PipeError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, what: str) -> None:
        self.package = package  # dotted package whose modules register themselves
        self.what = what  # noun for error messages ("backbone", "head")
        self.classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Add `cls` under its `name`; a second class of the same name is refused. The same class
        again, or its new version from a reloaded module (same module and qualified name), is not."""
        name = cls.name  # type: ignore[attr-defined]
        old = self.classes.get(name)
        if old is not None and _qualname(old) != _qualname(cls):
            raise PipeError(f"{self.what} name {name!r} is taken: {_qualname(old)} and {_qualname(cls)} both register it")
        self.classes[name] = cls
        return cls

    def get(self, name: str) -> type[T]:
        if name not in self.classes:
            self._load_one(name)
        if name not in self.classes:  # registered under another module's name (clip_text in clip.py)
            self._load_all()
        if name not in self.classes:
            raise PipeError(f"unknown {self.what} {name!r}; known {self.what}s: {', '.join(sorted(self.classes))}")
        return self.classes[name]

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self.classes)

    def _load_one(self, name: str) -> None:
        if not name.isidentifier() or name == "base" or name.startswith("_"):
            return
        try:
            importlib.import_module(f"{self.package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{self.package}.{name}":  # the module exists but an import inside it failed
                raise

    def _load_all(self) -> None:
        pkg = importlib.import_module(self.package)
        for m in pkgutil.iter_modules(pkg.__path__):
            if m.name != "base" and not m.name.startswith("_"):
                importlib.import_module(f"{self.package}.{m.name}")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
