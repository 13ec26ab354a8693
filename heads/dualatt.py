"""DualAtt: the UHAN paper's attention baseline (uhan.md 4.1.3), after Nam et al.'s Dual
Attention Network, one-layered and adapted to popularity with user guidance.

Our reading: "performing user attention to both visual and textual modalities
separately" means each modality gets its own soft attention guided by the user only,
r_V,m = w_V (tanh(W_Vv v_m) * tanh(W_Vu u)) and r_T,t = w_T (tanh(W_Tt h_t) * tanh(W_Tu u)),
with no cross-modal guide (UHAN's h_bar / v_bar factors), no inter-attention and no
hierarchy. DAN's multiplicative memory update is replaced by concatenation [v_dot; h_dot],
so a post without an image (v_dot = 0) keeps its text signal; a 2-layer FFN (as UHAN's
eq 22) gives the score; MSE loss. The user enters only through the attentions (no
shortcut), like UHAN w/o sc. Inputs, user vocabulary (row 0 = unseen user, trained by
`user_dropout`), padding and missing-image masks are those of UHAN (heads.uhan).
`ablate`: visual | text (drop the role) | user (attention without the user factor).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from heads import register
from pipeline.train.regime import TEXT_SMALL, TEXT_SPACE, TRAIN_SPACE
from pipeline.nn.layers import TextConfig, UserEncoder, VisualInput, attend
from pipeline.head.explain import Detailed
from pipeline.head.torch_head import VisualOptions, VisualTextHead
from pipeline.train.loop import TrainConfig


@dataclass
class DualAttConfig(TrainConfig, TextConfig, VisualOptions):
    dim: int = 512  # word embedding, LSTM hidden, user embedding and attention size (as UHAN)
    user_dropout: float = 0.05  # share of training posts whose user is replaced by the unknown-user row
    ablate: tuple[str, ...] = ()  # any of visual | text | user


# The small-data regime (pipeline/train/regime.py) and the `pipe tune` search space of DualAttConfig.
SMALL = {"dim": 128, "batch_size": 64, "weight_decay": 1e-4, **TEXT_SMALL}
SPACE = {**TRAIN_SPACE, **TEXT_SPACE, "dim": ("cat", [64, 128, 256]), "batch_size": ("cat", [32, 64, 128]), "user_dropout": ("float", 0.0, 0.2)}


class DualAttModel(nn.Module, Detailed):
    def __init__(self, dim: int, n_users: int, text: nn.Module | None, visual_shape: list[int] | None,
                 visual_scale: float, user_dropout: float, use_user: bool) -> None:
        super().__init__()
        self.v, self.t, self.u = visual_shape is not None, text is not None, use_user
        if self.u:
            self.user = UserEncoder(n_users, dim, user_dropout)
        if self.v:
            self.visual = VisualInput(visual_shape, dim, visual_scale)
            self.W_V, self.W_Vv = nn.Linear(dim, 1, bias=False), nn.Linear(dim, dim, bias=False)
            self.W_Vu = nn.Linear(dim, dim, bias=False) if self.u else None
        if self.t:
            self.text = text
            self.W_T, self.W_Tt = nn.Linear(dim, 1, bias=False), nn.Linear(dim, dim, bias=False)
            self.W_Tu = nn.Linear(dim, dim, bias=False) if self.u else None
        self.W_F1 = nn.Linear(dim * (int(self.v) + int(self.t)), dim)
        self.W_F2 = nn.Linear(dim, 1)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.details(b)["y"]

    def details(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Prediction `y` plus the attention maps alpha_V (B, M) and alpha_T (B, L')."""
        out: dict[str, torch.Tensor] = {}
        u = self.user(b["user"]) if self.u else None  # (B, dim)
        parts = []
        if self.v:
            V = self.visual(b["visual"])  # (B, M, dim)
            f = torch.tanh(self.W_Vv(V))  # (B, M, dim)
            if self.u:
                f = f * torch.tanh(self.W_Vu(u)).unsqueeze(1)
            vmask = b["visual_present"].bool().unsqueeze(1).expand(V.shape[:2])  # (B, M)
            v_dot, out["alpha_V"] = attend(self.W_V(f).squeeze(-1), V, vmask)
            parts.append(v_dot)
        if self.t:
            H, tmask = self.text(b["tokens"])  # (B, L', dim)
            f = torch.tanh(self.W_Tt(H))
            if self.u:
                f = f * torch.tanh(self.W_Tu(u)).unsqueeze(1)
            h_dot, out["alpha_T"] = attend(self.W_T(f).squeeze(-1), H, tmask)
            parts.append(h_dot)
        s = torch.cat(parts, 1)  # (B, dim * modalities)
        out["y"] = self.W_F2(F.relu(self.W_F1(s))).squeeze(-1)  # (B,)
        return out


@register
class DualAtt(VisualTextHead):
    """User-guided one-layer dual attention baseline; see the module docstring."""

    name = "dualatt"
    Config = DualAttConfig
    small_data, search_space = SMALL, SPACE
    ABLATIONS = ("visual", "text", "user")

    def build_model(self) -> nn.Module:
        c, m = self.config, self.meta
        model = DualAttModel(c.dim, len(m["users"]) + 1, self.text_encoder(c.dim), m.get("visual_shape"),
                             m.get("visual_scale", 1.0), c.user_dropout, not self.ablated("user"))
        with torch.no_grad():
            model.W_F2.bias.fill_(m["y_mean"])
        return model
