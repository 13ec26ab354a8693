"""`inception_v3`: the 2048-d average-pool vector of Inception-v3 (hybrid-CNN paper baseline).

The paper's Inception-SVR reads "the output of the third pooling layer, a vector of
2,048": torchvision's Inception-v3 up to its global average pool (the classifier is
replaced by the identity), at 299 px, in eval mode. Input: the whole image resized to a
square, ImageNet mean/std, then torchvision's `transform_input` (the [-1, 1] scaling the
Google weights were trained with), for every weights source alike, so a state dict
saved from torchvision's pretrained model reproduces it exactly.

Weights: `imagenet` (torchvision's Inception_V3_Weights.IMAGENET1K_V1 via torch.hub),
`random` (seeded) or a PATH to a state dict; auxiliary-classifier and fc tensors in it
are ignored (neither touches the pooled vector).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.models import Inception_V3_Weights
from torchvision.models.inception import Inception3
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
PREPROCESSING = "resize-square-bilinear-antialias/uint8/imagenet-mean-std/transform_input"
IGNORED = ("AuxLogits.", "fc.")  # state-dict tensors the pooled vector never uses
DIM = 2048


@dataclass
class InceptionV3Config:
    image_size: int = 299  # side of the square input in pixels (aspect not kept); at least 75
    weights: str = "imagenet"  # imagenet | random | PATH of a state dict (torch.save(model.state_dict()))
    seed: int = 0  # seed of the `random` weights


def _architecture() -> Inception3:
    """torchvision's pretrained layout without the auxiliary classifier.

    PyTorch's default init, not Inception's truncated normal: 6x faster to build, and its
    random-weight activations stay near 1 where the truncated normal's reach 1e11.
    """
    return Inception3(aux_logits=False, transform_input=True, init_weights=False)


@register
class InceptionV3(Extractor):
    name = "inception_v3"
    modality = "image"
    Config = InceptionV3Config
    accepts_tensors: ClassVar[bool] = True  # preprocess takes decoded (..., 3, H, W) uint8 tensors too (GPU decoding)

    def __init__(self, config: InceptionV3Config) -> None:
        super().__init__(config)
        if config.image_size < 75:
            raise PipeError(f"inception_v3: image_size must be at least 75 pixels, got {config.image_size}")
        self._weights_fp: str | None = None
        self.model: nn.Module | None = None
        self.device = "cpu"

    # -- identity -------------------------------------------------------------------
    def weights_fingerprint(self) -> str:
        """The torchvision weights name, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            w = self.config.weights
            if w == "imagenet":
                self._weights_fp = f"torchvision:{Inception_V3_Weights.IMAGENET1K_V1}"
            elif w == "random":
                self._weights_fp = random_fingerprint(self.config.seed)
            else:
                self._weights_fp = file_fingerprint(weights_file(self.name, w, "imagenet"))
        return self._weights_fp

    def identity(self) -> dict[str, Any]:
        return {"backbone": "inception_v3", "layer": "avgpool", "image_size": self.config.image_size,
                "preprocessing": PREPROCESSING, "weights": self.weights_fingerprint()}

    def id_parts(self) -> list[str]:
        return [str(self.config.image_size)]

    def spec(self) -> FeatureSpec:
        return FeatureSpec("vector", (DIM,), "float32")

    # -- model ----------------------------------------------------------------------
    def load(self, device: str) -> None:
        model = self._build()
        model.fc = nn.Identity()  # (B, 2048) after the average pool and (eval: inactive) dropout
        self.device = device
        self.model = gpu.prepare_model(model, device)  # channels_last on CUDA
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def _build(self) -> Inception3:
        w = self.config.weights
        if w == "random":
            with seeded(self.config.seed):
                return _architecture()
        if w == "imagenet":
            try:
                state = Inception_V3_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # no internet, proxy, interrupted download...
                raise download_failed(self.name, "ImageNet", e) from None
            return self._from_state(state, "torchvision IMAGENET1K_V1")
        path = weights_file(self.name, w, "imagenet")
        return self._from_state(read_state_dict(self.name, path), str(path))

    def _from_state(self, state: dict[str, Any], what: str) -> Inception3:
        """Load into a model built on the meta device: no time spent on a random init."""
        with torch.device("meta"):
            model = _architecture()
        state = {k: v for k, v in state.items() if not k.startswith(IGNORED)}
        model.fc = nn.Identity()
        missing = [k for k in model.state_dict() if k not in state]
        if missing:
            raise PipeError(
                f"inception_v3: {what} is not an Inception-v3 state dict: missing {missing[:4]} ({len(missing)} in all)"
            )
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            raise PipeError(f"inception_v3: {what} does not fit Inception-v3: {e}") from None
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
            raise PipeError("inception_v3: call load(device) before forward")
        with torch.inference_mode():
            x = gpu.to_device(batch, self.device).div_(255)
            x = (x - self._mean) / self._std  # (B, 3, s, s)
            return self.model(x).float().cpu().numpy()  # (B, 2048)
