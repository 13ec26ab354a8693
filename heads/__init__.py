"""Head registry: one module per paper (and per baseline), each registered by name."""
from __future__ import annotations

from pipeline.head.base import Head, HeadData, Role
from pipeline.core.registry import Registry

_registry: Registry[Head] = Registry("heads", "head")
REGISTRY = _registry.classes
register = _registry.register
get = _registry.get
names = _registry.names

__all__ = ["Head", "HeadData", "Role", "REGISTRY", "register", "get", "names"]
