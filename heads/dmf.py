"""DMF: the UHAN paper's deep multimodal fusion baseline (uhan.md 4.1.3).

Our reading of "a deep multi-modal fusion strategy ... to integrate visual representation
from VGG and textual representation from LSTM": the mean of the VGG regions (eq 12; a
vector store such as fc7 is taken as one region) and the masked mean of the LSTM hidden
states (eq 8) are concatenated and a 2-layer FFN (as UHAN's eq 22) gives the score; MSE
loss, no attention. The paper's DMF has no user input (its MSE, 3.004, sits next to
UHAN w/o u, 3.050), so `use_user` is off by default; turned on, the user embedding
(row 0 = unseen user, trained by `user_dropout`) joins the concatenation. A post
without an image contributes a zero visual part. `ablate`: visual | text.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heads import register
from pipeline.train.regime import TEXT_SMALL, TEXT_SPACE, TRAIN_SPACE
from pipeline.head.base import Role
from pipeline.nn.layers import TextConfig, UserEncoder, VisualInput, masked_mean
from pipeline.head.torch_head import VisualOptions, VisualTextHead
from pipeline.train.loop import TrainConfig


@dataclass
class DMFConfig(TrainConfig, TextConfig, VisualOptions):
    dim: int = 512  # word embedding, LSTM hidden, FFN hidden (and user embedding) size
    use_user: bool = False  # concatenate a user embedding too (the paper's DMF has none)
    user_dropout: float = 0.05  # with use_user: share of training posts given the unknown-user row
    ablate: tuple[str, ...] = ()  # any of visual | text


# The small-data regime (pipeline/train/regime.py) and the `pipe tune` search space of DMFConfig.
SMALL = {"dim": 128, "batch_size": 64, "weight_decay": 1e-4, **TEXT_SMALL}
SPACE = {**TRAIN_SPACE, **TEXT_SPACE, "dim": ("cat", [64, 128, 256]), "batch_size": ("cat", [32, 64, 128])}


class DMFModel(nn.Module):
    def __init__(self, dim: int, n_users: int, text: nn.Module | None, visual_shape: list[int] | None,
                 visual_scale: float, user_dropout: float, use_user: bool) -> None:
        super().__init__()
        self.v, self.t, self.u = visual_shape is not None, text is not None, use_user
        if self.v:
            self.visual = VisualInput(visual_shape, dim, visual_scale)
        if self.t:
            self.text = text
        if self.u:
            self.user = UserEncoder(n_users, dim, user_dropout)
        self.W_F1 = nn.Linear(dim * (int(self.v) + int(self.t) + int(self.u)), dim)
        self.W_F2 = nn.Linear(dim, 1)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.v:
            V = self.visual(b["visual"])  # (B, M, dim)
            parts.append(V.mean(1))  # zero without an image
        if self.t:
            parts.append(masked_mean(*self.text(b["tokens"])))  # (B, dim)
        if self.u:
            parts.append(self.user(b["user"]))
        s = torch.cat(parts, 1)  # (B, dim * inputs)
        return self.W_F2(F.relu(self.W_F1(s))).squeeze(-1)  # (B,)


@register
class DMF(VisualTextHead):
    """Concatenation of mean visual regions and mean LSTM states, then an FFN; see the module docstring."""

    name = "dmf"
    Config = DMFConfig
    small_data, search_space = SMALL, SPACE
    visual_role = Role(("grid", "vector"), "vgg16-pool5-448", modality="image")

    def build_model(self) -> nn.Module:
        c, m = self.config, self.meta
        model = DMFModel(c.dim, len(m["users"]) + 1, self.text_encoder(c.dim), m.get("visual_shape"),
                         m.get("visual_scale", 1.0), c.user_dropout, c.use_user)
        with torch.no_grad():
            model.W_F2.bias.fill_(m["y_mean"])
        return model
