"""What every backbone is: an nn.Module from normalized images to the features a store holds.

Extraction wraps it in `inference_mode`; fine-tuning puts it in front of a head and trains
through it, so nothing here turns gradients off. Its input is (B, 3, H, W) floats made by
`normalize` from pixels in [0, 1] (uint8 / 255) at `preprocessing.size`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class Preprocessing:
    """The input a backbone was trained on: (height, width) and per-channel mean/std of [0, 1] pixels."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # (device, dtype) -> (mean, std) as (1, 3, 1, 1) tensors: made once, not copied to the GPU every batch
    _constants: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, compare=False, repr=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, 3, H, W) network input."""
        key = (x.device, x.dtype)
        if key not in self._constants:
            with torch.inference_mode(False):  # plain tensors: a training forward may save them for backward
                self._constants[key] = tuple(
                    torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) for v in (self.mean, self.std))
        mean, std = self._constants[key]
        return (x - mean) / std


class Backbone(nn.Module):
    """forward((B, 3, H, W) normalized floats) -> the features of one store row each, differentiable.

    No __init__ of its own, so a torchvision network can be subclassed with it as a mixin:
    state dict keys stay torchvision's, so a saved vgg16 or inception_v3 backbone (fine-tuned,
    say) is a `--weights PATH` for its extractor.
    """

    preprocessing: Preprocessing  # set by each subclass's constructor

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocessing.normalize(x)


def resize_square(image: Any, size: int) -> torch.Tensor:
    """PIL image -> (3, size, size) uint8; or a (..., 3, H, W) uint8 tensor -> (..., 3, size, size).

    The whole image, aspect not kept, bilinear with antialiasing (as PIL resizes)."""
    image = F.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    # uint8: a quarter of float32's bytes between DataLoader processes
    return image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)
