"""open_clip CLIP: the model from a pretrained tag, `random` or a state dict; its preprocessing;
its image tower as a backbone (the projected embedding, or a ViT's patch tokens).

Weights: an open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...; downloaded and
cached by open_clip), `random` (seeded) or a PATH to a state dict of the whole model,
loaded with open_clip's `load_checkpoint` (weights_only=True). OpenAI's own weights use
QuickGELU: a state dict of them goes with the `ViT-B-32-quickgelu` model.

Preprocessing is exactly open_clip's inference transform for the model and weights
(resize, crop, normalise); `transforms` cuts it in two so the geometric part can run in
DataLoader workers on uint8 and the normalisation on the device.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torchvision.transforms import Compose, Normalize, ToTensor

from pipeline.core.errors import PipeError
from pipeline.nn.backbone import Backbone, Preprocessing
from pipeline.nn.weights import download_failed, file_fingerprint, random_fingerprint, require_host, seeded, weights_file

OUTPUTS = ("embedding", "grid")
# open_clip is imported where it is used: it costs seconds, and every `pipe` command
# imports the whole extractor registry.


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """open_clip logs through the root logger; our own errors say what went wrong."""
    before = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(before)


def model_config(name: str, model: str) -> dict[str, Any]:
    """open_clip's config of `model` (embed_dim, vision_cfg, text_cfg); `name` is who asks, in messages."""
    import open_clip

    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise PipeError(
            f"{name}: unknown open_clip model {model!r}; e.g. "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith('ViT-B'))}"
        )
    return cfg


def check_output(model: str, output: str) -> None:
    if output not in OUTPUTS:
        raise PipeError(f"clip: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    v = model_config("clip", model)["vision_cfg"]
    if output == "grid" and (v.get("timm_model_name") or not v.get("patch_size")):
        raise PipeError(f"clip: output=grid needs a vision transformer; {model} has none (use embedding)")


def pretrained_tags(model: str) -> list[str]:
    import open_clip

    return open_clip.list_pretrained_tags_by_model(model)


def weights_path(name: str, model: str, weights: str) -> Path:
    tags = ", ".join(pretrained_tags(model)) or "none"
    return weights_file(name, weights, f"a pretrained tag of {model} ({tags})")


def fingerprint(name: str, model: str, weights: str, seed: int) -> str:
    """open_clip:<model>:<tag>, random-<seed>, or the state dict file's sha256."""
    if weights == "random":
        return random_fingerprint(seed)
    if weights in pretrained_tags(model):
        return f"open_clip:{model}:{weights}"
    return file_fingerprint(weights_path(name, model, weights))


def reachable(name: str, model: str, weights: str) -> None:
    """Offline with no cached copy of the tag's weights: refuse before open_clip tries to download
    (it prefers the Hugging Face hub, else the tag's URL)."""
    import os

    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, weights) or {}
    if cfg.get("file") or os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # a local file, or the hub answers from its cache alone (and fails fast without one)
    if cfg.get("hf_hub"):
        from huggingface_hub.constants import HF_HUB_CACHE

        repo = os.path.split(cfg["hf_hub"])[0]  # "org/model/file" or "org/model/", as open_clip splits it
        if not os.path.isdir(os.path.join(HF_HUB_CACHE, "models--" + repo.replace("/", "--"))):
            require_host(name, f"open_clip {model} {weights!r}", "huggingface.co")
    elif cfg.get("url") and not os.path.exists(os.path.expanduser(f"~/.cache/clip/{os.path.basename(cfg['url'])}")):
        require_host(name, f"open_clip {model} {weights!r}", cfg["url"])


def build_model(name: str, model: str, weights: str, seed: int) -> nn.Module:
    """The whole open_clip model (both towers), with its weights."""
    import open_clip

    plain = {"pretrained": None, "pretrained_image": False, "pretrained_text": False}
    with _quiet_logging():
        if weights == "random":
            with seeded(seed):
                return open_clip.create_model(model, **plain)
        if weights in pretrained_tags(model):
            reachable(name, model, weights)
            try:
                return open_clip.create_model(model, pretrained=weights)
            except Exception as e:  # no internet, no cached copy...
                raise download_failed(name, f"open_clip {model} {weights!r}", e) from None
        path = weights_path(name, model, weights)
        net = open_clip.create_model(model, **plain)  # not on meta: non-persistent buffers (masks)
        try:
            open_clip.load_checkpoint(net, str(path), weights_only=True)
        except Exception as e:
            raise PipeError(f"{name}: cannot load {path} into {model}: {type(e).__name__}: {e}") from None
        return net


def preprocess_cfg(model: str, weights: str) -> dict[str, Any]:
    """open_clip's inference preprocessing for this model and weights, as create_model sets it."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    tag = open_clip.get_pretrained_cfg(model, weights) if weights else {}
    cfg = merge_preprocess_dict(PreprocessCfg(), tag or {})
    size = model_config("clip", model)["vision_cfg"]["image_size"]
    cfg["size"] = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return cfg


def transforms(cfg: dict[str, Any]) -> tuple[Compose, Normalize]:
    """open_clip's transform for `preprocess_cfg` output, cut at ToTensor: (geometric part, final Normalize)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    full = image_transform_v2(PreprocessCfg(**cfg), is_train=False).transforms
    cut = next(i for i, t in enumerate(full) if isinstance(t, ToTensor))  # open_clip's MaybeToTensor
    if cut != len(full) - 2 or not isinstance(full[-1], Normalize):
        raise PipeError(f"clip: unexpected open_clip transform layout {full}")
    return Compose(full[:cut]), full[-1]


class ClipImage(Backbone):
    """The image tower: forward -> (B, embed_dim) projected embedding, or (B, grid², width) patch tokens."""

    def __init__(self, visual: nn.Module, output: str, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.visual = visual  # state dict keys `visual.*`, as in the whole model's
        self.output = output
        visual.output_tokens = output == "grid"  # visual(x) -> (pooled, tokens)
        self.preprocessing = preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "grid":
            return self.visual(x)[1]  # (B, grid², width), e.g. (B, 49, 768)
        return self.visual(x)  # (B, embed_dim), as encode_image gives


def image_backbone(net: nn.Module, model: str, weights: str, output: str) -> ClipImage:
    """The image tower of a built `net` (shared, not copied)."""
    cfg = preprocess_cfg(model, weights)
    norm = transforms(cfg)[1]
    return ClipImage(net.visual, output, Preprocessing(cfg["size"], tuple(norm.mean), tuple(norm.std)))


def build(model: str, weights: str, seed: int, output: str) -> ClipImage:
    check_output(model, output)
    # the whole model is built (`random` draws the text tower too), then only the image tower is kept
    return image_backbone(build_model("clip", model, weights, seed), model, weights, output)
