"""DSN: Dependency-aware Sequence Network (Zhang et al., dsn.md section 3).

A post is predicted from its window P_i = (p_{i-l+1}, ..., p_i) (eq 2): the post and the
l - 1 posts published just before it (`pipeline/train/windows.py`, the same definition in
training, evaluation and `pipe score`; features only, never a label), and its user.

- Visual-language adapters (eqs 3-5) on frozen CLIP image and text embeddings (`clip`,
  `clip_text` stores): A(x) = (1 - a) ReLU(Conv3(x)) + a Conv1(x), both convolutions
  downscaling to d_hidden (`dim`), a = `alpha` (visual) and `beta` (text).
- Hierarchical category embedding (eqs 6-9) over category, subcategory, concept.
- f = [f_v || f_t || f_c] (eq 10); temporal fusion: LSTM (eq 11), gate + residual +
  LayerNorm (eq 12), GRN (eqs 13-16), attention with the target as the only query over
  the earlier posts (eqs 17-19), FFN (eq 20); a two-layer MLP on [h~ || u] (eq 21), MSE.
- u: a user-id embedding (row 0: users unseen in training, learned by replacing
  `user_dropout` of training users with it), one-hots of month, day and hour of
  posted_at (UTC), and the numeric `user_*` columns z-scored with training statistics
  (nulls at the training mean, i.e. 0).

Where the paper is open, this implementation chooses:
- eq 3's "Conv 3x3" on pooled vectors is undefined: a causal Conv1d of width 3 along the
  window (each post mixed with the two before it; zeros before the first), and Conv 1x1
  a per-post linear map; the target post sees no later post either way.
- CLIP embeddings enter times 1/RMS of the training rows (one scalar per modality, train
  only): CLIP's scale is arbitrary and eq 3 has no normalization.
- eq 7's first HCE layer has no lower level: f_c^1* = f_c^1, gates on levels 2-3 only.
- eq 12's Gate_o is eq 7 with one input: (xW1 + b1) * sigmoid(xW2 + b2).
- eq 17 scales by sqrt(d_hidden); with 4 heads we scale each head by sqrt(d_hidden / 4),
  as [31] does; heads are concatenated without an output projection (eq 19 has none).
  With no earlier post (l = 1, or the first posts) the attention output h is 0.
- Padding: windows are left-aligned with the target last; the LSTM runs on packed
  sequences, so padding never enters a state, a mean or a softmax.
- dropout (0.25) on f, on the FFN hidden layer and before the MLP's output layer.
- the paper trains 10 epochs; here the shared trainer's early stopping on valid MSE.
- Small-data regime (`small_data`, applied by `regime=auto` below 20K training posts): dim 64
  and batch 64. At the paper's sizes (dim 256, batch 512) a few hundred posts are one or two
  batches an epoch and the model had not left step 0 when patience ran out (issue 22: best
  step 0, test SRC -0.26 on a 400-post synth after 20 min); `regime=paper` keeps them.

Ablations (config switches): `--ablate image|text|category` (Table 4; all three leave
the user features alone), `--ablate short_term` (no LSTM, gates or GRN: Phi = f W),
`--ablate long_term` (no attention: h = 0), `--ablate user`; `--set hce=first|second|
third|concat|sum|hce` (Table 6), `--set alpha=.. beta=..` (Fig. 3); the window is the
regression task's setting (default here 8): `--task-set window=1..64` (Table 3),
`--task-set window_scope=user` (the user's own earlier posts only); `--set` takes both too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from heads import register
from pipeline.head.explain import Detailed
from pipeline.head.window import LEVELS, TIME_WIDTH, WindowHead
from pipeline.nn.layers import UserEncoder

ABLATIONS = ("image", "text", "category", "short_term", "long_term", "user")
HCE_MODES = ("first", "second", "third", "concat", "sum", "hce")


@dataclass
class DSNConfig(WindowHead.Config):
    lr: float = 1e-3  # Adam learning rate (paper: 1e-3)
    weight_decay: float = 1e-4  # Adam weight decay (paper: 1e-4)
    batch_size: int = 512  # posts per batch (paper: 512)
    dim: int = 256  # d_hidden: adapters, category embeddings, LSTM, attention, FFN, MLP (paper: 256)
    n_heads: int = 4  # attention heads (paper: 4); must divide dim
    alpha: float = 0.2  # visual residual ratio of eq 3 (paper: 0.2)
    beta: float = 0.6  # text residual ratio of eq 3 (paper: 0.6)
    hce: str = "hce"  # category embedding (Table 6): first | second | third | concat | sum | hce
    dropout: float = 0.25  # dropout (paper: 0.25)
    user_dropout: float = 0.05  # share of training posts whose user id is replaced by the unknown-user row
    ablate: tuple[str, ...] = ()  # any of image | text | category | short_term | long_term | user


class Adapter(nn.Module):
    """Eq 3: (1 - ratio) ReLU(Conv3(x)) + ratio Conv1(x); x (B, l, d_in) -> (B, l, d)."""

    def __init__(self, d_in: int, d: int, ratio: float, scale: float = 1.0) -> None:
        super().__init__()
        self.ratio, self.scale = ratio, scale
        self.conv3 = nn.Conv1d(d_in, d, kernel_size=3)  # causal: left-padded by 2 below
        self.conv1 = nn.Linear(d_in, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * self.scale  # (B, l, d_in)
        c3 = self.conv3(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)  # (B, l, d)
        return (1 - self.ratio) * F.relu(c3) + self.ratio * self.conv1(x)


class Gate(nn.Module):
    """Eq 7: (x W1 + b1) * sigmoid(x W2 + y W3 + b2); without y, the one-input gate of eq 12."""

    def __init__(self, d_in: int, d: int, with_y: bool = False) -> None:
        super().__init__()
        self.W1, self.W2 = nn.Linear(d_in, d), nn.Linear(d_in, d)
        self.W3 = nn.Linear(d, d, bias=False) if with_y else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = self.W2(x) + (self.W3(y) if self.W3 is not None and y is not None else 0.0)
        return self.W1(x) * torch.sigmoid(z)


class HCE(nn.Module):
    """Eqs 6-9 over three levels; codes (B, l, 3), 0 = unknown or missing -> (B, l, d)."""

    def __init__(self, sizes: list[int], d: int, mode: str = "hce") -> None:
        super().__init__()
        self.mode = mode
        self.emb = nn.ModuleList(nn.Embedding(n + 1, d) for n in sizes)  # row 0: unknown
        if mode == "concat":
            self.W = nn.Linear(3 * d, d)
        if mode == "hce":
            self.gates = nn.ModuleList(Gate(d, d, with_y=True) for _ in sizes[1:])  # eq 8, levels 2-3
            self.Wk = nn.ModuleList(nn.Linear(2 * d, d, bias=False) for _ in sizes[1:])  # eq 9

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        e = [emb(codes[..., k].long()) for k, emb in enumerate(self.emb)]  # 3 x (B, l, d)
        if self.mode in ("first", "second", "third"):
            return e[("first", "second", "third").index(self.mode)]
        if self.mode == "sum":
            return e[0] + e[1] + e[2]
        if self.mode == "concat":
            return self.W(torch.cat(e, -1))
        f = e[0]  # f_c^1* = f_c^1
        for k in range(1, len(e)):
            g = self.gates[k - 1](f, e[k])  # eq 8
            f = self.Wk[k - 1](torch.cat([e[k], g], -1))  # eq 9
        return f


class GRN(nn.Module):
    """Eqs 14-16: LayerNorm(x + Gate(W1 ELU(W2 x + b2) + b1))."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.W1, self.W2, self.gate, self.norm = nn.Linear(d, d), nn.Linear(d, d), Gate(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.gate(self.W1(F.elu(self.W2(x)))))


class TemporalFusion(nn.Module):
    """Eqs 11-20: f (B, l, d_in) with mask (B, l) (target at its last true position) -> h~ (B, d)."""

    def __init__(self, d_in: int, d: int, n_heads: int, short: bool, long: bool, dropout: float) -> None:
        super().__init__()
        self.short, self.long, self.h = short, long, n_heads
        self.W = nn.Linear(d_in, d, bias=False)  # eq 12's downscaling (alone when short_term is ablated)
        if short:
            self.lstm, self.gate, self.norm, self.grn = nn.LSTM(d_in, d, batch_first=True), Gate(d, d), nn.LayerNorm(d), GRN(d)
        if long:
            self.Wq, self.Wk, self.Wv = (nn.Linear(d, d, bias=False) for _ in range(3))  # eq 18
        self.ffn = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))  # eq 20

    def forward(self, f: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, _ = f.shape
        n = mask.sum(1).clamp(min=1)  # (B,) window lengths
        if self.short:
            packed = pack_padded_sequence(f, n.cpu(), batch_first=True, enforce_sorted=False)
            O, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=L)  # eq 11, (B, l, d)
            phi = self.grn(self.norm(self.gate(O) + self.W(f)))  # eqs 12-13, (B, l, d)
        else:
            phi = self.W(f)
        last = n - 1
        target = phi[torch.arange(B, device=f.device), last]  # Phi_l, (B, d)
        alpha = None
        if self.long and L > 1:
            dh = target.shape[-1] // self.h
            q = self.Wq(target).view(B, self.h, 1, dh)
            K = self.Wk(phi).view(B, L, self.h, dh).transpose(1, 2)  # (B, H, l, dh)
            V = self.Wv(phi).view(B, L, self.h, dh).transpose(1, 2)
            earlier = mask & (torch.arange(L, device=f.device)[None, :] < last[:, None])  # (B, l) keys: p_1..p_{l-1}
            s = (q @ K.transpose(-1, -2)).squeeze(2) / dh ** 0.5  # eq 17, (B, H, l)
            s = s.masked_fill(~earlier[:, None, :], float("-inf"))
            alpha = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)  # no earlier post: all zeros
            h = (alpha.unsqueeze(2) @ V).squeeze(2).reshape(B, -1)  # eq 19, (B, d)
        else:
            h = torch.zeros_like(target)
        return self.ffn(torch.cat([h, target], -1)), alpha  # eq 20


class DSNModel(nn.Module, Detailed):
    def __init__(self, c: DSNConfig, m: dict) -> None:
        super().__init__()
        d, ab = c.dim, set(c.ablate)
        self.v, self.t = "visual_dim" in m, "text_dim" in m
        self.c, self.u = "category" not in ab, "user" not in ab
        if self.v:
            self.A_v = Adapter(m["visual_dim"], d, c.alpha, m["visual_scale"])  # eq 4
        if self.t:
            self.A_t = Adapter(m["text_dim"], d, c.beta, m["text_scale"])  # eq 5
        if self.c:
            self.hce = HCE([len(m["categories"][lv]) for lv in LEVELS], d, c.hce)
        width = d * (self.v + self.t + self.c)
        self.drop = nn.Dropout(c.dropout)
        self.temporal = TemporalFusion(width, d, c.n_heads, "short_term" not in ab, "long_term" not in ab,
                                       c.dropout) if width else None
        u_width = 0
        if self.u:
            self.user = UserEncoder(len(m["users"]) + 1, d, c.user_dropout)
            u_width = d + TIME_WIDTH + len(m["user_cols"])
        self.mlp = nn.Sequential(nn.Linear((d if width else 0) + u_width, d), nn.ReLU(), nn.Dropout(c.dropout),
                                 nn.Linear(d, 1))  # eq 21

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.details(b)["y"]

    def details(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The prediction (B,) and the attention weights over the window (B, heads, l)."""
        mask = b["mask"].bool()  # (B, l)
        parts = []
        if self.v:
            parts.append(self.A_v(b["visual"]))
        if self.t:
            parts.append(self.A_t(b["text"]))
        if self.c:
            parts.append(self.hce(b["cats"]))
        joined, out = [], {}
        if parts:
            f = self.drop(torch.cat(parts, -1)) * mask.unsqueeze(-1)  # eq 10, (B, l, width)
            h, alpha = self.temporal(f, mask)
            joined.append(h)
            if alpha is not None:
                out["alpha"] = alpha
        if self.u:
            joined += [self.user(b["user"]), b["time"].float(), b["user_num"].float()]
        out["y"] = self.mlp(torch.cat(joined, -1)).squeeze(-1)
        return out


@register
class DSN(WindowHead):
    __doc__ = __doc__
    name = "dsn"
    Config = DSNConfig
    ABLATIONS = ABLATIONS
    small_data = {"dim": 64, "batch_size": 64}  # see "Small-data regime" above

    def check_config(self) -> None:
        super().check_config()
        c = self.config
        if c.hce not in HCE_MODES:
            raise self.config_error(f"hce must be one of {', '.join(HCE_MODES)}, got {c.hce!r}")
        if c.dim % c.n_heads:
            raise self.config_error(f"dim {c.dim} is not divisible by n_heads {c.n_heads}")
        if {"image", "text", "category", "user"} <= set(c.ablate):
            raise self.config_error("ablating image, text, category and user leaves no input")

    def build_model(self) -> nn.Module:
        model = DSNModel(self.config, self.meta)
        with torch.no_grad():
            model.mlp[-1].bias.fill_(self.meta["y_mean"])  # start at the training mean
        return model
