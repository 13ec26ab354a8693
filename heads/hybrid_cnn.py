"""Hybrid CNN (Zhang, Jatowt, Kawai, "Picture or Words", hybrid_cnn.md section 3).

A small CNN trained end to end on raw pixels, with two context numbers joined in the
middle of the network (section 3.1, Figure 1):

    pixels (3 x 64 x 64, a `pixels` store) / 255
    -> conv 32 @ 5x5, ReLU -> max-pool 2 -> conv 64 @ 5x5, ReLU -> max-pool 2   (16 x 16 x 64)
    -> flatten (16,384) || followers / max, hours online / max                  (16,386)
    -> FC 100, ReLU -> FC 60, ReLU -> one output                                (B,)

MSE, Adam at lr 1e-3 (section 3.2); the target is normalized by its training maximum
(`target_transform = "max"`, the paper's normalization), so predictions and scores come
back in counts. Retweets and likes are two models (`--target retweets`, `--target likes`).

Choices where the paper is open (../shared/papers/README.md):
- "same" padding: 16 x 16 x 64 = 16,384 after two pools of a 64 px image requires it.
- The context: `user_followers` and `days` x 24 (hours online at the crawl) from the posts
  table, each divided by its training-part maximum (the paper's 99,891 and 52,155 were
  dataset maxima); a missing value counts as 0, and a missing column too (listed in the
  saved meta as `context_missing`: ingest `days`, the days between posting and the crawl).
- The output "sum" node of Figure 1 is read as a linear unit: the weighted sum of the 60
  FC outputs plus a bias, no activation (a regression of a normalized count). Both FC
  layers use ReLU, as the convolutions do; the paper names no other activation.
- A post without an image (no row in the pixels store) gets a black image.
- Data-aware defaults (pipeline/train/regime.py): below 20K training posts the small-data regime
  adds dropout 0.5 on the flattened maps and FC outputs and weight decay 1e-4, because
  16,384 inputs feeding FC 100 (1.6M weights) memorize a few thousand images;
  `--set regime=paper` trains the paper's network exactly. benchmarks/finetune.py measures both.

`--ablate visual` trains the same FC layers on the two context numbers alone (the paper's
observation that without them "one cannot get meaningful predictions" is the reverse check).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from heads import register
from pipeline.head.base import HeadData, Role
from pipeline.head.torch_head import Columns, TorchHead
from pipeline.core.errors import PipeError
from pipeline.train.loop import TrainConfig

CONTEXT = ("user_followers", "days")  # posts columns: followers at posting, days online at the crawl (x 24 = hours)


@dataclass
class ContextColumns(Columns):
    context: np.ndarray = field(default_factory=lambda: np.zeros((0, len(CONTEXT)), np.float32))  # (N, 2) scaled


@dataclass
class HybridCNNConfig(TrainConfig):
    conv1: int = 32  # kernels of the first convolution (paper: 32)
    conv2: int = 64  # kernels of the second convolution (paper: 64)
    kernel: int = 5  # kernel side, "same" padding (paper: 5)
    fc1: int = 100  # neurons of the first fully connected layer (paper: 100)
    fc2: int = 60  # neurons of the second (paper: 60)
    dropout: float = 0.0  # on the flattened maps and FC outputs in training (paper: none; small-data regime 0.5)
    ablate: tuple[str, ...] = ()  # visual: the network on followers and hours alone


class HybridCNNModel(nn.Module):
    def __init__(self, c: HybridCNNConfig, side: int | None, y_mean: float) -> None:
        super().__init__()
        self.visual = side is not None
        flat = 0
        if self.visual:
            pad = c.kernel // 2  # "same"
            self.conv1 = nn.Conv2d(3, c.conv1, c.kernel, padding=pad)
            self.conv2 = nn.Conv2d(c.conv1, c.conv2, c.kernel, padding=pad)
            flat = c.conv2 * (side // 4) ** 2  # 64 * 16 * 16 = 16,384 at 64 px
        self.fc1 = nn.Linear(flat + len(CONTEXT), c.fc1)  # 16,386 -> 100
        self.fc2 = nn.Linear(c.fc1, c.fc2)  # 100 -> 60
        self.out = nn.Linear(c.fc2, 1)  # the "sum" node
        self.drop = nn.Dropout(c.dropout)
        with torch.no_grad():
            self.out.bias.fill_(y_mean)  # start at the training mean

    def maps(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) uint8 -> (B, conv2, s/4, s/4) feature maps."""
        x = pixels.float() / 255
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 32, s/2, s/2)
        return F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, s/4, s/4)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        z = b["context"].float()  # (B, 2)
        if self.visual:
            z = torch.cat([self.drop(self.maps(b["pixels"]).flatten(1)), z], 1)  # (B, 16,386)
        z = self.drop(F.relu(self.fc1(z)))  # (B, 100)
        z = self.drop(F.relu(self.fc2(z)))  # (B, 60)
        return self.out(z).squeeze(-1)  # (B,)


@register
class HybridCNN(TorchHead):
    __doc__ = __doc__
    name = "hybrid_cnn"
    Config = HybridCNNConfig
    ABLATIONS = ("visual",)
    target_transform = "max"  # the paper's normalization of retweets and likes (pipeline/train/targets.py)
    small_data = {"dropout": 0.5, "weight_decay": 1e-4}
    search_space = {"lr": ("log", 1e-4, 3e-3), "weight_decay": ("log", 1e-6, 1e-2), "dropout": ("float", 0.0, 0.6)}

    def roles(self) -> dict[str, Role]:
        return {} if "visual" in self.config.ablate else {"visual": Role(("pixels",), "pixels-64", modality="image")}

    def prepare(self, train: HeadData) -> None:
        self.meta["context_missing"] = [c for c in CONTEXT if c not in train.posts.columns]  # read as 0: say so
        raw = self._raw_context(train.posts)
        self.meta["context_max"] = [float(m) if m > 0 else 1.0 for m in np.nanmax(raw, axis=0, initial=0.0)]
        if "visual" in self.roles():
            shape = list(train.stores["visual"].spec.shape)  # (3, s, s)
            if shape[1] % 4 or shape[1] != shape[2]:
                raise PipeError(f"hybrid_cnn needs square pixels with a side divisible by 4, got {shape}")
            self.meta["side"] = shape[1]

    @staticmethod
    def _raw_context(posts: pl.DataFrame) -> np.ndarray:
        """(N, 2) followers and hours online (days x 24), NaN where unknown."""
        cols = [posts[c].cast(pl.Float64).fill_null(np.nan).to_numpy() if c in posts.columns
                else np.full(posts.height, np.nan) for c in CONTEXT]
        return np.column_stack([cols[0], cols[1] * 24.0])

    def build_model(self) -> nn.Module:
        return HybridCNNModel(self.config, self.meta.get("side"), self.meta["y_mean"])

    def columns(self, data: HeadData, with_y: bool) -> ContextColumns:
        base = super().columns(data, with_y)
        ctx = self._raw_context(data.posts) / np.asarray(self.meta["context_max"])  # once per part
        return ContextColumns(base.data, base.ids, base.users, base.y, np.nan_to_num(ctx, nan=0.0).astype(np.float32))

    def assemble(self, cols: ContextColumns, rows: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[override]
        out = self.base_batch(cols, rows)
        out["context"] = cols.context[rows]  # (B, 2), over the training maxima
        if "visual" in self.roles():
            out["pixels"] = self.read(cols, "visual", rows)[0]  # (B, 3, s, s) uint8, zeros without an image
        return out
