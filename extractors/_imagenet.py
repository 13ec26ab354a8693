"""What vgg16 and inception_v3 share: a torchvision CNN, its weights, square ImageNet inputs.

Weights: `imagenet` (the class's torchvision weights, downloaded and cached by torch.hub),
`random` (seeded) or a PATH to a state dict read with `weights_only=True`. File and
ImageNet weights load into a model built on the meta device, so no time goes on a random
init that would be overwritten.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from extractors._weights import (
    download_failed,
    file_fingerprint,
    random_fingerprint,
    read_state_dict,
    seeded,
    weights_file,
)
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.nn.device import images_to_device, prepare_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetCNN(Extractor):
    modality = "image"
    accepts_tensors: ClassVar[bool] = True  # preprocess takes decoded (..., 3, H, W) uint8 tensors too (GPU decoding)
    weights_enum: ClassVar[Any]  # torchvision weights member that `imagenet` loads
    label: ClassVar[str]  # architecture name in messages ("VGG16")

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._weights_fp: str | None = None
        self.model: nn.Module | None = None
        self.device = "cpu"

    @abstractmethod
    def architecture(self) -> nn.Module:
        """The untrained network (built under the seed for `random`, on meta otherwise)."""

    @abstractmethod
    def target(self, model: nn.Module) -> tuple[nn.Module, str]:
        """(submodule the state dict fills, key prefix of its tensors in a full state dict)."""

    def weights_fingerprint(self) -> str:
        """The torchvision weights name, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            w = self.config.weights
            if w == "imagenet":
                self._weights_fp = f"torchvision:{self.weights_enum}"
            elif w == "random":
                self._weights_fp = random_fingerprint(self.config.seed)
            else:
                self._weights_fp = file_fingerprint(weights_file(self.name, w, "imagenet"))
        return self._weights_fp

    def build(self) -> nn.Module:
        w = self.config.weights
        if w == "random":
            with seeded(self.config.seed):
                return self.architecture()
        if w == "imagenet":
            try:
                state = self.weights_enum.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # no internet, proxy, interrupted download...
                raise download_failed(self.name, "ImageNet", e) from None
            return self._from_state(state, f"torchvision {self.weights_enum.name}")
        path = weights_file(self.name, w, "imagenet")
        return self._from_state(read_state_dict(self.name, path), str(path))

    def _from_state(self, state: dict[str, Any], what: str) -> nn.Module:
        with torch.device("meta"):
            model = self.architecture()
        sub, prefix = self.target(model)
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        missing = [k for k in sub.state_dict() if k not in state]
        if missing:
            article = "an" if self.label[0] in "AEIOU" else "a"
            raise PipeError(f"{self.name}: {what} is not {article} {self.label} state dict: missing {missing[:4]} "
                            f"({len(missing)} in all)")
        extra = [k for k in state if k not in sub.state_dict()]
        state = {k: v for k, v in state.items() if k not in extra}  # e.g. classifier tensors a pooled vector never uses
        try:
            sub.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise PipeError(f"{self.name}: {what} does not fit {self.label}: {e}") from None
        return model

    def install(self, model: nn.Module, device: str, channels_last: bool | None = None) -> None:
        self.device = device
        self.model = prepare_model(model, device, channels_last=channels_last)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only preprocess; never ship the model to them.
        return {**self.__dict__, "model": None}

    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image (CPU path) -> (3, s, s) uint8; or a (..., 3, H, W) uint8 tensor (decoded on the GPU)
        -> (..., 3, s, s)."""
        s = self.config.image_size
        image = F.resize(image, [s, s], interpolation=InterpolationMode.BILINEAR, antialias=True)
        # uint8: a quarter of float32's bytes between processes
        return image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)

    def normalized(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) uint8 on any device -> float on the model's device, ImageNet mean/std."""
        if self.model is None:
            raise PipeError(f"{self.name}: call load(device) before forward")
        x = images_to_device(batch, self.device).div_(255)
        return (x - self._mean) / self._std  # (B, 3, s, s)
