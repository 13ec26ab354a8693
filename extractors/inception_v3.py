"""`inception_v3`: the 2048-d average-pool vector of Inception-v3 (hybrid-CNN paper baseline).

The paper's Inception-SVR reads "the output of the third pooling layer, a vector of
2,048": torchvision's Inception-v3 up to its global average pool, at 299 px, in eval
mode (the network is `pipeline.nn.inception`). Input: the whole image resized to a
square, ImageNet mean/std, then torchvision's `transform_input` (the [-1, 1] scaling the
Google weights were trained with), for every weights source alike, so a state dict
saved from torchvision's pretrained model reproduces it exactly.

Weights: `imagenet` (torchvision's Inception_V3_Weights.IMAGENET1K_V1 via torch.hub),
`random` (seeded) or a PATH to a state dict; auxiliary-classifier and fc tensors in it
are ignored (neither touches the pooled vector).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from extractors import register
from extractors._imagenet import ImageNetCNN
from pipeline.core.specs import FeatureSpec
from pipeline.nn import inception as backbone

# Part of the id: a change here changes every output, so it must change the hash too.
PREPROCESSING = "resize-square-bilinear-antialias/uint8/imagenet-mean-std/transform_input"


@dataclass
class InceptionV3Config:
    image_size: int = 299  # side of the square input in pixels (aspect not kept); at least 75
    weights: str = "imagenet"  # imagenet | random | PATH of a state dict (torch.save(model.state_dict()))
    seed: int = 0  # seed of the `random` weights


@register
class InceptionV3(ImageNetCNN):
    name = "inception_v3"
    network = staticmethod(backbone.build)
    trainable = True
    Config = InceptionV3Config
    weights_source = backbone.WEIGHTS

    def __init__(self, config: InceptionV3Config) -> None:
        super().__init__(config)
        backbone.check(config.image_size)

    # -- identity -------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {"backbone": "inception_v3", "layer": "avgpool", "image_size": self.config.image_size,
                "preprocessing": PREPROCESSING, "weights": self.weights_fingerprint()}

    def id_parts(self) -> list[str]:
        return [str(self.config.image_size)]

    def spec(self) -> FeatureSpec:
        return FeatureSpec("vector", (backbone.DIM,), "float32")

    # -- running --------------------------------------------------------------------
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = self.normalized(batch)  # (B, 3, s, s); channels_last on CUDA
            return self.model(x).float().cpu().numpy()  # (B, 2048)
