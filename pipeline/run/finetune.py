"""`pipe train --finetune BACKBONE`: train a head through its image backbone, end to end.

The composition, with every head unchanged: the head's visual role (grid or vector) is
filled by `ImageRole` (pipeline/run/images.py: the posts' images decoded in DataLoader
workers by extraction's reader) instead of a store, and the head's model is wrapped in
`FinetuneModel` through the torch head's hook (`TorchHead.wrapper`, a `ModelWrapper`: the
head's class and instance methods stay untouched), which runs the backbone (pipeline/nn, the network extraction runs) on
those pixels and hands the head the features it expects. The last `finetune_blocks`
blocks train at `backbone_lr`, the rest stay frozen (no gradients, eval mode, so their
weights and batch-norm statistics stay bit-identical); on CUDA the backbone runs under
autocast (bf16/fp16) with channels_last inputs.

After fitting, the backbone is saved as `model/backbone.pt`: a flat state dict in the
backbone library's own key names (torchvision's `features.N.weight` for VGG16), which is
exactly a `--weights PATH` of its extractor. The run then extracts its dataset with that
extractor into an ordinary store and predicts from it, and records that store as the
role's in config.json: predictions.parquet and `pipe score` (which re-extracts new posts
with the run's extractors) see the same fine-tuned features, never a frozen store.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import polars as pl
import torch
from torch import nn

from pipeline.head.base import Head, Role
from pipeline.head.torch_head import ModelWrapper, TorchHead
from pipeline.core.config import build_config, config_to_dict
from pipeline.core.device import resolve_device
from pipeline.core.errors import PipeError
from pipeline.core.io import atomic_write_bytes
from pipeline.nn.device import autocast
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData, RunSettings
from pipeline.run.roles import describe_stores

if TYPE_CHECKING:  # images.py pulls torchvision (and torch's compiler): imported when fine-tuning only
    from pipeline.run.images import ImageFeed, ImageRole

BACKBONE_FILE = "backbone.pt"
KEYS = ("finetune_blocks", "backbone_lr", "finetune_workers", "finetune_role")  # --set keys taken from the head's


@dataclass
class FinetuneConfig:
    backbone: str  # the image extractor whose network is trained (vgg16, inception_v3, clip)
    weights: str = "imagenet"  # where the backbone starts: imagenet | random | PATH of a state dict
    image_size: int | None = None  # square input side in pixels; None: the extractor's default
    finetune_blocks: int = 1  # last N blocks trainable (vgg16: conv blocks split at each max-pool; 0: all frozen)
    backbone_lr: float = 1e-4  # Adam learning rate of the trainable blocks (the head keeps its own `lr`)
    finetune_workers: int | None = None  # image-decoding DataLoader processes; None: min(4, CPUs - 1), at least 1
    finetune_role: str | None = None  # the head role the backbone fills; None: `visual`, else the only grid/vector role


def blocks(net: nn.Module) -> list[nn.Module]:
    """The backbone's blocks, input to output: what `finetune_blocks` counts from the end.
    VGG16: the five conv blocks (each ends with its max-pool), then the classifier for fc7;
    CLIP: the transformer's residual blocks, then the final norm and projection; others
    (Inception-v3): their top-level modules with parameters (Mixed_7c last)."""
    if isinstance(getattr(net, "features", None), nn.Sequential):
        out, cur = [], []
        for m in net.features:
            cur.append(m)
            if isinstance(m, nn.MaxPool2d):
                out.append(nn.ModuleList(cur))
                cur = []
        return out + ([net.classifier] if hasattr(net, "classifier") else [])
    visual = getattr(net, "visual", None)
    if visual is not None and hasattr(getattr(visual, "transformer", None), "resblocks"):
        rest = [m for n, m in visual.named_children() if n not in ("transformer", "conv1")]
        return [visual.conv1, *visual.transformer.resblocks, nn.ModuleList(rest)]
    return [m for _, m in net.named_children() if any(True for _ in m.parameters())]


class FinetuneModel(nn.Module):
    """backbone(pixels) -> the head's model: forward(batch) with `batch[role]` (B, 3, s, s)
    pixel values (NaN rows: images that failed to decode) -> the head's output."""

    def __init__(self, backbone: nn.Module, head: nn.Module, role: str, trainable: int, device: str) -> None:
        super().__init__()
        self.backbone, self.head, self.role = backbone, head, role
        parts = blocks(backbone)
        if not 0 <= trainable <= len(parts):
            raise PipeError(f"finetune_blocks={trainable}: the backbone has {len(parts)} blocks")
        self._frozen = parts[: len(parts) - trainable]  # a plain list: not registered twice in the state dict
        for m in self._frozen:
            m.requires_grad_(False)
        self.cuda_path = device.startswith("cuda")
        if self.cuda_path:
            self.backbone.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        for m in self._frozen:  # frozen blocks keep their statistics (batch norm) and skip dropout
            m.eval()
        return self

    def features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, s, s) pixels 0..255 -> (B, *feature shape) float32 and the (B,) rows that failed."""
        bad = torch.isnan(pixels).flatten(1).any(1)  # (B,)
        x = torch.nan_to_num(pixels.float(), nan=0.0).div(255)
        if self.cuda_path:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast("cuda" if self.cuda_path else "cpu"):
            f = self.backbone(self.backbone.normalize(x))
        keep = (~bad).to(torch.float32).view(-1, *[1] * (f.dim() - 1))
        return f.float() * keep, bad

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f, bad = self.features(batch[self.role])
        b = {**batch, self.role: f}
        present = f"{self.role}_present"
        if present in b:
            b[present] = b[present].bool() & ~bad
        return self.head(b)


def _visual_role(head: str, roles: dict[str, Role], asked: str | None) -> str:
    cands = [r for r, s in roles.items() if set(s.kinds) & {"grid", "vector"}]
    role = asked or ("visual" if "visual" in cands else (cands[0] if len(cands) == 1 else None))
    if role is None or role not in cands:
        have = ", ".join(f"{r}:{'|'.join(s.kinds)}" for r, s in roles.items()) or "none"
        raise PipeError(f"--finetune: head {head!r} has no {asked or 'visual'!r} grid/vector role to fill (roles: {have})")
    return role


class Finetune(ModelWrapper):
    """One run's fine-tuning: the backbone's extractor, the role it fills, the per-part image
    roles, and what it saves; the `ModelWrapper` each repeat's head trains through."""

    def __init__(self, cfg: FinetuneConfig, head: str, roles: dict[str, Role], settings: RunSettings) -> None:
        import extractors
        from pipeline.extract import build_extractor

        self.cfg = cfg
        try:
            trainable = extractors.get(cfg.backbone).trainable  # imports that extractor's module alone
        except PipeError:
            trainable = False
        if not trainable:
            known = [n for n in extractors.names() if extractors.get(n).trainable]
            raise PipeError(f"--finetune {cfg.backbone}: fine-tuning needs a backbone with weights: {', '.join(known)}")
        self.role = _visual_role(head, roles, cfg.finetune_role)
        kind = "grid" if "grid" in roles[self.role].kinds else "vector"
        fields = {f.name for f in dataclasses.fields(build_extractor(cfg.backbone).Config)}
        shape = {"layer": "pool5" if kind == "grid" else "fc7", "output": "grid" if kind == "grid" else "embedding"}
        self.extractor = build_extractor(cfg.backbone, weights=cfg.weights, image_size=cfg.image_size,
                                         **{k: v for k, v in shape.items() if k in fields})
        self.spec = self.extractor.spec()
        if self.spec.kind not in roles[self.role].kinds:
            raise PipeError(f"--finetune {cfg.backbone} gives {self.spec.kind} features; role {self.role!r} of "
                            f"{head!r} takes {'|'.join(roles[self.role].kinds)}")
        self.device = resolve_device(settings.device)
        self.settings = settings
        self.workers = cfg.finetune_workers if cfg.finetune_workers is not None else \
            max(1, min(4, (os.cpu_count() or 2) - 1))
        self.net = extractors.build_network(cfg.backbone, config_to_dict(self.extractor.config))  # trained in place
        self.size = int(self.net.preprocessing.size[0])
        self.roles: dict[str, ImageRole] = {}
        self.feeds: list[ImageFeed] = []

    # -- before fitting -------------------------------------------------------------
    def attach(self, data: dict[str, HeadData]) -> list[str]:
        """Fill the role in every part with the posts' images; the notes for the run."""
        from pipeline.run.images import ImageFeed, ImageRole

        for part, d in data.items():
            items = [(p, str(i)) for p, i in d.posts.select("post_id", "image").iter_rows() if i and str(i).strip()]
            feed = ImageFeed(items, self.size, self.workers)
            self.feeds.append(feed)
            self.roles[part] = ImageRole(d.posts, feed, self.spec, f"finetune:{self.extractor.name}", self._frozen_forward)
            d.stores = {**d.stores, self.role: self.roles[part]}
        c = self.cfg
        return [(f"fine-tuning {self.extractor.name} ({c.weights} weights, {self.size} px, {self.spec.kind} "
                f"{tuple(self.spec.shape)}) for role {self.role!r}: last {c.finetune_blocks} of {len(blocks(self.net))} "
                f"blocks at lr {c.backbone_lr:g}; images decoded in {self.workers} DataLoader worker(s)")]

    def _frozen_forward(self, pixels: np.ndarray) -> np.ndarray:
        """The backbone as it is now, no gradients (the head's `prepare` statistics)."""
        model = FinetuneModel(self.net, nn.Identity(), self.role, len(blocks(self.net)), self.device)
        model.to(self.device).eval()
        with torch.no_grad():
            f, _ = model.features(torch.from_numpy(pixels).to(self.device))
        return f.cpu().numpy()

    def begin(self, head: TorchHead, data: dict[str, HeadData]) -> None:
        """Make `head.fit` train through the backbone: the parts read images again (a later repeat
        starts from them too) and the head's hook wraps its model."""
        for part, d in data.items():
            self.roles[part].mode = "features"  # the head's `prepare` statistics: the backbone's features
            d.stores = {**d.stores, self.role: self.roles[part]}
        head.wrapper = self

    def wrap(self, model: nn.Module) -> nn.Module:
        """The backbone before the head's freshly built model; from now on the roles hand it pixels."""
        for r in self.roles.values():
            r.mode = "images"
        return FinetuneModel(self.net, model, self.role, self.cfg.finetune_blocks, self.device)

    def param_groups(self, wrapped: nn.Module, head_groups: Callable[[nn.Module], list[dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
        """The head's own groups, and the backbone's trainable blocks at `backbone_lr`."""
        trainable = [p for p in wrapped.backbone.parameters() if p.requires_grad]
        extra = [{"params": trainable, "lr": self.cfg.backbone_lr}] if trainable else []
        return head_groups(wrapped.head) + extra

    # -- after fitting ----------------------------------------------------------------
    def finish(self, head: TorchHead, k: int, run: Any, data: dict[str, HeadData], dataset: str, cache: Any
               ) -> list[str]:
        """Unwrap the head, save the backbone, extract the dataset with it and predict from that store."""
        from pipeline.extract import build_extractor, run_extract

        wrapped = head.model
        head.model, head.wrapper = wrapped.head, None
        path = run.model_dir / BACKBONE_FILE if k == 0 else run.dir / "finetune" / f"backbone-{k}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()  # written whole or not at all (a full disk leaves no truncated backbone)
        torch.save({n: t.detach().cpu().contiguous() for n, t in wrapped.backbone.state_dict().items()}, buf)
        atomic_write_bytes(path, buf.getvalue())
        ex = build_extractor(self.extractor.name, **{**config_to_dict(self.extractor.config), "weights": str(path)})
        rep = run_extract(dataset, ex, cache, quiet=True, device=self.settings.device, num_workers=self.workers)
        store = FeatureStore(rep.store)
        for d in data.values():
            d.stores = {**d.stores, self.role: store}
        notes = [(f"fine-tuned {self.extractor.name} saved as {path}; dataset extracted with it into {store.extractor_id} "
                 f"({rep.extracted} rows, {rep.failed + rep.skipped_failed} unreadable)")]
        failures = {p: r for f in self.feeds for p, r in f.failures.items()}
        if failures:
            pl.DataFrame({"post_id": list(failures), "reason": list(failures.values())}).write_parquet(
                run.dir / "finetune_failures.parquet")
            notes.append(f"{len(failures)} images could not be read during fine-tuning (finetune_failures.parquet); "
                         "they were trained on as posts without an image")
        if k == 0:  # the run's record: the role's store is the fine-tuned one
            doc = json.loads((run.dir / "config.json").read_text())
            run.add_notes(notes, stores={**doc.get("stores", {}), **describe_stores({self.role: store})},
                          finetune={**doc.get("finetune", {}), "backbone_file": str(path), "store": store.extractor_id})
        return notes

    def close(self) -> None:
        for f in self.feeds:
            f.close()

    def describe(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.cfg), "role": self.role, "image_size": self.size,
                "extractor": config_to_dict(self.extractor.config), "spec": self.spec.to_json()}


def setup(backbone: str | None, weights: str | None, image_size: int | None, cls: type[Head],
          ft_sets: dict[str, Any], settings: RunSettings, roles: dict[str, Role]) -> Finetune | None:
    """The run's Finetune (`--finetune BACKBONE`, `--weights`, `--image-size`, the fine-tuning
    `--set` keys), or None without `--finetune`."""
    if not backbone:
        if ft_sets or image_size or weights:
            raise PipeError(f"{', '.join(ft_sets) or '--weights / --image-size'}: only with --finetune BACKBONE")
        return None
    if not issubclass(cls, TorchHead):
        raise PipeError(f"--finetune: head {cls.name!r} does not train by gradient descent (svr, lightgbm, ...); "
                        "use a torch head")
    given = {"backbone": backbone, "weights": weights or "imagenet", **ft_sets}
    if image_size:
        given["image_size"] = image_size
    return Finetune(build_config("finetune", FinetuneConfig, given), cls.name, roles, settings)
