"""`clip` and `clip_text`: open_clip image and text embeddings (DSN's visual-language encoders).

`clip` embeds the image (the projected embedding, e.g. 512-d for ViT-B-32) or, with
`output=grid`, keeps the vision transformer's patch tokens (grid² x width, e.g. 49 x 768,
float16 like every grid). `clip_text` embeds title + description (truncated to the
model's context length, 77 tokens). Both share one model builder, and both ids start
with "clip".

Preprocessing is exactly open_clip's inference transform for the model and weights
(resize, crop, normalise), split in two: the geometric part runs in the DataLoader
workers and ships uint8, ToTensor + Normalize run on the device.

Weights: an open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...; downloaded and
cached by open_clip), `random` (seeded) or a PATH to a state dict, loaded with
open_clip's `load_checkpoint` (weights_only=True). OpenAI's own weights use QuickGELU: a
state dict of them goes with `--model ViT-B-32-quickgelu`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torchvision.transforms import CenterCrop, Compose, Normalize, Resize, ToTensor
from torchvision.transforms.v2 import functional as F

from extractors import register
from extractors._weights import download_failed, file_fingerprint, random_fingerprint, seeded, weights_file
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec
from pipeline.nn.device import images_to_device, prepare_model

OUTPUTS = ("embedding", "grid")
TEXT_BATCH = 256  # texts per encode_text call: bounds memory on a 512-post shard
TENSOR_STEPS = (Resize, CenterCrop)  # open_clip geometric steps that work on tensors as on PIL images
MODE_STEPS = ("MaybeConvertMode", "function")  # colour-mode steps: RGB already after decoding
# open_clip is imported where it is used: it costs seconds, and every `pipe` command
# imports the whole extractor registry.


@dataclass
class ClipTextConfig:
    model: str = "ViT-B-32"  # open_clip architecture (open_clip.list_models())
    weights: str = "openai"  # open_clip pretrained tag | random | PATH of a state dict
    seed: int = 0  # seed of the `random` weights


@dataclass
class ClipConfig(ClipTextConfig):
    output: str = "embedding"  # embedding: projected image vector; grid: patch tokens (grid² x width)


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """open_clip logs through the root logger; our own errors say what went wrong."""
    before = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(before)


class _Clip(Extractor):
    """What both towers share: model config, weights, building the model."""

    def __init__(self, config: ClipTextConfig) -> None:
        import open_clip

        super().__init__(config)
        self.model_cfg = open_clip.get_model_config(config.model)
        if self.model_cfg is None:
            raise PipeError(
                f"{self.name}: unknown open_clip model {config.model!r}; e.g. "
                f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT-B'))}"
            )
        self._weights_fp: str | None = None
        self.model: torch.nn.Module | None = None
        self.device = "cpu"

    def _tags(self) -> list[str]:
        import open_clip

        return open_clip.list_pretrained_tags_by_model(self.config.model)

    def weights_fingerprint(self) -> str:
        """open_clip:<model>:<tag>, random-<seed>, or the state dict file's sha256."""
        if self._weights_fp is None:
            w = self.config.weights
            if w == "random":
                self._weights_fp = random_fingerprint(self.config.seed)
            elif w in self._tags():
                self._weights_fp = f"open_clip:{self.config.model}:{w}"
            else:
                self._weights_fp = file_fingerprint(self._weights_path())
        return self._weights_fp

    def _weights_path(self):
        tags = ", ".join(self._tags()) or "none"
        return weights_file(self.name, self.config.weights, f"a pretrained tag of {self.config.model} ({tags})")

    def id_parts(self) -> list[str]:
        return [self.config.model]

    def _build(self) -> torch.nn.Module:
        import open_clip

        c = self.config
        plain = {"pretrained": None, "pretrained_image": False, "pretrained_text": False}
        with _quiet_logging():
            if c.weights == "random":
                with seeded(c.seed):
                    return open_clip.create_model(c.model, **plain)
            if c.weights in self._tags():
                try:
                    return open_clip.create_model(c.model, pretrained=c.weights)
                except Exception as e:  # no internet, no cached copy...
                    raise download_failed(self.name, f"open_clip {c.model} {c.weights!r}", e) from None
            path = self._weights_path()
            model = open_clip.create_model(c.model, **plain)  # not on meta: non-persistent buffers (masks)
            try:
                open_clip.load_checkpoint(model, str(path), weights_only=True)
            except Exception as e:
                raise PipeError(f"{self.name}: cannot load {path} into {c.model}: {type(e).__name__}: {e}") from None
            return model

    def load(self, device: str) -> None:
        self.device = device
        self.model = prepare_model(self._build(), device)  # channels_last on CUDA (the patch convolution)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers only preprocess; never ship the model to them.
        return {**self.__dict__, "model": None}

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise PipeError(f"{self.name}: call load(device) before extracting")
        return self.model


@register
class Clip(_Clip):
    name = "clip"
    modality = "image"
    Config = ClipConfig

    def __init__(self, config: ClipConfig) -> None:
        super().__init__(config)
        if config.output not in OUTPUTS:
            raise PipeError(f"clip: output must be one of {', '.join(OUTPUTS)}, got {config.output!r}")
        v = self.model_cfg["vision_cfg"]
        if config.output == "grid" and (v.get("timm_model_name") or not v.get("patch_size")):
            raise PipeError(f"clip: output=grid needs a vision transformer; {config.model} has none (use embedding)")
        self._geometric: Compose | None = None

    # -- identity -------------------------------------------------------------------
    def preprocess_cfg(self) -> dict[str, Any]:
        """open_clip's inference preprocessing for this model and weights, as create_model sets it."""
        import open_clip
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        tag = open_clip.get_pretrained_cfg(self.config.model, self.config.weights) if self.config.weights else {}
        cfg = merge_preprocess_dict(PreprocessCfg(), tag or {})
        size = self.model_cfg["vision_cfg"]["image_size"]
        cfg["size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return cfg

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
    def _transforms(self) -> tuple[Compose, Normalize]:
        """open_clip's transform cut at ToTensor: (geometric part, final Normalize)."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        full = image_transform_v2(PreprocessCfg(**self.preprocess_cfg()), is_train=False).transforms
        cut = next(i for i, t in enumerate(full) if isinstance(t, ToTensor))  # open_clip's MaybeToTensor
        if cut != len(full) - 2 or not isinstance(full[-1], Normalize):
            raise PipeError(f"clip: unexpected open_clip transform layout {full}")
        return Compose(full[:cut]), full[-1]

    @property
    def accepts_tensors(self) -> bool:
        """Whether preprocess takes decoded (..., 3, H, W) uint8 tensors (GPU decoding): open_clip's
        geometric steps are all resizes and crops, which torchvision applies to tensors alike."""
        steps = self._geometric_compose().transforms
        return all(isinstance(t, TENSOR_STEPS) or type(t).__name__ in MODE_STEPS for t in steps)

    def _geometric_compose(self) -> Compose:
        if self._geometric is None:  # built once per process (DataLoader workers included)
            self._geometric = self._transforms()[0]
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
        norm = self._transforms()[1]
        self._mean = torch.tensor(norm.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm.std, device=device).view(1, 3, 1, 1)
        if self.config.output == "grid":
            self.model.visual.output_tokens = True  # visual(x) -> (pooled, tokens)

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        model = self._require_model()
        with torch.inference_mode():
            x = images_to_device(batch, self.device).div_(255)
            x = (x - self._mean) / self._std  # (B, 3, H, W), as ToTensor + Normalize give
            if self.config.output == "grid":
                _, tokens = model.visual(x)  # (B, grid², width), e.g. (B, 49, 768)
                return tokens.to(torch.float16).cpu().numpy()
            return model.encode_image(x).float().cpu().numpy()  # (B, embed_dim)


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
