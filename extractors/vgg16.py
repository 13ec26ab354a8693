"""`vgg16`: VGG16 pool5 region grids (UHAN, DualAtt, ...) or the fc7 vector.

pool5 keeps the spatial layout the attention heads attend over: at 448 px a 14x14 grid
of 512-d regions, row-major (region r is grid row r // 14, column r % 14), stored as
float16 (half the bytes; the heads train in float32 anyway). fc7 is the 4096-d output of
the classifier's second ReLU, stored as float32. The network is `pipeline.nn.vgg16`.

Weights: `imagenet` (torchvision's VGG16_Weights.IMAGENET1K_V1, downloaded and cached by
torch.hub), `random` (seeded, deterministic: for tests and offline demos) or a PATH to a
state dict saved with `torch.save(model.state_dict())`, read with `weights_only=True` so
the file cannot run code. For pool5 a state dict of the `features.*` tensors suffices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from extractors import register
from extractors._imagenet import ImageNetCNN
from pipeline.core.specs import FeatureSpec
from pipeline.nn import vgg16 as backbone

# Part of the id: a change here changes every output, so it must change the hash too.
PREPROCESSING = "resize-square-bilinear-antialias/uint8/imagenet-mean-std"


@dataclass
class Vgg16Config:
    layer: str = "pool5"  # pool5: (size/32)^2 x 512 region grid, float16; fc7: 4096-d vector, float32
    image_size: int = 448  # side of the square input in pixels (aspect not kept); a multiple of 32
    weights: str = "imagenet"  # imagenet | random | PATH of a state dict (torch.save(model.state_dict()))
    seed: int = 0  # seed of the `random` weights


@register
class Vgg16(ImageNetCNN):
    name = "vgg16"
    network = staticmethod(backbone.build)
    trainable = True
    Config = Vgg16Config
    weights_source = backbone.WEIGHTS

    def __init__(self, config: Vgg16Config) -> None:
        super().__init__(config)
        backbone.check(config.layer, config.image_size)

    # -- identity -------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        c = self.config
        return {"backbone": "vgg16", "layer": c.layer, "image_size": c.image_size,
                "preprocessing": PREPROCESSING, "weights": self.weights_fingerprint()}

    def id_parts(self) -> list[str]:
        return [self.config.layer, str(self.config.image_size)]

    def spec(self) -> FeatureSpec:
        if self.config.layer == "fc7":
            return FeatureSpec("vector", (4096,), "float32")
        side = self.config.image_size // 32
        return FeatureSpec("grid", (side * side, 512), "float16")

    # -- running --------------------------------------------------------------------
    def load(self, device: str) -> None:
        # channels_last: measured faster on CPU at 224 and 448 px (and the GPU's layout)
        super().load(device, channels_last=True)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = self.normalized(batch).contiguous(memory_format=torch.channels_last)  # (B, 3, s, s)
            f = self.model(x)  # fc7: (B, 4096); pool5: (B, (s/32)², 512), regions row-major
            return f.to(torch.float32 if self.config.layer == "fc7" else torch.float16).cpu().numpy()
