"""Torchvision CNNs (VGG16, Inception-v3): their weights and ImageNet preprocessing.

Weights: `imagenet` (the network's torchvision weights, downloaded and cached by
torch.hub), `random` (seeded) or a PATH to a state dict read with `weights_only=True`.
File and ImageNet weights load into a network built on the meta device, so no time goes
on a random init that would be overwritten. Backbones keep torchvision's state dict keys,
so a state dict only needs the tensors the backbone uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Preprocessing
from pipeline.nn.weights import (
    download_failed,
    file_fingerprint,
    random_fingerprint,
    read_state_dict,
    require_host,
    seeded,
    weights_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_preprocessing(size: int) -> Preprocessing:
    """A square input of `size` pixels, ImageNet mean/std."""
    return Preprocessing((size, size), IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class TorchvisionWeights:
    """Where a torchvision network's weights come from, and what goes into an extractor id for them."""

    name: str  # backbone name in messages ("vgg16")
    label: str  # architecture in messages ("VGG16")
    pretrained: Any  # torchvision weights member that `imagenet` loads

    def fingerprint(self, weights: str, seed: int) -> str:
        """The torchvision weights name, random-<seed>, or the state dict file's sha256."""
        if weights == "imagenet":
            return f"torchvision:{self.pretrained}"
        if weights == "random":
            return random_fingerprint(seed)
        return file_fingerprint(weights_file(self.name, weights, "imagenet"))

    def build(self, architecture: Callable[[], nn.Module], weights: str, seed: int) -> nn.Module:
        """`architecture()` with its weights. `random` builds it under the seed (torchvision's init
        order, so the numbers never change); otherwise on meta, then filled from the state dict."""
        if weights == "random":
            with seeded(seed):
                return architecture()
        if weights == "imagenet":
            self.reachable()
            try:
                state = self.pretrained.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # no internet, proxy, interrupted download...
                raise download_failed(self.name, "ImageNet", e) from None
            return self._filled(architecture, state, f"torchvision {self.pretrained.name}")
        path = weights_file(self.name, weights, "imagenet")
        return self._filled(architecture, read_state_dict(self.name, path), str(path))

    def reachable(self) -> None:
        """Offline and not in torch.hub's cache: refuse before torchvision tries to download."""
        import os

        url = self.pretrained.url
        if not os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))):
            require_host(self.name, "ImageNet", url)

    def _filled(self, architecture: Callable[[], nn.Module], state: dict[str, Any], what: str) -> nn.Module:
        with torch.device("meta"):
            model = architecture()
        keys = model.state_dict()
        missing = [k for k in keys if k not in state]
        if missing:
            article = "an" if self.label[0] in "AEIOU" else "a"
            raise PipeError(f"{self.name}: {what} is not {article} {self.label} state dict: missing {missing[:4]} "
                            f"({len(missing)} in all)")
        state = {k: v for k, v in state.items() if k in keys}  # e.g. classifier tensors a pooled vector never uses
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise PipeError(f"{self.name}: {what} does not fit {self.label}: {e}") from None
        return model
