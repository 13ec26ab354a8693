"""Inception-v3 as a backbone: the 2048-d average-pool vector (the hybrid-CNN paper's Inception-SVR).

Torchvision's network with the classifier replaced by the identity and no auxiliary
classifier; `transform_input` (the [-1, 1] scaling the Google weights were trained with)
stays on for every weights source alike, so a state dict saved from torchvision's
pretrained model reproduces it exactly. Auxiliary-classifier and fc tensors in a state
dict are ignored.
"""
from __future__ import annotations

from torch import nn
from torchvision.models import Inception_V3_Weights
from torchvision.models.inception import Inception3

from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Backbone
from pipeline.nn.imagenet import TorchvisionWeights, imagenet_preprocessing

DIM = 2048
WEIGHTS = TorchvisionWeights("inception_v3", "Inception-v3", Inception_V3_Weights.IMAGENET1K_V1)


def check(image_size: int) -> None:
    if image_size < 75:
        raise PipeError(f"inception_v3: image_size must be at least 75 pixels, got {image_size}")


class InceptionV3(Inception3, Backbone):
    """forward -> (B, 2048), after the average pool and dropout (active in train mode only).

    PyTorch's default init, not Inception's truncated normal: 6x faster to build, and its
    random-weight activations stay near 1 where the truncated normal's reach 1e11.
    """

    def __init__(self, image_size: int) -> None:
        check(image_size)
        super().__init__(aux_logits=False, transform_input=True, init_weights=False)
        self.fc = nn.Identity()
        self.preprocessing = imagenet_preprocessing(image_size)


def build(image_size: int, weights: str, seed: int) -> InceptionV3:
    return WEIGHTS.build(lambda: InceptionV3(image_size), weights, seed)
