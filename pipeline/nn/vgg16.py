"""VGG16 as a backbone: the pool5 region grid (UHAN, DualAtt, ...) or the fc7 vector.

pool5 keeps the spatial layout the attention heads attend over: at 448 px a 14x14 grid of
512-d regions, row-major (region r is grid row r // 14, column r % 14). fc7 is the 4096-d
output of the classifier's second ReLU. For pool5 a state dict of the `features.*`
tensors suffices; fc7 also needs `classifier.0.*` and `classifier.3.*`.
"""
from __future__ import annotations

import torch
from torchvision.models import VGG, VGG16_Weights
from torchvision.models import vgg16 as torchvision_vgg16

from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Backbone
from pipeline.nn.imagenet import TorchvisionWeights, imagenet_preprocessing

LAYERS = ("pool5", "fc7")
WEIGHTS = TorchvisionWeights("vgg16", "VGG16", VGG16_Weights.IMAGENET1K_V1)


def check(layer: str, image_size: int) -> None:
    if layer not in LAYERS:
        raise PipeError(f"vgg16: layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if image_size < 32 or image_size % 32:
        raise PipeError(f"vgg16: image_size must be a positive multiple of 32, got {image_size}")


class Vgg16(Backbone):
    """The convolutions (and for fc7 the classifier up to its second ReLU) of a torchvision VGG16."""

    def __init__(self, net: VGG, layer: str, image_size: int) -> None:
        super().__init__()
        check(layer, image_size)
        self.layer = layer
        self.features = net.features  # conv1_1 .. pool5
        if layer == "fc7":
            self.avgpool = net.avgpool
            self.classifier = net.classifier[:5]  # fc6, relu, dropout, fc7, relu (keys as torchvision's)
        self.preprocessing = imagenet_preprocessing(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, 512, s/32, s/32)
        if self.layer == "fc7":
            return self.classifier(torch.flatten(self.avgpool(f), 1))  # (B, 4096)
        b, c, h, w = f.shape
        return f.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, h*w, 512), regions row-major


def build(layer: str, image_size: int, weights: str, seed: int) -> Vgg16:
    # the whole VGG16 is built, so `random` draws the classifier too and its convolutions never change
    return WEIGHTS.build(lambda: Vgg16(torchvision_vgg16(weights=None), layer, image_size), weights, seed)
