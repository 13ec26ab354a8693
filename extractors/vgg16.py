"""`vgg16`: VGG16 pool5 region grids (UHAN, DualAtt, ...) or the fc7 vector.

pool5 keeps the spatial layout the attention heads attend over: at 448 px a 14x14 grid
of 512-d regions, row-major (region r is grid row r // 14, column r % 14), stored as
float16 (half the bytes; the heads train in float32 anyway). fc7 is the 4096-d output of
the classifier's second ReLU, stored as float32.

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
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from extractors import register
from extractors._imagenet import ImageNetCNN
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec

# Part of the id: a change here changes every output, so it must change the hash too.
PREPROCESSING = "resize-square-bilinear-antialias/uint8/imagenet-mean-std"
LAYERS = ("pool5", "fc7")


@dataclass
class Vgg16Config:
    layer: str = "pool5"  # pool5: (size/32)^2 x 512 region grid, float16; fc7: 4096-d vector, float32
    image_size: int = 448  # side of the square input in pixels (aspect not kept); a multiple of 32
    weights: str = "imagenet"  # imagenet | random | PATH of a state dict (torch.save(model.state_dict()))
    seed: int = 0  # seed of the `random` weights


@register
class Vgg16(ImageNetCNN):
    name = "vgg16"
    Config = Vgg16Config
    weights_enum = VGG16_Weights.IMAGENET1K_V1
    label = "VGG16"

    def __init__(self, config: Vgg16Config) -> None:
        super().__init__(config)
        if config.layer not in LAYERS:
            raise PipeError(f"vgg16: layer must be one of {', '.join(LAYERS)}, got {config.layer!r}")
        if config.image_size < 32 or config.image_size % 32:
            raise PipeError(f"vgg16: image_size must be a positive multiple of 32, got {config.image_size}")

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

    # -- model ----------------------------------------------------------------------
    def load(self, device: str) -> None:
        if self.model is not None and self.device == device:
            return  # loaded once per process (reruns, dask tasks)
        model = self.build()
        if self.config.layer == "pool5":
            model = model.features  # conv1_1 .. pool5; the classifier is never used
        else:
            model.classifier = model.classifier[:5]  # fc6, relu, dropout, fc7, relu
        # channels_last: measured faster on CPU at 224 and 448 px (and the GPU's layout)
        self.install(model, device, channels_last=True)

    def architecture(self) -> nn.Module:
        return vgg16(weights=None)

    def target(self, model: nn.Module) -> tuple[nn.Module, str]:
        # pool5 needs only the convolutions: a state dict of the `features.*` tensors suffices
        return (model.features, "features.") if self.config.layer == "pool5" else (model, "")

    # -- running --------------------------------------------------------------------
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = self.normalized(batch).contiguous(memory_format=torch.channels_last)  # (B, 3, s, s)
            if self.config.layer == "fc7":
                return self.model(x).float().cpu().numpy()  # (B, 4096)
            f = self.model(x)  # (B, 512, s/32, s/32)
            b, c, h, w = f.shape
            f = f.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, h*w, 512), regions row-major
            return f.to(torch.float16).cpu().numpy()

