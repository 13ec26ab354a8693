"""BPR and VBPR: the matrix-factorisation ranking baselines of AMNL's Tables 1-3.

- `bpr` (Rendle et al. 2009): x_ui = b_i + gamma_u^T gamma_i, trained with BPR-Opt,
  -ln sigma(x_ui - x_uj) + lambda ||Theta_batch||^2, on the ranking task's (positive,
  negative) pairs. Items are the posts of the training examples; a tweet posted after the
  training cut (every test tweet, the task splits in time) has no factors and scores by
  the unknown row (zeros), so BPR can only rank what it saw: the paper's AUC ~0.5 for it.
- `vbpr` (He & McAuley 2016): adds theta_u^T (E f_i) + beta'^T f_i with f_i the VGG16 fc7
  vector (scaled by 1/RMS of the training rows), so new tweets are scored by their image.

Choices: 20 latent + 20 visual factors (VBPR paper), lambda on the rows a batch touches
(the usual SGD form of the prior), Adam instead of plain SGD (the shared trainer); users
unseen in training are row 0 (zeros: their pairs tie, flagged unseen).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heads import register
from pipeline.head.ranking import Items, RankingHead, examples
from pipeline.head.base import HeadData, Role
from pipeline.nn.layers import UserVocab
from pipeline.head.torch_head import VisualOptions, VisualTextHead
from pipeline.train.loop import TrainConfig


@dataclass
class BPRConfig(TrainConfig, VisualOptions):  # VisualOptions: vbpr's normalize_visual
    dim: int = 20  # latent factors gamma_u, gamma_i (VBPR paper: 20)
    visual_dim: int = 20  # vbpr: visual factors theta_u and the projection E (VBPR paper: 20)
    reg: float = 1e-4  # lambda: L2 weight on the factors and biases a batch touches


class BPRModel(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, visual_dim: int | None = None,
                 visual_channels: int | None = None, visual_scale: float = 1.0) -> None:
        super().__init__()
        self.gamma_u = nn.Embedding(n_users, dim, padding_idx=0)
        self.gamma_i = nn.Embedding(n_items, dim, padding_idx=0)
        self.b_i = nn.Embedding(n_items, 1, padding_idx=0)
        for e in (self.gamma_u, self.gamma_i):
            nn.init.normal_(e.weight, 0.0, 0.1)
        nn.init.zeros_(self.b_i.weight)
        self.visual = visual_channels is not None
        if self.visual:
            self.theta_u = nn.Embedding(n_users, visual_dim, padding_idx=0)
            nn.init.normal_(self.theta_u.weight, 0.0, 0.1)
            self.E = nn.Linear(visual_channels, visual_dim, bias=False)
            self.beta = nn.Linear(visual_channels, 1, bias=False)
            self.scale = visual_scale
        with torch.no_grad():  # row 0: unseen user / item, zero
            for e in self.rows():
                e.weight[0].zero_()

    def rows(self) -> list[nn.Embedding]:
        return [self.gamma_u, self.gamma_i, self.b_i] + ([self.theta_u] if self.visual else [])

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        u, i = b["user"].long(), b["item"].long()  # (B,), (B, C)
        x = self.b_i(i).squeeze(-1) + torch.einsum("bd,bcd->bc", self.gamma_u(u), self.gamma_i(i))  # (B, C)
        if self.visual:
            f = b["visual"].float() * self.scale  # (B, C, 4096)
            x = x + torch.einsum("bd,bcd->bc", self.theta_u(u), self.E(f)) + self.beta(f).squeeze(-1)
        return x

    def penalty(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """||Theta||^2 of the rows in the batch (users, items), and of E, beta' when visual."""
        u, i = b["user"].long(), b["item"].long()
        out = self.gamma_u(u).pow(2).sum() + self.gamma_i(i).pow(2).sum() + self.b_i(i).pow(2).sum()
        if self.visual:
            out = out + self.theta_u(u).pow(2).sum() + self.E.weight.pow(2).sum() + self.beta.weight.pow(2).sum()
        return out / u.shape[0]


@register
class BPR(RankingHead):
    __doc__ = __doc__
    name = "bpr"
    Config = BPRConfig

    def __init__(self, config: BPRConfig | None = None) -> None:
        super().__init__(config)
        self._items: tuple[list[str] | None, UserVocab | None] = (None, None)  # meta["items"] and its row index

    def roles(self) -> dict[str, Role]:
        return {}

    def prepare(self, train: HeadData) -> None:
        super().prepare(train)
        self.meta["items"] = sorted(set(examples(train, self.name)["post_id"].to_list()))

    def item_arrays(self, data: HeadData, ids: list[str]) -> dict[str, np.ndarray]:
        items = self.meta["items"]
        if self._items[0] is not items:  # built once per fitted or loaded list
            self._items = (items, UserVocab(items))  # post id -> item row, 0 = not in training
        return {"item": self._items[1].encode(ids)}  # (P,)

    def item_batch(self, items: Items, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"item": items.arrays["item"][rows]}

    def loss(self, task):  # BPR-Opt: -ln sigma(x_ui - x_uj) over real negatives, plus lambda ||Theta||^2
        reg = self.config.reg

        def loss(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            m = batch["mask"][:, 1:].to(pred.dtype)  # (B, C-1)
            nll = (-F.logsigmoid(pred[:, :1] - pred[:, 1:]) * m).sum() / m.sum().clamp(min=1.0)
            return nll + reg * self.model.penalty(batch)
        return loss

    def build_model(self) -> nn.Module:
        m = self.meta
        return BPRModel(len(m["users"]) + 1, len(m["items"]) + 1, self.config.dim)


@register
class VBPR(BPR, VisualTextHead):
    __doc__ = __doc__
    name = "vbpr"
    ABLATIONS: tuple[str, ...] = ()
    visual_role = Role(("vector",), "vgg16-fc7", modality="image")

    def roles(self) -> dict[str, Role]:
        return {"visual": self.visual_role}

    def item_batch(self, items: Items, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {**super().item_batch(items, rows), "visual": self.read(items, "visual", rows)[0]}  # (n, 4096)

    def build_model(self) -> nn.Module:
        c, m = self.config, self.meta
        return BPRModel(len(m["users"]) + 1, len(m["items"]) + 1, c.dim, c.visual_dim,
                        int(np.prod(m["visual_shape"])), m.get("visual_scale", 1.0))
