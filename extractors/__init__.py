"""Extractor registry: one module per backbone, each registered by name."""
from __future__ import annotations

from extractors.base import Extractor
from pipeline.core.registry import Registry

_registry: Registry[Extractor] = Registry("extractors", "backbone")
REGISTRY = _registry.classes
register = _registry.register
get = _registry.get
names = _registry.names

__all__ = ["Extractor", "REGISTRY", "register", "get", "names"]
