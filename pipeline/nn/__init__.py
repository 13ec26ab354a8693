"""Networks shared by extraction and training: backbones and device helpers (torch).

`build_backbone(name, config)` rebuilds the network that wrote an extractor store from
the config its manifest records, so fine-tuning trains exactly what extraction ran.
"""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipeError

if TYPE_CHECKING:
    from pipeline.nn.backbone import Backbone

# backbone (= the extractor that writes its stores) -> module with `build(**config)`; imported
# on use, since torchvision and open_clip take seconds to import
BACKBONES = {"vgg16": "pipeline.nn.vgg16", "inception_v3": "pipeline.nn.inception",
             "clip": "pipeline.nn.clip", "pixels": "pipeline.nn.pixels"}


def build_backbone(name: str, config: dict[str, Any]) -> Backbone:
    """The backbone `name` built from an extractor config (a store manifest's `config`: weights,
    seed, image_size, layer, model, ...), in eval mode as extraction runs it; `.preprocessing`
    says its input."""
    if name not in BACKBONES:
        raise PipeError(f"no backbone {name!r}; backbones: {', '.join(BACKBONES)}")
    build = import_module(BACKBONES[name]).build
    wanted = set(inspect.signature(build).parameters)
    if set(config) != wanted:
        raise PipeError(f"{name}: a backbone config has the keys {', '.join(sorted(wanted))}; "
                        f"got {', '.join(sorted(config)) or 'none'}")
    return build(**config).eval()
