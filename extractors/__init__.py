"""Extractor registry: one module per backbone, each registered by name."""
from __future__ import annotations

import inspect
from typing import Any

from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.registry import Registry

_registry: Registry[Extractor] = Registry("extractors", "backbone")
REGISTRY = _registry.classes
register = _registry.register
get = _registry.get
names = _registry.names



def build_network(name: str, config: dict[str, Any]) -> Any:
    """The network of extractor `name` (its `network` builder) from an extractor config (a store
    manifest's `config`: weights, seed, image_size, layer, model, ...), in eval mode as
    extraction runs it; `.preprocessing` says its input. Fine-tuning trains exactly this."""
    try:
        cls = get(name)  # imports that extractor's module alone
    except PipeError:
        cls = None
    if cls is None or cls.network is None:
        have = ", ".join(n for n in names() if get(n).network is not None)
        raise PipeError(f"no backbone {name!r}; backbones: {have}")
    build = cls.network
    wanted = set(inspect.signature(build).parameters)
    if set(config) != wanted:
        raise PipeError(f"{name}: a backbone config has the keys {', '.join(sorted(wanted))}; "
                        f"got {', '.join(sorted(config)) or 'none'}")
    return build(**config).eval()


__all__ = ["Extractor", "REGISTRY", "build_network", "register", "get", "names"]
