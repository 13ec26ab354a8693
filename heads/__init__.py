"""Head registry: one module per paper (and per baseline), each registered by name."""
from __future__ import annotations

from heads.base import Head, HeadData, Role

REGISTRY: dict[str, type[Head]] = {}


def register(cls: type[Head]) -> type[Head]:
    REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Head]:
    _load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown head {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def _load_all() -> None:
    import importlib
    import pkgutil

    import heads

    for m in pkgutil.iter_modules(heads.__path__):
        if m.name not in ("base",) and not m.name.startswith("_"):
            importlib.import_module(f"heads.{m.name}")


__all__ = ["Head", "HeadData", "Role", "REGISTRY", "register", "get", "names"]
