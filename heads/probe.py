"""Linear probe: the embedding task's baseline (issue 11, item 7).

The embedding is the frozen backbone output itself: a grid mean-pooled over its regions
(a vector store is taken as it is). One linear layer maps it, standardized per channel
with the mean and standard deviation of the training part (up to 2,048 posts), to label
logits, trained with the task's BCE by the shared trainer and early-stopped on valid
mAP. Without the standardization a linear probe on ReLU features (all positive, a large
common offset) barely moves from its initialization at Adam's default step size. No tags, no links: what DMAN adds over a backbone's pooled
features is measured against this.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from heads import register
from pipeline.head.embedding import EmbeddingHead, channel_stats
from pipeline.head.base import HeadData, Role
from pipeline.train.loop import TrainConfig
from pipeline.train.tasks.embedding import EmbeddingOutput


class ProbeModel(nn.Module):
    def __init__(self, shape: list[int], n_labels: int) -> None:
        super().__init__()
        self.channels = self.embed_dim = int(shape[-1])
        self.register_buffer("mean", torch.zeros(self.channels))  # training statistics, set by the head
        self.register_buffer("std", torch.ones(self.channels))
        self.linear = nn.Linear(self.channels, n_labels)

    def embed(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return pool(b["visual"], self.channels)  # (B, C)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear((emb - self.mean) / self.std)  # (B, L)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(self.embed(b))


def pool(visual: torch.Tensor, channels: int) -> torch.Tensor:
    """Store rows (B, *grid, C) or (B, C) -> (B, C) means over the regions."""
    return visual.float().reshape(len(visual), -1, channels).mean(1)  # (B, M, C) -> (B, C)


@register
class Probe(EmbeddingHead):
    __doc__ = __doc__
    name = "probe"
    Config = TrainConfig  # the trainer's fields only: a linear probe has no other setting
    visual_role = Role(("grid", "vector"), "vgg16-pool5-224", modality="image")

    def prepare(self, train: HeadData) -> None:
        super().prepare(train)
        self.meta.update(channel_stats(train, pooled=True, seed=self.config.seed))

    def build_model(self) -> nn.Module:
        m = self.meta
        model = ProbeModel(m["visual_shape"], len(m["labels"]))
        model.mean.copy_(torch.tensor(m["channel_mean"]))
        model.std.copy_(torch.tensor(m["channel_std"]))
        return model

    def output(self, data: HeadData, raw: np.ndarray) -> Any:
        """Valid logits -> label confidences for early stopping (the vectors are not needed there)."""
        conf = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
        return EmbeddingOutput(raw, list(self.meta["labels"]), conf.reshape(len(data), -1))

    def confidences(self, emb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model.logits(torch.from_numpy(emb).to(self.model.mean.device))
        return torch.sigmoid(logits).cpu().numpy().reshape(len(emb), -1)
