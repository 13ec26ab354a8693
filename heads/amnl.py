"""AMNL: attentional multi-faceted ranking network (Zhao et al., amnl.md section 2).

Scores a user-tweet pair F_u(z) = f_u(z) * h_N(z) (section 2.1; `fusion=product`, the
default is the sum f + h, see Fusion below), trained with the
pairwise hinge L = max(0, c + F_u(z-) - F_u(z+)) + beta ||Psi||^2 (section 2.2).

- image x: VGG16 fc7 (the "15th layer", 4096-d; `pipe extract --backbone vgg16 --layer fc7`),
  standardized per dimension with the training rows' mean and sd (`standardize_visual`):
  fc7 rows share a large common part (cosine ~0.96 between images with random weights),
  which alone drives g(W_i x) into saturation, the same z for every tweet.
- text y: the `tokens` store through word embedding + LSTM per sentence, the last hidden
  state of each sentence max-pooled over the sentences (Fig. 2c). The tokens extractor
  keeps no sentence boundaries (punctuation separates words like spaces), so by default the
  whole text is ONE sentence; `sep_id` names a separator id for a store that has one.
- fusion: z = g(W_i x + W_d y), g(v) = 1.7159 tanh(2v/3) (LeCun's scaled tanh), no bias.
- user preference u_j: a `dim`-vector per user (400, the paper's choice); f_u(z) = u^T z.
- followee attention: s_pq = p^T tanh(W_s u_p + W_n u_q + b), alpha = softmax over the user's
  followees N_p; h_N(z) = sum_q alpha_q u_q^T z. F = f * h (`fusion=product`) is kept as
  written although it multiplies two unbounded dot products (the papers' README: keep it).

Choices where the paper is open: a user without followees gets h = 1 (F = f; the task's
notes count them); followees are the training users' followees from the `follows` table,
capped at `max_followees` (the paper's maximum was 162); users are the training examples'
users and their followees (a followee's u is learnt through h even when it never
retweets); an unseen user is row 0, a zero vector, so its pairs score 0 (flagged); user
vectors start N(0, 1/dim) so f and h start O(1) (the paper: zero-mean Gaussian, no
scale); the margin c = 0.5 (0 < c < 1, not given); the hinge is averaged over a batch's
pairs; beta ||Psi||^2 covers the trainable parameters only (frozen word vectors are no part
of Psi) and, with `penalty=pass` (the default), is added once per pass over the training
groups: B/|T| of it per batch of B groups out of |T| (per pass: mean hinges + beta ||Psi||^2,
i.e. the paper's summed objective with beta times the pairs per batch); `penalty=batch` adds it
to every batch (before issue 19: ~|T|/B times stronger). The history logs `train_hinge` and
`train_penalty` apart. Adam at the paper's learning rate 0.01 by default; the paper's
"SGD with AdaGrad" is `--set optimizer=adagrad`; `--set regime=paper` sets all of the paper's
(fusion=product, optimizer=adagrad, lr=0.01, penalty=pass; an explicit --set still wins). Negatives, split and candidates
are the ranking task's (2 per positive, `--task-set negatives=N`; followees' earlier tweets not
retweeted in training).

Fusion (`fusion`, default `sum`): the paper's F = f * h is a rank-1 quadratic form of a
bias-free z, unchanged under z -> -z, so a tweet and its "opposite" score alike; the sum
F = f + h = (u + sum_q alpha_q u_q)^T z keeps the followee attention and is linear in z (no
followees: h = 0, F = f). Measured on the ranking synth (`benchmarks/planted_ranking.py`:
480 tweets, 200 steps, dim 64, lr 0.001, beta 0.01, penalty=pass, Adam; seeds 0-4 on the
same candidates): test AUC sum 0.589 [0.562, 0.616] vs product 0.528 [0.501, 0.555], paired
sum - product +0.061 [+0.015, +0.107], 5/5 seeds. Both still lose to popularity (0.651) and
VBPR (0.637 [0.604, 0.671]) there. `--set fusion=product` is the paper's score; with
`penalty=batch` (and Adam) it is this head before issue 19, prediction for prediction.

Author bias (`author_bias`, default on; not in the paper): F gains a learned scalar b_a
per tweet author (the authors of the training examples' tweets; an author unseen in
training scores 0), VBPR's item bias taken per author because every test tweet is new.
Candidates are followees' tweets, and whose tweet it is decides much of a retweet: the
popularity baseline ranks by that alone and beat every AMNL variant without it.
Small-data regime (`small_data`, applied by `regime=auto` below 20K training groups):
dim 64, text_dim 64, lr 0.003, beta 0.3. At the paper's sizes (dim 400, beta 1e-3) the
model memorizes a few hundred tweets (training hinge ~0.002). Chosen on the default ranking
synth over 3 seeds (test AUC: paper sizes 0.610; dim 64 with beta 0.01 / 0.1 / 0.3 / 1.0:
0.611 / 0.667 / 0.700 / 0.690; popularity 0.651) and checked on the `followee` shape
(0.683 with the bias, 0.650 without; popularity 0.648). The 5-seed tables of both shapes
are in the closing note of issue 19 and `benchmarks/planted_ranking.py`. `regime=paper`
turns the bias off and keeps the paper's sizes.

Ablations (Table 4 and the followee term): `text` -> AMNL_i (z = g(W_i x)), `visual` ->
AMNL_d (z = g(W_d y)), `followees` -> h = 1 for everyone (F = f).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from heads import register
from pipeline.head.ranking import Items, RankingHead, examples, hinge
from pipeline.head.base import HeadData, Role
from pipeline.nn.layers import TextConfig, masked_softmax
from pipeline.head.torch_head import VisualTextHead
from pipeline.core.errors import PipeError
from pipeline.core.specs import PAD_ID
from pipeline.train.loop import Source, TrainConfig

ABLATIONS = ("text", "visual", "followees")
PENALTIES = ("pass", "batch")
FUSIONS = ("product", "sum")


@dataclass
class AMNLConfig(TrainConfig, TextConfig):  # TextConfig: word dropout, max_vocab, word vectors...
    lr: float = 0.01  # the paper's learning rate
    dim: int = 400  # user preference and fusion size (paper: 400; stable above)
    text_dim: int = 256  # word embedding and LSTM size (not given by the paper)
    margin: float = 0.5  # hinge margin c, 0 < c < 1 (not given by the paper)
    beta: float = 1e-3  # weight of the L2 term beta ||Psi||^2 over the trainable parameters (not given; planted data overfits below)
    penalty: str = "pass"  # pass: beta ||Psi||^2 once per pass over the training groups (x B/|T| per step, the paper) | batch: every batch (before issue 19)
    fusion: str = "sum"  # final score: sum F = f + h (linear in z; measured better) | product F = f * h (the paper)
    author_bias: bool = True  # add a learned score b_a per tweet author to F (not in the paper; see Author bias below)
    max_followees: int = 200  # followees attended per user, the first by id beyond it (paper's max: 162)
    sep_id: int | None = None  # token id that separates sentences; None: the whole text is one sentence
    standardize_visual: bool = True  # fc7 minus the training mean, over the training sd, per dimension
    ablate: tuple[str, ...] = ()  # any of text (AMNL_i) | visual (AMNL_d) | followees (h = 1)


def amnl_loss(model: nn.Module, c: "AMNLConfig", groups: int):
    """The training loss of a batch of B groups as named terms (the trainer logs each):
    `hinge`, the mean hinge with margin c over the batch's pairs, and `penalty`,
    beta ||Psi||^2 over the trainable parameters (frozen word vectors are constants, not Psi),
    times B / |T| (`groups` = |T|) with `penalty=pass`, so that one pass over the training
    part adds it once, or times 1 with `penalty=batch` (every batch, as before issue 19)."""
    base = hinge(c.margin)

    def loss(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"hinge": base(pred, batch)}
        if c.beta > 0:
            share = len(pred) / max(groups, 1) if c.penalty == "pass" else 1.0
            out["penalty"] = c.beta * share * sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
        return out
    return loss


def scaled_tanh(v: torch.Tensor) -> torch.Tensor:
    return 1.7159 * torch.tanh(2.0 * v / 3.0)  # g of the fusion layer (LeCun et al. 2012)


def sentences(tokens: np.ndarray, sep: int | None) -> np.ndarray:
    """(N, L) token rows -> (N, S, L) sentences split at `sep` (dropped), words left-aligned."""
    if sep is None:
        return tokens[:, None, :]  # (N, 1, L): the whole text is one sentence
    is_sep = tokens == sep
    sent = np.cumsum(is_sep, axis=1) - is_sep  # sentence index of every position (N, L)
    keep = (tokens != PAD_ID) & ~is_sep
    n_sent = int(sent.max(initial=0)) + 1
    out = np.zeros((tokens.shape[0], n_sent, tokens.shape[1]), tokens.dtype)
    rows, cols = np.nonzero(keep)
    s = sent[rows, cols]
    first = np.full((tokens.shape[0], n_sent), tokens.shape[1])  # first position of each sentence
    np.minimum.at(first, (rows, s), cols)
    out[rows, s, cols - first[rows, s]] = tokens[rows, cols]
    return out


class SentenceLSTM(nn.Module):
    """Word embedding + LSTM per sentence; last hidden state, max-pooled over sentences (Fig. 2c)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder  # the shared TextEncoder with the config's text options

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, s, length = tokens.shape  # (N, S, L)
        h, mask = self.encoder(tokens.reshape(n * s, length))  # (N*S, L', dim), (N*S, L')
        last = h[torch.arange(n * s, device=h.device), (mask.sum(1) - 1).clamp(min=0)]  # (N*S, dim)
        present = mask.any(1).reshape(n, s)  # (N, S): sentences with a word
        last = last.reshape(n, s, -1).masked_fill(~present.unsqueeze(-1), float("-inf"))
        return torch.nan_to_num(last.max(1).values, neginf=0.0) * present.any(1, keepdim=True)  # (N, dim); empty -> 0


class AMNLModel(nn.Module):
    def __init__(self, n_users: int, dim: int, visual_dim: int | None, text: SentenceLSTM | None, text_dim: int,
                 followees: list[list[int]] | None, fusion: str = "product", n_authors: int = 0) -> None:
        super().__init__()
        self.product = fusion == "product"  # F = f * h (the paper); else F = f + h
        self.b_author = None  # b_a per tweet author (row 0: an author unseen in training, 0)
        if n_authors:
            self.b_author = nn.Embedding(n_authors, 1, padding_idx=0)
            nn.init.zeros_(self.b_author.weight)
        self.U = nn.Embedding(n_users, dim, padding_idx=0)  # u_j; row 0 (unseen users) stays zero
        nn.init.normal_(self.U.weight, 0.0, dim ** -0.5)
        with torch.no_grad():
            self.U.weight[0].zero_()
        self.W_i = nn.Linear(visual_dim, dim, bias=False) if visual_dim else None
        if visual_dim:  # training mean and 1/sd of fc7 (set by the head before training, saved with the weights)
            self.register_buffer("x_mean", torch.zeros(visual_dim))
            self.register_buffer("x_inv_sd", torch.ones(visual_dim))
        self.text = text
        self.W_d = nn.Linear(text_dim, dim, bias=False) if text is not None else None
        self.attend = followees is not None
        if self.attend:
            self.W_s, self.W_n = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=True)  # b in W_n
            self.p = nn.Linear(dim, 1, bias=False)
            width = max((len(f) for f in followees), default=0) or 1
            table = torch.zeros(n_users, width, dtype=torch.long)
            for i, f in enumerate(followees):
                table[i, :len(f)] = torch.tensor(f, dtype=torch.long)
            self.register_buffer("followees", table)  # (n_users, F) user rows, 0 = padding

    def tweets(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """z = g(W_i x + W_d y): (B, C, dim)."""
        acc = 0.0
        if self.W_i is not None:
            x = (b["visual"].float() - self.x_mean) * self.x_inv_sd  # (B, C, 4096)
            acc = acc + self.W_i(x * b["visual_present"].unsqueeze(-1))  # no image: W_i x = 0
        if self.text is not None:
            bsz, c = b["tokens"].shape[:2]
            y = self.text(b["tokens"].reshape(bsz * c, *b["tokens"].shape[2:]))  # (B*C, text_dim)
            acc = acc + self.W_d(y).reshape(bsz, c, -1)
        return scaled_tanh(acc)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        score = self.score(b)  # (B, C)
        if self.b_author is None:
            return score
        return score + self.b_author(b["author"].long()).squeeze(-1)  # + b_a, (B, C)

    def score(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """F_u(z) of the paper, (B, C)."""
        users = b["user"].long()
        u = self.U(users)  # (B, dim)
        z = self.tweets(b)  # (B, C, dim)
        f = torch.einsum("bd,bcd->bc", u, z)  # f_u(z) = u^T z, (B, C)
        if not self.attend:
            return f
        q = self.followees[users]  # (B, F)
        has = q > 0
        uq = self.U(q)  # (B, F, dim)
        s = self.p(torch.tanh(self.W_s(u).unsqueeze(1) + self.W_n(uq))).squeeze(-1)  # s_pq, (B, F)
        alpha = masked_softmax(s, has)  # (B, F)
        h = torch.einsum("bf,bfd,bcd->bc", alpha, uq, z)  # h_N(z) = sum_q alpha_q u_q^T z
        if not self.product:  # no followees: h = 0, F = f
            return f + torch.where(has.any(1, keepdim=True), h, torch.zeros_like(h))
        h = torch.where(has.any(1, keepdim=True), h, torch.ones_like(h))  # no followees: h = 1
        return f * h  # F_u(z), (B, C)


def column_stats(read: Any, ids: list[str], chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and sd of the float64 rows `read(ids)`, `chunk` rows in memory at a
    time: the two passes of np.mean / np.std, whose sums over axis 0 run row after row, kept
    in that order, so the values are those of the whole matrix in memory (bit for bit)."""
    def total(f: Any) -> np.ndarray:
        acc = None
        for k in range(0, len(ids), chunk):
            rows = f(read(ids[k:k + chunk]).astype(np.float64))
            acc = np.add.reduce(rows if acc is None else np.vstack([acc[None], rows]), axis=0)
        return acc

    mean = total(lambda x: x) / len(ids)
    return mean, np.sqrt(total(lambda x: (x - mean) ** 2) / len(ids))


@register
class AMNL(RankingHead, VisualTextHead):
    __doc__ = __doc__
    name = "amnl"
    Config = AMNLConfig
    # `--set regime=paper`: the paper's product score, "SGD with AdaGrad" at .01, beta once per pass
    paper_settings = {"fusion": "product", "optimizer": "adagrad", "lr": 0.01, "penalty": "pass", "author_bias": False}
    small_data = {"dim": 64, "text_dim": 64, "lr": 0.003, "beta": 0.3}  # measured: the docstring's "Small-data regime"
    ABLATIONS = ABLATIONS
    visual_role = Role(("vector",), "vgg16-fc7", modality="image")
    text_role = Role(("tokens",), "tokens", modality="text")

    def __init__(self, config: AMNLConfig | None = None) -> None:
        super().__init__(config)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None  # training fc7 mean and 1/sd (prepare), for build_model
        self._groups = 1  # training groups |T| (the training source sets it)

    def check_config(self) -> None:
        super().check_config()
        c = self.config
        if c.penalty not in PENALTIES or c.fusion not in FUSIONS:
            raise PipeError(f"amnl: --set penalty={c.penalty} fusion={c.fusion}: expected penalty in "
                            f"{'|'.join(PENALTIES)}, fusion in {'|'.join(FUSIONS)}")

    def _follows(self, data: HeadData) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        follows = data.side.get("follows")
        if follows is not None:
            for u, f in follows.select("user_id", "followee_id").sort("user_id", "followee_id").iter_rows():
                out.setdefault(u, []).append(f)
        return {u: fs[: self.config.max_followees] for u, fs in out.items()}

    def fit_users(self, train: HeadData) -> list[str]:
        users = set(examples(train, self.name)["user_id"].to_list())
        if self.ablated("followees"):
            return sorted(users)
        follows = self._follows(train)
        return sorted(users.union(*(follows.get(u, []) for u in users)))

    def prepare(self, train: HeadData) -> None:
        super().prepare(train)
        self._stats = None
        if self.config.author_bias:  # the authors of the training examples' tweets, row 1 on
            posts = examples(train, self.name).select("post_id").unique().join(train.posts.select("post_id", "user_id"),
                                                                                on="post_id")
            self.meta["author_index"] = {a: i + 1 for i, a in enumerate(sorted(posts["user_id"].unique().to_list()))}
        if not self.ablated("visual") and self.config.standardize_visual:
            store = train.stores["visual"]
            ids = [p for p in train.ids if p in store]
            if ids:
                mean, sd = column_stats(store.read, ids)
                self._stats = (mean, 1.0 / np.maximum(sd, 1e-6))
        if self.ablated("followees"):
            return
        follows = self._follows(train)
        index = self.users.index
        self.meta["followees"] = [[index[f] for f in follows.get(u, []) if f in index] for u in [""] + self.users.users]
        self.meta["users_without_followees"] = sum(
            1 for u in set(examples(train, self.name)["user_id"].to_list()) if not follows.get(u))

    def item_arrays(self, data: HeadData, ids: list[str]) -> dict[str, np.ndarray]:
        if not self.config.author_bias:
            return {}
        authors = pl.DataFrame({"post_id": ids}, schema={"post_id": pl.Utf8}).join(
            data.posts.select("post_id", "user_id"), on="post_id", how="left", maintain_order="left")["user_id"]
        index = self.meta["author_index"]  # b_a's rows: 0 for an author of no training tweet
        return {"author": authors.replace_strict(index, default=0, return_dtype=pl.Int64).to_numpy()}  # (P,)

    def item_batch(self, items: Items, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        if self.config.author_bias:
            out["author"] = items.arrays["author"][rows]  # (n,)
        if not self.ablated("visual"):
            out["visual"], out["visual_present"] = self.read(items, "visual", rows)  # (n, 4096), (n,)
        if not self.ablated("text"):
            out["tokens"] = sentences(self.read(items, "text", rows)[0], self.config.sep_id)  # (n, S, L)
        return out

    def source(self, data: HeadData, with_y: bool, training: bool = False) -> Source:
        src = super().source(data, with_y, training)
        if training:
            self._groups = src.n  # |T|: the penalty's share per step is B / |T|
        return src

    def loss(self, task):
        return amnl_loss(self.model, self.config, self._groups)

    def build_model(self) -> nn.Module:
        c, m = self.config, self.meta
        text = None
        if "vocab_size" in m:
            text = SentenceLSTM(self.text_encoder(c.text_dim))
        shape = m.get("visual_shape")
        model = AMNLModel(len(m["users"]) + 1, c.dim, int(np.prod(shape)) if shape else None, text, c.text_dim,
                          m.get("followees"), c.fusion, len(m.get("author_index", {})) + 1 if c.author_bias else 0)
        stats = self._stats  # after loading, the saved buffers replace these
        if stats is not None:
            with torch.no_grad():
                model.x_mean.copy_(torch.as_tensor(stats[0], dtype=torch.float32))
                model.x_inv_sd.copy_(torch.as_tensor(stats[1], dtype=torch.float32))
        return model
