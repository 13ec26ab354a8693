"""The hybrid CNN's input as a backbone: the stored image itself, pixels scaled to [0, 1].

The hybrid-CNN paper resizes every image to 64x64 and learns its own convolutions, so
there is nothing to load: `normalize` is uint8 / 255 alone (mean 0, std 1) and forward is
the identity. A head reading a `pixels` store applies the same scaling.
"""
from __future__ import annotations

import torch

from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Backbone, Preprocessing


def check(image_size: int) -> None:
    if image_size < 1:
        raise PipeError(f"pixels: image_size must be a positive number of pixels, got {image_size}")


class Pixels(Backbone):
    """forward((B, 3, s, s) pixels in [0, 1]) -> the same tensor; no weights."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        check(image_size)
        self.preprocessing = Preprocessing((image_size, image_size), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def build(image_size: int) -> Pixels:
    return Pixels(image_size)
