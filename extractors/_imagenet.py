"""What vgg16 and inception_v3 share: a torchvision backbone from `pipeline.nn`, square ImageNet inputs.

The network, its weights (`imagenet` | `random` | PATH) and its normalisation live in
`pipeline.nn`, where fine-tuning builds the same one; here it runs for inference, after
the resize that DataLoader workers do.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from extractors import build_network
from extractors.base import Extractor
from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Backbone, resize_square
from pipeline.nn.device import images_to_device, prepare_model
from pipeline.nn.imagenet import TorchvisionWeights


class ImageNetCNN(Extractor):
    modality = "image"
    accepts_tensors: ClassVar[bool] = True  # preprocess takes decoded (..., 3, H, W) uint8 tensors too (GPU decoding)
    weights_source: ClassVar[TorchvisionWeights]  # pipeline.nn's weights of the backbone

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._weights_fp: str | None = None
        self.model: Backbone | None = None
        self.device = "cpu"

    def weights_fingerprint(self) -> str:
        """The torchvision weights name, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            self._weights_fp = self.weights_source.fingerprint(self.config.weights, self.config.seed)
        return self._weights_fp

    def load(self, device: str, channels_last: bool | None = None) -> None:
        """The backbone as a store's manifest config rebuilds it, in eval mode on `device`."""
        if self.model is not None and self.device == device:
            return  # loaded once per process (reruns, dask tasks)
        self.model = prepare_model(build_network(self.name, config_to_dict(self.config)), device,
                                   channels_last=channels_last)
        self.device = device

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only preprocess; never ship the model to them.
        return {**self.__dict__, "model": None}

    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image (CPU path) -> (3, s, s) uint8; or a (..., 3, H, W) uint8 tensor (decoded on the GPU)
        -> (..., 3, s, s)."""
        return resize_square(image, self.config.image_size)

    def normalized(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) uint8 on any device -> float on the model's device, ImageNet mean/std."""
        if self.model is None:
            raise PipeError(f"{self.name}: call load(device) before forward")
        return self.model.normalize(images_to_device(batch, self.device).div_(255))  # (B, 3, s, s)
