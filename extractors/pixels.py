"""`pixels`: small raw RGB images (uint8, 3 x 64 x 64) for the end-to-end hybrid CNN.

The hybrid-CNN paper resizes every image to 64x64 and learns its own convolutions, so
the "feature" is the resized image itself; the head scales it as `pipeline.nn.pixels` says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from extractors import register
from extractors.base import Extractor
from pipeline.core.specs import FeatureSpec
from pipeline.nn import pixels as backbone
from pipeline.nn.backbone import resize_square


@dataclass
class PixelsConfig:
    image_size: int = 64  # side of the square image; the whole image is resized (aspect not kept)


@register
class Pixels(Extractor):
    name = "pixels"
    network = staticmethod(backbone.build)
    modality = "image"
    Config = PixelsConfig

    def __init__(self, config: PixelsConfig) -> None:
        super().__init__(config)
        backbone.check(config.image_size)

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "resize": "bilinear-antialias"}

    def id_parts(self) -> list[str]:
        return [str(self.config.image_size)]

    def spec(self) -> FeatureSpec:
        s = self.config.image_size
        return FeatureSpec("pixels", (3, s, s), "uint8")

    def preprocess(self, image: Any) -> torch.Tensor:
        return resize_square(image, self.config.image_size)  # (3, s, s) uint8

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        return batch.to("cpu", torch.uint8).numpy()  # (B, 3, s, s)
