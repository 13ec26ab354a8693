"""What the embedding heads (`dman`, `probe`) share: the visual role, labels from the
training part, batches with `labels`, and a prediction pass that yields embeddings.

`EmbeddingHead.predict` runs `model.embed(batch)` once over the posts and hands the
(N, D) embeddings to `confidences` (label confidences, sigmoid scale) and `tag_outputs`
(a tag branch's confidences, or None): an `EmbeddingOutput`. `LabelClassifier` is the
3-layer FC classifier DMAN's evaluation fits on frozen training embeddings (section 4.3).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.head.base import HeadData, Role
from pipeline.head.torch_head import Columns, VisualTextHead
from pipeline.train.metrics import embedding_metrics
from pipeline.train.tasks.embedding import EmbeddingOutput, label_vocabulary, multi_hot


class EmbeddingHead(VisualTextHead):
    """A head of the embedding task reading one `visual` store (no text role, no ablation of
    the inherited visual/text kind). `meta["labels"]`: the training part's label vocabulary."""

    task = "embedding"
    visual_role = Role(("grid",), "vgg16-pool5-224")
    ABLATIONS: tuple[str, ...] = ()

    def roles(self) -> dict[str, Role]:
        return {"visual": self.visual_role}

    def check_config(self) -> None:
        """No visual/text pair to check (VisualTextHead's check does not apply)."""

    def prepare(self, train: HeadData) -> None:
        super().prepare(train)  # visual_shape, visual_scale
        self.meta["labels"] = label_vocabulary(train.posts)

    def targets(self, data: HeadData) -> np.ndarray:
        """(N, L) multi-hot labels over the training label vocabulary."""
        return multi_hot(data.posts, self.meta["labels"])

    def assemble(self, cols: Columns, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = super().assemble(cols, rows)
        if cols.y is not None:
            out["labels"] = cols.y[rows]  # the task's loss reads batch["labels"]
        return out

    def embed(self, data: HeadData) -> np.ndarray:
        """(N, D) float32 `model.embed` of every post of `data`, in order."""
        if self.model is None:
            raise self.not_fitted()
        return self.run_model(data, self.model.embed).reshape(len(data), self.model.embed_dim)

    def confidences(self, emb: np.ndarray) -> np.ndarray:
        """(N, L) label confidences in [0, 1] from (N, D) embeddings."""
        raise NotImplementedError

    def tag_outputs(self, emb: np.ndarray) -> np.ndarray | None:
        """(N, T) tag confidences of a tag branch, or None."""
        return None

    def predict(self, data: HeadData) -> EmbeddingOutput:
        emb = self.embed(data)
        tags = self.tag_outputs(emb)
        return EmbeddingOutput(emb, list(self.meta["labels"]), self.confidences(emb),
                               list(self.meta["tags"]) if tags is not None else None, tags)


class LabelClassifier(nn.Module):
    """3 FC layers on standardized embeddings -> (B, L) label logits (DMAN section 4.3: "the
    neural network with 3 FC layers ... a common classifier"). The training mean and std
    of the embeddings are buffers, saved with the model."""

    def __init__(self, dim: int, n_labels: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], max(n_labels, 1)))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net((emb - self.mean) / self.std)


def fit_classifier(clf: LabelClassifier, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
                   epochs: int, patience: int, seed: int, lr: float = 1e-3, batch_size: int = 128) -> dict[str, Any]:
    """Fit `clf` on frozen (embedding, multi-hot) training pairs with BCE and Adam; keep the
    epoch with the best valid mAP (patience in epochs). Returns what happened."""
    x, y = torch.from_numpy(train[0].astype(np.float32)), torch.from_numpy(train[1].astype(np.float32))
    vx, vy = torch.from_numpy(valid[0].astype(np.float32)), valid[1]
    with torch.no_grad():
        clf.mean.copy_(x.mean(0))
        clf.std.copy_(x.std(0, unbiased=False).clamp(min=1e-6))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    lossf = nn.BCEWithLogitsLoss()

    def valid_map() -> float:
        clf.eval()
        with torch.no_grad():
            v = embedding_metrics(vy, torch.sigmoid(clf(vx)).numpy())["map"] if len(vx) else float("nan")
        return v if np.isfinite(v) else -1.0

    best, best_epoch, bad = valid_map(), 0, 0
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    for epoch in range(1, epochs + 1):
        clf.train()
        for rows in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad(set_to_none=True)
            lossf(clf(x[rows]), y[rows]).backward()
            opt.step()
        v = valid_map()
        if v > best:
            best, best_epoch, bad = v, epoch, 0
            state = {k: t.clone() for k, t in clf.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    clf.load_state_dict(state)
    clf.eval()
    return {"classifier_best_epoch": best_epoch, "classifier_valid_map": best, "classifier_epochs": epoch if epochs else 0}

