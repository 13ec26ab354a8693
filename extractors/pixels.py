"""`pixels`: small raw RGB images (uint8, 3 x 64 x 64) for the end-to-end hybrid CNN.

The hybrid-CNN paper resizes every image to 64x64 and learns its own convolutions, so
the "feature" is the resized image itself; the head normalises it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from extractors import register
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec


@dataclass
class PixelsConfig:
    image_size: int = 64  # side of the square image; the whole image is resized (aspect not kept)


@register
class Pixels(Extractor):
    name = "pixels"
    modality = "image"
    Config = PixelsConfig

    def __init__(self, config: PixelsConfig) -> None:
        super().__init__(config)
        if config.image_size < 1:
            raise PipeError(f"pixels: image_size must be a positive number of pixels, got {config.image_size}")

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "resize": "bilinear-antialias"}

    def id_parts(self) -> list[str]:
        return [str(self.config.image_size)]

    def spec(self) -> FeatureSpec:
        s = self.config.image_size
        return FeatureSpec("pixels", (3, s, s), "uint8")

    def preprocess(self, image: Any) -> torch.Tensor:
        s = self.config.image_size
        image = F.resize(image, [s, s], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.pil_to_tensor(image)  # (3, s, s) uint8

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        return batch.to("cpu", torch.uint8).numpy()  # (B, 3, s, s)
