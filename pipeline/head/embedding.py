"""What the embedding heads (`dman`, `probe`) share: the visual role, labels from the
training part, batches with `labels`, and a prediction pass that yields embeddings.

`EmbeddingHead.predict` runs `model.embed(batch)` once over the posts and hands the
(N, D) embeddings to `confidences` (label confidences, sigmoid scale) and `tag_outputs`
(a tag branch's confidences, or None): an `EmbeddingOutput`. `LabelClassifier` is the
3-layer FC classifier DMAN's evaluation fits on frozen training embeddings (section 4.3).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.head.base import HeadData, Role
from pipeline.head.torch_head import Columns, VisualTextHead, sample_ids
from pipeline.train.data import RunSettings
from pipeline.train.loop import Criterion, Source, TrainConfig, Trainer
from pipeline.train.metrics import embedding_metrics
from pipeline.train.tasks.embedding import EmbeddingOutput, label_vocabulary, multi_hot


def channel_stats(train: HeadData, pooled: bool, seed: int, n: int = 2048) -> dict[str, list[float]]:
    """Per-channel mean and sd (at least 1e-6) of the visual rows of up to `n` training posts drawn
    with `seed`: of their region-pooled vectors (`pooled`, the linear probe's input) or of every
    region (DMAN's). A head standardizes its input with them; they go to its meta."""
    store = train.stores["visual"]
    c = int(store.spec.shape[-1])
    sample = sample_ids(store, train.ids, n, np.random.default_rng(seed))
    if not sample:
        x = np.zeros((1, c))
    elif pooled:
        x = torch.from_numpy(store.read(sample)).float().reshape(len(sample), -1, c).mean(1).double().numpy()  # (n, C)
    else:
        x = store.read(sample).astype(np.float64).reshape(-1, c)  # (n * D, C)
    return {"channel_mean": x.mean(0).tolist(), "channel_std": np.maximum(x.std(0), 1e-6).tolist()}


class EmbeddingHead(VisualTextHead):
    """A head of the embedding task reading one `visual` store (no text role, no ablation of
    the inherited visual/text kind). `meta["labels"]`: the training part's label vocabulary."""

    task = "embedding"
    visual_role = Role(("grid",), "vgg16-pool5-224", modality="image")
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

    def tag_names(self) -> list[str]:
        """The tags of a tag branch's outputs (`pipe search` looks images up by them); [] without one."""
        return list(self.meta.get("tags") or [])

    def tag_outputs(self, emb: np.ndarray) -> np.ndarray | None:
        """(N, T) tag confidences of a tag branch, or None."""
        return None

    def search(self) -> str:
        """How a tag query ranks images by their tag outputs (tasks.embedding.SEARCHES): the paper's Euclidean."""
        return "euclidean"

    def predict(self, data: HeadData) -> EmbeddingOutput:
        emb = self.embed(data)
        tags = self.tag_outputs(emb)
        return EmbeddingOutput(emb, list(self.meta["labels"]), self.confidences(emb),
                               list(self.meta["tags"]) if tags is not None else None, tags, self.search())


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
                   epochs: int, patience: int, seed: int, settings: RunSettings, lr: float = 1e-3,
                   batch_size: int = 128) -> dict[str, Any]:
    """Fit `clf` on frozen (embedding, multi-hot) training pairs with BCE and Adam, through the
    shared trainer: one evaluation per epoch (the whole valid part in one batch), patience in
    epochs, the epoch with the best valid mAP kept, batches in `torch.randperm` order of a
    generator seeded with `seed`. Returns what happened."""
    x, y = train[0].astype(np.float32), train[1].astype(np.float32)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        clf.mean.copy_(xt.mean(0))
        clf.std.copy_(xt.std(0, unbiased=False).clamp(min=1e-6))
    gen = torch.Generator().manual_seed(seed)
    per_epoch = max(1, math.ceil(len(x) / batch_size))
    config = TrainConfig(lr=lr, batch_size=batch_size, eval_every=per_epoch, patience=max(patience, 1),
                         max_steps=epochs * per_epoch, seed=seed)
    vy = valid[1]
    criterion = Criterion("map", lambda raw: embedding_metrics(vy, torch.sigmoid(torch.from_numpy(raw)).numpy())["map"],
                          higher_is_better=True)
    trainer = Trainer(config, settings, lambda logits, b: F.binary_cross_entropy_with_logits(logits, b["y"]), criterion,
                      shuffle=lambda n: torch.randperm(n, generator=gen).numpy(), eval_batch=max(len(valid[0]), 1))
    result = trainer.fit(_OnKey(clf, "x"), Source.from_arrays({"x": x, "y": y}, y),
                         Source.from_arrays({"x": valid[0].astype(np.float32)}, vy))
    best = result.best_valid if np.isfinite(result.best_valid) else -1.0
    return {"classifier_best_epoch": result.best_step // per_epoch, "classifier_valid_map": best,
            "classifier_epochs": result.steps // per_epoch}


class _OnKey(nn.Module):
    """`module(batch[key])`: a module of one tensor as the trainer runs it, on a batch."""

    def __init__(self, module: nn.Module, key: str) -> None:
        super().__init__()
        self.module, self.key = module, key

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module(batch[self.key])
