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
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from extractors import register
from extractors._weights import (download_failed, file_fingerprint, random_fingerprint, read_state_dict, seeded,
                                 weights_file)
from extractors.base import Extractor
from pipeline import gpu
from pipeline.errors import PipeError
from pipeline.specs import FeatureSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
class Vgg16(Extractor):
    name = "vgg16"
    modality = "image"
    Config = Vgg16Config
    accepts_tensors: ClassVar[bool] = True  # preprocess takes decoded (..., 3, H, W) uint8 tensors too (GPU decoding)

    def __init__(self, config: Vgg16Config) -> None:
        super().__init__(config)
        if config.layer not in LAYERS:
            raise PipeError(f"vgg16: layer must be one of {', '.join(LAYERS)}, got {config.layer!r}")
        if config.image_size < 32 or config.image_size % 32:
            raise PipeError(f"vgg16: image_size must be a positive multiple of 32, got {config.image_size}")
        self._weights_fp: str | None = None
        self.model: nn.Module | None = None
        self.device = "cpu"

    # -- identity -------------------------------------------------------------------
    def weights_fingerprint(self) -> str:
        """The torchvision weights name, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            w = self.config.weights
            if w == "imagenet":
                self._weights_fp = f"torchvision:{VGG16_Weights.IMAGENET1K_V1}"
            elif w == "random":
                self._weights_fp = random_fingerprint(self.config.seed)
            else:
                self._weights_fp = file_fingerprint(weights_file(self.name, w, "imagenet"))
        return self._weights_fp

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
        model = self._build()
        if self.config.layer == "pool5":
            model = model.features  # conv1_1 .. pool5; the classifier is never used
        else:
            model.classifier = model.classifier[:5]  # fc6, relu, dropout, fc7, relu
        self.device = device
        # channels_last: measured faster on CPU at 224 and 448 px (and the GPU's layout)
        self.model = gpu.prepare_model(model, device, channels_last=True)
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def _build(self) -> nn.Module:
        w = self.config.weights
        if w == "random":
            with seeded(self.config.seed):
                return vgg16(weights=None)
        if w == "imagenet":
            try:
                state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # no internet, proxy, interrupted download...
                raise download_failed(self.name, "ImageNet", e) from None
            return self._from_state(state, "torchvision IMAGENET1K_V1")
        path = weights_file(self.name, w, "imagenet")
        return self._from_state(read_state_dict(self.name, path), str(path))

    def _from_state(self, state: dict[str, Any], what: str) -> nn.Module:
        """Load into a model built on the meta device: no time spent on a random init."""
        with torch.device("meta"):
            model = vgg16(weights=None)
        needed = model.state_dict().keys()
        if self.config.layer == "pool5":
            needed = [k for k in needed if k.startswith("features.")]
            state = {k: v for k, v in state.items() if k.startswith("features.")}
        missing = [k for k in needed if k not in state]
        if missing:
            raise PipeError(f"vgg16: {what} is not a VGG16 state dict: missing {missing[:4]} ({len(missing)} in all)")
        target = model.features if self.config.layer == "pool5" else model
        prefix = "features." if self.config.layer == "pool5" else ""
        try:
            target.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True, assign=True)
        except RuntimeError as e:
            raise PipeError(f"vgg16: {what} does not fit VGG16: {e}") from None
        return model

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only preprocess; never ship the model to them.
        return {**self.__dict__, "model": None}

    # -- running --------------------------------------------------------------------
    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image (CPU path) -> (3, s, s) uint8; or a (..., 3, H, W) uint8 tensor (decoded on the GPU)
        -> (..., 3, s, s)."""
        s = self.config.image_size
        image = F.resize(image, [s, s], interpolation=InterpolationMode.BILINEAR, antialias=True)
        # uint8: a quarter of float32's bytes between processes
        return image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        if self.model is None:
            raise PipeError("vgg16: call load(device) before forward")
        with torch.inference_mode():
            x = gpu.to_device(batch, self.device).div_(255)
            x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)  # (B, 3, s, s)
            if self.config.layer == "fc7":
                return self.model(x).float().cpu().numpy()  # (B, 4096)
            f = self.model(x)  # (B, 512, s/32, s/32)
            b, c, h, w = f.shape
            f = f.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, h*w, 512), regions row-major
            return f.to(torch.float16).cpu().numpy()

