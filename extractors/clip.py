"""`clip` and `clip_text`: open_clip image and text embeddings (DSN's visual-language encoders).

`clip` embeds the image (the projected embedding, e.g. 512-d for ViT-B-32) or, with
`output=grid`, keeps the vision transformer's patch tokens (grid² x width, e.g. 49 x 768,
float16 like every grid). `clip_text` embeds title + description (truncated to the
model's context length, 77 tokens). Both build the model with `pipeline.nn.clip` (which
documents the weights: a pretrained tag, `random` or PATH), and both ids start with "clip".

Preprocessing is exactly open_clip's inference transform for the model and weights
(resize, crop, normalise), split in two: the geometric part runs in the DataLoader
workers and ships uint8, ToTensor + Normalize run on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import CenterCrop, Compose, Resize
from torchvision.transforms.v2 import functional as F

from extractors import register
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec
from pipeline.nn import clip as nn_clip
from pipeline.nn.device import images_to_device, prepare_model

TEXT_BATCH = 256  # texts per encode_text call: bounds memory on a 512-post shard
TENSOR_STEPS = (Resize, CenterCrop)  # open_clip geometric steps that work on tensors as on PIL images
MODE_STEPS = ("MaybeConvertMode", "function")  # colour-mode steps: RGB already after decoding


@dataclass
class ClipTextConfig:
    model: str = "ViT-B-32"  # open_clip architecture (open_clip.list_models())
    weights: str = "openai"  # open_clip pretrained tag | random | PATH of a state dict
    seed: int = 0  # seed of the `random` weights


@dataclass
class ClipConfig(ClipTextConfig):
    output: str = "embedding"  # embedding: projected image vector; grid: patch tokens (grid² x width)


class _Clip(Extractor):
    """What both towers share: model config, weights, building the model."""

    def __init__(self, config: ClipTextConfig) -> None:
        super().__init__(config)
        self.model_cfg = nn_clip.model_config(self.name, config.model)
        self._weights_fp: str | None = None
        self.model: torch.nn.Module | None = None  # the whole open_clip model
        self.device = "cpu"

    def weights_fingerprint(self) -> str:
        """open_clip:<model>:<tag>, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            c = self.config
            self._weights_fp = nn_clip.fingerprint(self.name, c.model, c.weights, c.seed)
        return self._weights_fp

    def id_parts(self) -> list[str]:
        return [self.config.model]

    def load(self, device: str) -> None:
        c = self.config
        self.device = device
        # channels_last on CUDA (the patch convolution)
        self.model = prepare_model(nn_clip.build_model(self.name, c.model, c.weights, c.seed), device)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only preprocess; never ship the model (or the backbone around it) to them.
        return {k: None if isinstance(v, torch.nn.Module) else v for k, v in self.__dict__.items()}

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise PipeError(f"{self.name}: call load(device) before extracting")
        return self.model


@register
class Clip(_Clip):
    name = "clip"
    network = staticmethod(nn_clip.build)
    trainable = True
    modality = "image"
    Config = ClipConfig

    def __init__(self, config: ClipConfig) -> None:
        super().__init__(config)
        nn_clip.check_output(config.model, config.output)
        self._geometric: Compose | None = None
        self.backbone: nn_clip.ClipImage | None = None  # the image tower of `model`

    # -- identity -------------------------------------------------------------------
    def preprocess_cfg(self) -> dict[str, Any]:
        """open_clip's inference preprocessing for this model and weights, as create_model sets it."""
        return nn_clip.preprocess_cfg(self.config.model, self.config.weights)

    def identity(self) -> dict[str, Any]:
        c = self.config
        return {"backbone": "clip", "tower": "image", "model": c.model, "output": c.output,
                "preprocessing": self.preprocess_cfg(), "weights": self.weights_fingerprint()}

    def id_parts(self) -> list[str]:
        return [*super().id_parts(), *(["grid"] if self.config.output == "grid" else [])]

    def spec(self) -> FeatureSpec:
        if self.config.output == "embedding":
            return FeatureSpec("vector", (self.model_cfg["embed_dim"],), "float32")
        v = self.model_cfg["vision_cfg"]
        h, w = self.preprocess_cfg()["size"]
        return FeatureSpec("grid", ((h // v["patch_size"]) * (w // v["patch_size"]), v["width"]), "float16")

    # -- running --------------------------------------------------------------------
    @property
    def accepts_tensors(self) -> bool:
        """Whether preprocess takes decoded (..., 3, H, W) uint8 tensors (GPU decoding): open_clip's
        geometric steps are all resizes and crops, which torchvision applies to tensors alike."""
        steps = self._geometric_compose().transforms
        return all(isinstance(t, TENSOR_STEPS) or type(t).__name__ in MODE_STEPS for t in steps)

    def _geometric_compose(self) -> Compose:
        if self._geometric is None:  # built once per process (DataLoader workers included)
            self._geometric = nn_clip.transforms(self.preprocess_cfg())[0]
        return self._geometric

    def preprocess(self, image: Any) -> torch.Tensor:
        """PIL image (CPU path) -> (3, H, W) uint8; or a (..., 3, H', W') uint8 tensor (decoded on the GPU).

        On tensors the colour-mode step is skipped (decoding gave RGB already); torchvision's
        antialiased tensor bicubic follows PIL's to within a few grey levels (rounding)."""
        if isinstance(image, torch.Tensor):
            for t in self._geometric_compose().transforms:
                if isinstance(t, TENSOR_STEPS):
                    image = t(image)
            return image
        return F.pil_to_tensor(self._geometric_compose()(image))  # (3, H, W) uint8

    def load(self, device: str) -> None:
        super().load(device)
        c = self.config
        self.backbone = nn_clip.image_backbone(self.model, c.model, c.weights, c.output).eval()

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        self._require_model()
        with torch.inference_mode():
            x = self.backbone.normalize(images_to_device(batch, self.device).div_(255))  # (B, 3, H, W)
            f = self.backbone(x)  # embedding: (B, embed_dim); grid: (B, grid², width)
            return f.to(torch.float16 if self.config.output == "grid" else torch.float32).cpu().numpy()


@register
class ClipText(_Clip):
    name = "clip_text"
    modality = "text"
    Config = ClipTextConfig

    def identity(self) -> dict[str, Any]:
        c = self.config
        return {"backbone": "clip", "tower": "text", "model": c.model, "weights": self.weights_fingerprint()}

    def spec(self) -> FeatureSpec:
        return FeatureSpec("vector", (self.model_cfg["embed_dim"],), "float32")

    def load(self, device: str) -> None:
        import open_clip

        super().load(device)
        try:
            self._tokenizer = open_clip.get_tokenizer(self.config.model)
        except Exception as e:
            raise PipeError(f"clip_text: cannot load the {self.config.model} tokenizer: {type(e).__name__}: {e}") from None

    def transform(self, texts: list[str]) -> np.ndarray:
        model = self._require_model()
        out = [np.empty((0, self.spec().shape[0]), np.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), TEXT_BATCH):
                tokens = self._tokenizer([t or "" for t in texts[i : i + TEXT_BATCH]])  # (b, 77), truncated
                out.append(model.encode_text(tokens.to(self.device)).float().cpu().numpy())  # (b, embed_dim)
        return np.concatenate(out)  # (B, embed_dim)
