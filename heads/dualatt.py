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
from heads.encoders import UserEncoder, VisualInput, attend
from heads.torch_head import VisualTextHead
from pipeline.train.loop import TrainConfig


@dataclass
class DualAttConfig(TrainConfig):
    dim: int = 512  # word embedding, LSTM hidden, user embedding and attention size (as UHAN)
    user_dropout: float = 0.05  # share of training posts whose user is replaced by the unknown-user row
    normalize_visual: bool = True  # scale grids by 1/RMS of the training grids (a train-only scalar)
    ablate: tuple[str, ...] = ()  # any of visual | text | user


class DualAttModel(nn.Module):
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
        u = self.user(b["user"]) if self.u else None  # (B, dim)
        parts = []
        if self.v:
            V = self.visual(b["visual"])  # (B, M, dim)
            f = torch.tanh(self.W_Vv(V))  # (B, M, dim)
            if self.u:
                f = f * torch.tanh(self.W_Vu(u)).unsqueeze(1)
            vmask = b["visual_present"].bool().unsqueeze(1).expand(V.shape[:2])  # (B, M)
            parts.append(attend(self.W_V(f).squeeze(-1), V, vmask)[0])
        if self.t:
            H, tmask = self.text(b["tokens"])  # (B, L', dim)
            f = torch.tanh(self.W_Tt(H))
            if self.u:
                f = f * torch.tanh(self.W_Tu(u)).unsqueeze(1)
            parts.append(attend(self.W_T(f).squeeze(-1), H, tmask)[0])
        s = torch.cat(parts, 1)  # (B, dim * modalities)
        return self.W_F2(F.relu(self.W_F1(s))).squeeze(-1)  # (B,)


@register
class DualAtt(VisualTextHead):
    """User-guided one-layer dual attention baseline; see the module docstring."""

    name = "dualatt"
    Config = DualAttConfig
    ABLATIONS = ("visual", "text", "user")

    def build_model(self) -> nn.Module:
        c, m = self.config, self.meta
        model = DualAttModel(c.dim, len(m["users"]) + 1, self.text_encoder(c.dim), m.get("visual_shape"),
                             m.get("visual_scale", 1.0), c.user_dropout, not self.ablated("user"))
        with torch.no_grad():
            model.W_F2.bias.fill_(m["y_mean"])
        return model
