"""DMAN: Deep Multimodal Attention Networks for social image embedding (Huang et al., dman.md).

Input: VGG16 pool5 regions R (D x M = 49 x 512 at 224 px; eq 4, f_c is the frozen,
cached backbone, times the training part's 1/RMS scale). Tag vector T: 0/1 over the
`tags` (1,000; the embedding task's setting, `--task-set tags=N`) most frequent tags of
the training part; tags are the target of the tag
branch (eq 10), never an input: a post is embedded from its image alone.

- Tag-wise attention (eqs 5-8): Z = tanh(w R^T + b), w in R^{L x M}; alpha = softmax
  over the D regions for each tag; u^k = sum_j alpha^k_j r_j, U in R^{L x M}.
- LFC layers (eq 9): per tag, independent weights M -> 128 -> 32 -> 1, ReLU between,
  sigmoid last: Y in [0, 1]^L. Y is the embedding f_t (the base network's final layer,
  section 3.2) and the tag confidences used for cross-modal search (section 4.4).
- Sim(a, b) = a.b / (|a| + |b|) (eq 1; the SUM of the norms). Hinge rank loss (eqs 2-3):
  max(0, M - Sim(a, p) + Sim(a, n)), M = 0.3, summed over K = 3 negatives drawn from the
  batch (anchors and positives) among posts sharing no label with the anchor (fewer when
  the batch has fewer).
- Weighted BCE (eq 11, with its sign slip and log(1 - T) read as log(1 - Y)):
  -sum_k [lambda T_k log Y_k + (1 - T_k) log(1 - Y_k)], lambda = 10, summed over tags.
- L = L_h + beta L_c (eq 12), beta = 1; the paper's sums over the N images are batch
  means here (a learning-rate scale).

Links (section 4.1): two training posts are linked when they share a label; each post
keeps at most `links` (50) links sampled uniformly among them (`sample_links`). A batch
pairs each anchor with one of its links drawn at random; an anchor without a link adds
no hinge term. Only training posts with a label, an image and a vocabulary tag are
trained on (the others are counted in `train_info["left_out"]`); links, tag vocabulary,
label vocabulary and the visual scale come from those posts alone.

Evaluation (section 4.3): after training, a 3-layer FC classifier (`clf_hidden`) is fitted
on the frozen embeddings of the training posts (BCE, Adam, best valid mAP); its
confidences are the label confidences (positive above 0.5). While the embedding trains,
early stopping watches valid mAP of a label-centroid probe: centroids of the embeddings
of up to `probe_posts` training posts, confidence = (1 + cos) / 2 (refitting the
classifier at every evaluation would cost a pass over the training part each time).

`--set stop_on=classifier` (issue 19) early-stops on the reported thing instead: at each
evaluation a fresh 3-layer classifier is fitted on the probe posts' embeddings (the same
fit as the final one, valid mAP kept) and its valid mAP is the criterion; dearer (one
classifier fit per evaluation). Measured (`benchmarks/planted_embedding.py --only DMAN`, 400
posts, 40 validation posts, defaults, seeds 0-4): test mAP 0.735 [0.695, 0.774] vs probe
0.681 [0.558, 0.804], paired +0.054 [-0.062, +0.170], 4/5 seeds, within noise (the probe's
worst seed stopped at 18 s with mAP 0.515); P@10 0.630 vs 0.570; fit 99 s vs 67 s a seed on
average. Within noise, so not the default (the pinned predictions stand). A validation part of
fewer than `SMALL_VALID` (200) posts gives a noisy mAP: there the patience is doubled and
the run's notes say so. Tag outputs constant over the validation posts go to the notes.

Small-data regime (`small_data`, applied by `regime=auto` below 20K training posts): lr
0.001, `stop_on=classifier` and `standardize_visual` (the regions standardized per channel
with the training part's mean and sd, as the linear probe does with its pooled vectors,
instead of the 1/RMS scale). On a few hundred posts the probe criterion, judged on ~40
validation posts, stopped one seed in three at step 8-20 with its tag outputs still flat
(valid mAP .38-.40 for 68 steps), and lr 0.01 left more outputs dead. Measured on the
embedding synth (400 posts, seeds 0-2, test mAP; linear probe 0.855): Adam .01 + probe 0.661
(seeds .716 / .753 / .515); SGD + Nesterov .01 0.660; Adam .003 0.701 (.761 / .754 / .589);
Adam .001 0.586; Adam .01 + classifier 0.732 (.703 / .761 / .733); Adam .003 + classifier
0.802. On the noisy shape (400 posts, seeds 0-2, test mAP, the probe 0.716 over 5 seeds), with
lr .003 + classifier: as it was 0.609; beta 0.3 0.595, beta 0.1 0.619; lambda 1 0.597; 900
steps instead of 300 0.613; standardized regions 0.631 (best steps 16-68: faster, then
over-fitting), + lr .001 0.650, + lr .0005 0.656, + lr .001 and dropout .5 0.618. Chosen:
standardized, lr .001; over 5 seeds it scores 0.790 [0.770, 0.810] (default shape; probe 0.840,
0.94x) and 0.648 [0.633, 0.662] (noisy; probe 0.716, 0.905x), against 0.795 and 0.572 before
(`benchmarks/planted_embedding.py`'s notes). Standardizing per channel matters for ReLU
features with a large common offset (random or ImageNet VGG16 pool5 alike); the paper's
input is the raw pool5 grid. `regime=paper` keeps lr 0.01, the 1/RMS scale and the probe.

Ablations: `tags` = DMAN_Triplet (an FC base network on the flattened regions,
flatten -> fc_dim -> fc_dim -> dim, dropout between, triplet loss only; no tag outputs);
`attention` = DMAN_Triplet+Text (the same FC network ending in L sigmoid tag outputs,
trained with L_h + beta L_c: the tags merged through FC layers instead of attention + LFC).
DMAN_Triplet is not protected from collapse: measured on the embedding synth (400 posts,
seeds 0-2, small-data regime), its best classifier mAP was at step 0 on 3 of 3 seeds (flagged
`never improved`; test mAP 0.719 [0.654, 0.783] is that of the untrained random projection,
effective rank 73 of 128), i.e. the triplet loss alone, with eq 1's scale-dependent
similarity, never produced a better embedding than the one it started from.

Cross-modal search (`search`, default `cosine`): a one-hot tag query ranks images by
cosine on their tag outputs (1 - y_t / |y|); the paper's Euclidean distance (`--set
search=euclidean`) is dominated by the outputs lambda = 10 pushes to .5-.75 for
uninformative tags. Measured on the embedding synth (`benchmarks/planted_embedding.py`,
400 posts, defaults, seeds 0-4, the same test outputs): test P@10 cosine 0.570 [0.410,
0.730] vs Euclidean 0.330 [0.161, 0.499], paired +0.240 [+0.203, +0.277], 5/5 seeds. The
task's `p@k` is this search, `p@k_euclidean` the paper's. `train_info["dead_tag_outputs"]`
counts tag outputs constant over the validation posts. The optimizer is the shared
trainer's (`--set optimizer=sgd momentum=0.9 nesterov=true` for the paper's).

Open choices: dropout (the paper replaces L2 normalization by unspecified dropout
layers) = `dropout` 0.2 between the hidden FC / LFC layers; ReLU between LFC layers; the
widths of the FC base network and of the classifier; Adam (the shared trainer) instead
of SGD with Nesterov momentum, at the paper's lr 0.01 (at Adam's usual 1e-3 the weighted
BCE hardly moves before early stopping on a few hundred posts: test mAP 0.54 vs 0.72 on
the planted benchmark). Links are drawn per post as at most 50 distinct
co-labelled posts, so the link graph is directed (the paper's adjacency is sparse and
symmetric only in spirit).
"""
from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heads import register
from pipeline.core.draws import Draws
from pipeline.head.embedding import EmbeddingHead, LabelClassifier, channel_stats, fit_classifier
from pipeline.head.base import HeadData, Progress
from pipeline.head.torch_head import VisualOptions
from pipeline.core.device import torch_threads
from pipeline.core.errors import PipeError
from pipeline.train import tasks
from pipeline.train.loop import Source, TrainConfig
from pipeline.train.tasks.embedding import SEARCHES, EmbeddingOutput, label_vocabulary, multi_hot, tag_vocabulary

STOP_ON = ("probe", "classifier")
SMALL_VALID = 200  # validation posts below which stop_on=classifier doubles the patience (a noisy mAP)


def sized_patience(patience: int, n_valid: int) -> int:
    """The early-stopping patience for a validation part of `n_valid` posts: doubled below SMALL_VALID."""
    return patience * 2 if n_valid < SMALL_VALID else patience


@dataclass
class DMANConfig(TrainConfig, VisualOptions):
    lr: float = 0.01  # the paper's step size (it used SGD with Nesterov momentum 0.9; the shared trainer's Adam here)
    links: int = 50  # links kept per training post among the training posts sharing a label (paper: 50)
    negatives: int = 3  # K: in-batch negatives per (anchor, positive) pair, sharing no label with the anchor (paper: 3)
    margin: float = 0.3  # M of the hinge rank loss, eq 2 (paper: 0.3)
    lam: float = 10.0  # lambda: weight of the positive tags in the weighted BCE, eq 11 (paper: 10)
    beta: float = 1.0  # beta: weight of L_c in L = L_h + beta L_c, eq 12 (paper: 1)
    lfc: tuple[int, ...] = (128, 32)  # hidden widths of the per-tag LFC layers before their 1-unit output (paper: 128, 32)
    fc_dim: int = 512  # width of the FC base network of the ablations (tags, attention)
    dim: int = 128  # embedding size of DMAN_Triplet (`--ablate tags`); DMAN's embedding is Y, one value per tag
    dropout: float = 0.2  # dropout between hidden FC / LFC layers ("L2 normalization replaced by dropout")
    clf_hidden: tuple[int, ...] = (256, 128)  # hidden widths of the 3-layer FC evaluation classifier
    clf_epochs: int = 200  # most epochs of the classifier fit
    clf_patience: int = 10  # classifier epochs without a better valid mAP before it stops
    probe_posts: int = 1000  # training posts embedded at each validation for the early-stopping centroid probe
    standardize_visual: bool = False  # regions standardized per channel (training mean / sd) instead of the 1/RMS scale
    search: str = "cosine"  # cross-modal search over the tag outputs: cosine (normalized; measured better) | euclidean (the paper's)
    stop_on: str = "probe"  # early stopping on: probe (label-centroid probe) | classifier (the reported classifier's valid mAP)
    ablate: tuple[str, ...] = ()  # tags (DMAN_Triplet) | attention (DMAN_Triplet+Text)


class Links:
    """Each training post's links as index arrays (CSR: `flat[start[i]:start[i + 1]]`), not
    an array object per post (issue 21); `links[i]` is post i's sorted links."""

    def __init__(self, start: np.ndarray, flat: np.ndarray) -> None:
        self.start, self.flat = start, flat  # (N + 1,) offsets, (total,) int64 rows
        self.count = np.diff(start)  # (N,)

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.start[i] : self.start[i + 1]]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def total(self) -> int:
        return len(self.flat)

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(one link of each of `rows` drawn uniformly, the row itself without one; has-a-link mask)."""
        has = self.count[rows] > 0
        pick = [int(self.flat[self.start[i] + rng.integers(n)]) if n else int(i)  # one draw per row with links
                for i, n in zip(rows.tolist(), self.count[rows].tolist())]
        return np.array(pick, np.int64), has


def sample_links(labels: np.ndarray, per_post: int, seed: int) -> Links:
    """For each row of an (N, L) 0/1 label matrix, up to `per_post` distinct other rows
    sharing a label with it, drawn uniformly (all of them when there are fewer)."""
    rng = np.random.default_rng(seed)
    col, row = np.nonzero(np.asarray(labels).T)  # by label, members in row order
    by_label = np.split(row, np.searchsorted(col, np.arange(1, labels.shape[1])))
    sizes_all = np.diff(np.r_[np.searchsorted(col, np.arange(labels.shape[1])), len(col)])
    r, c = np.nonzero(np.asarray(labels))
    mine_all = np.split(c, np.searchsorted(r, np.arange(1, len(labels))))
    masks = [sum(1 << j for j in m.tolist()) for m in mine_all]  # each post's labels as bits: a cheap overlap count
    draws = Draws(rng)
    rand, integers, bisect_right = draws.random, draws.integers, bisect.bisect_right  # locals: the loop's hot calls
    lists = [m.tolist() for m in by_label]
    flat = np.empty(len(labels) * per_post, np.int64)  # every post's links, back to back
    start = np.zeros(len(labels) + 1, np.int64)
    for i, mine in enumerate(mine_all):
        sizes = sizes_all[mine]
        if len(mine) == 0 or sizes.max() <= per_post + 1:  # the union may hold fewer: enumerate it
            pool = np.setdiff1d(np.concatenate([by_label[j] for j in mine]) if len(mine) else np.zeros(0, np.int64), [i])
            draws.sync()
            got = np.sort(rng.choice(pool, size=min(per_post, len(pool)), replace=False)) if len(pool) else pool
        else:
            cdf = (sizes / sizes.sum()).cumsum()  # rng.choice(len(mine), p=...): one uniform against this cdf
            cdf = (cdf / cdf[-1]).tolist()
            mine_l, own = mine.tolist(), masks[i]
            chosen: set[int] = set()  # a label holds more than per_post others: uniform over the union by drawing
            while len(chosen) < per_post:  # a label by size, then a member, accepted with 1 / (labels it shares with i)
                members = lists[mine_l[bisect_right(cdf, rand())]]
                x = members[integers(len(members))]
                if x != i and rand() < 1.0 / (masks[x] & own).bit_count():
                    chosen.add(x)
            got = sorted(chosen)
        start[i + 1] = start[i] + len(got)
        flat[start[i] : start[i + 1]] = got
    return Links(start, flat[: start[-1]].copy())


def sim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq 1: a.b / (|a| + |b|) over the last dim."""
    return (a * b).sum(-1) / (a.norm(dim=-1) + b.norm(dim=-1)).clamp(min=1e-8)


class LFC(nn.Module):
    """Locally fully connected layers (eq 9): independent weights per tag, (B, L, M) -> (B, L)."""

    def __init__(self, n_tags: int, sizes: list[int], dropout: float) -> None:
        super().__init__()
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for a, b in zip(sizes, sizes[1:]):
            bound = 1.0 / np.sqrt(a)  # nn.Linear's default init, per tag
            self.weights.append(nn.Parameter(torch.empty(n_tags, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_tags, b).uniform_(-bound, bound)))
        self.drop = nn.Dropout(dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = u
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if k:
                h = self.drop(F.relu(h))
            h = torch.einsum("blm,lmh->blh", h, w) + b  # (B, L, h)
        return h.squeeze(-1)  # (B, L) logits; sigmoid in `act`


class DMANModel(nn.Module):
    """forward: (B, out) logits of the anchors, followed by those of the positives when the
    batch carries them (training); `embed`: the embedding (sigmoid(logits) with tags)."""

    def __init__(self, shape: list[int], n_tags: int, n_labels: int, c: DMANConfig, scale: float,
                 standardize: bool = False) -> None:
        super().__init__()
        d, m = int(np.prod(shape[:-1])), int(shape[-1])
        self.regions, self.channels, self.scale = d, m, float(scale)
        self.standardize = standardize
        if standardize:  # training statistics, set by the head (saved with the weights)
            self.register_buffer("mean", torch.zeros(m))
            self.register_buffer("std", torch.ones(m))
        self.attention = "attention" not in c.ablate and "tags" not in c.ablate
        self.sigmoid = "tags" not in c.ablate
        self.embed_dim = n_tags if self.sigmoid else c.dim
        if self.attention:
            self.att = nn.Linear(m, n_tags)  # w in R^{L x M}, b in R^L (eq 7)
            self.lfc = LFC(n_tags, [m, *c.lfc, 1], c.dropout)
        else:
            self.fc = nn.Sequential(nn.Linear(d * m, c.fc_dim), nn.ReLU(), nn.Dropout(c.dropout),
                                    nn.Linear(c.fc_dim, c.fc_dim), nn.ReLU(), nn.Dropout(c.dropout),
                                    nn.Linear(c.fc_dim, self.embed_dim))
        self.classifier = LabelClassifier(self.embed_dim, n_labels, tuple(c.clf_hidden))

    def logits(self, visual: torch.Tensor) -> torch.Tensor:
        r = visual.float().reshape(len(visual), self.regions, self.channels)  # (B, D, M)
        r = (r - self.mean) / self.std if self.standardize else r * self.scale
        if not self.attention:
            return self.fc(r.flatten(1))  # (B, out)
        z = torch.tanh(self.att(r))  # eq 7: (B, D, L)
        alpha = torch.softmax(z, dim=1)  # eq 6: over regions, (B, D, L)
        u = torch.einsum("bdl,bdm->blm", alpha, r)  # eq 8: (B, L, M)
        return self.lfc(u)  # eq 9 before the sigmoid: (B, L)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        v = torch.cat([b["visual"], b["visual_pos"]]) if "visual_pos" in b else b["visual"]  # (B or 2B, D, M)
        return self.logits(v)

    def act(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw) if self.sigmoid else raw

    def embed(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.act(self.logits(b["visual"]))  # (B, embed_dim)


def dman_loss(model: DMANModel, c: DMANConfig) -> Any:
    """L_h + beta L_c (eq 12) of a training batch: anchors, then their positives."""

    def loss(raw: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        n = len(b["visual"])
        emb = model.act(raw)  # (2B, E)
        a, p = emb[:n], emb[n:]
        share = (b["labels"] @ torch.cat([b["labels"], b["labels_pos"]]).T) > 0  # (B, 2B): no negative there
        keys = torch.rand(share.shape, device=raw.device).masked_fill(share, -1.0)  # random order of candidates
        k = min(c.negatives, share.shape[1])
        top, idx = keys.topk(k, dim=1)  # (B, K) random candidates; -1 marks "no negative left"
        neg = emb[idx]  # (B, K, E)
        hinge = F.relu(c.margin - sim(a, p).unsqueeze(1) + sim(a.unsqueeze(1), neg))  # eq 2, (B, K)
        hinge = (hinge * (top >= 0) * b["has_pos"].unsqueeze(1)).sum(1).mean()  # eq 3 over K triplets, batch mean
        if not model.sigmoid:
            return hinge
        w = torch.where(b["tags"] > 0, c.lam, 1.0)  # eq 11: lambda on the positive tags
        bce = F.binary_cross_entropy_with_logits(raw[:n], b["tags"], weight=w, reduction="none").sum(1).mean()
        return hinge + c.beta * bce

    return loss


@register
class DMAN(EmbeddingHead):
    __doc__ = __doc__
    name = "dman"
    Config = DMANConfig
    ABLATIONS = ("tags", "attention")
    task_defaults: ClassVar[dict[str, Any]] = {"tags": 1000}  # tag vocabulary size (paper: 1,000)
    small_data: ClassVar[dict[str, Any]] = {"lr": 0.001, "stop_on": "classifier", "standardize_visual": True}  # see "Small-data regime" above

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._links: Links | None = None  # the training posts' links while fitting
        self._probe: tuple[HeadData, np.ndarray] | None = None  # early-stopping probe posts and their labels
        self._tag_vocab: list[str] = []  # the training part's tag vocabulary, fixed before prepare()
        self._notes: list[str] = []  # what the last fit found for the run's notes (fit_notes)

    def check_config(self) -> None:
        c = self.config
        if c.links < 1 or c.negatives < 1:
            raise PipeError(f"dman needs links and negatives >= 1 (got {c.links}, {c.negatives})")
        if c.search not in SEARCHES:
            raise PipeError(f"dman: --set search={c.search}: expected one of {', '.join(SEARCHES)}")
        if c.stop_on not in STOP_ON:
            raise PipeError(f"dman: --set stop_on={c.stop_on}: expected one of {', '.join(STOP_ON)}")

    def usable(self, train: HeadData) -> tuple[np.ndarray, dict[str, int]]:
        """Rows trained on (a label, an image, a vocabulary tag) and counts of those left out.
        The tag vocabulary is that of the task's training part (as the run's notes count it)."""
        labelled = train.posts["labels"].list.len().fill_null(0).to_numpy() > 0
        store = train.stores.get("visual")
        image = np.array([store is not None and p in store for p in train.ids], bool)
        keep, out = labelled & image, {"no_label": int((~labelled).sum()), "no_image": int((labelled & ~image).sum())}
        size = train.task_config.tags if train.task_config is not None else self.task_defaults["tags"]
        if size is None and "tags" not in self.config.ablate:
            raise PipeError("dman learns tag outputs over a tag vocabulary: --task-set tags=N (paper: 1000)")
        vocab = tag_vocabulary(train.posts, size) if size is not None else []
        self._tag_vocab = [] if "tags" in self.config.ablate else vocab
        if "tags" in train.posts.columns and size is not None:
            tagged = multi_hot(train.posts, vocab, "tags").any(1)
            out["no_vocabulary_tag"] = int((keep & ~tagged).sum())
            keep &= tagged
        elif "tags" not in self.config.ablate:
            raise PipeError("dman learns tag outputs from a posts column `tags`; this dataset has none "
                            "(`--ablate tags` trains DMAN_Triplet, which needs no tags)")
        return keep, out

    def prepare(self, train: HeadData) -> None:
        super().prepare(train)
        self.meta["tags"] = self._tag_vocab
        if self.config.standardize_visual:
            self.meta.update(channel_stats(train, pooled=False, seed=self.config.seed))

    def build_model(self) -> nn.Module:
        m = self.meta
        model = DMANModel(m["visual_shape"], len(m["tags"]), len(m["labels"]), self.config, m.get("visual_scale", 1.0),
                          standardize="channel_mean" in m)  # a run saved before the option: the 1/RMS scale
        if "channel_mean" in m:
            model.mean.copy_(torch.tensor(m["channel_mean"]))
            model.std.copy_(torch.tensor(m["channel_std"]))
        return model

    def loss(self, task: tasks.Task) -> Any:
        return dman_loss(self.model, self.config)

    def source(self, data: HeadData, with_y: bool, training: bool = False) -> Source:
        if not training:  # anchors paired with a link: the training batches only
            return super().source(data, with_y)
        cols = self.columns(data, with_y)
        tags = multi_hot(data.posts, self.meta["tags"], "tags")  # (N, T)
        rng = np.random.default_rng([self.config.seed, 1])  # one producer thread: a deterministic order

        def assemble(rows: np.ndarray) -> dict[str, np.ndarray]:
            out = self.assemble(cols, rows)
            pos, has = self._links.draw(rows, rng)
            other = self.assemble(cols, pos)
            out.update(visual_pos=other["visual"], labels_pos=other["labels"], has_pos=has.astype(np.float32),
                       tags=tags[rows])
            return out

        return Source(len(data), assemble, cols.y)

    def fit(self, train: HeadData, valid: HeadData, progress: Progress | None = None) -> "DMAN":
        c = self.config
        keep, left_out = self.usable(train)
        if not keep.any():
            raise PipeError(f"dman: no training post has a label, an image and a vocabulary tag ({left_out})")
        part = train.subset(np.flatnonzero(keep))
        labels = multi_hot(part.posts, label_vocabulary(part.posts))  # (N, L): the vocabulary prepare() keeps
        self._links = sample_links(labels, c.links, c.seed)
        n_links = self._links.total()
        rows = np.sort(np.random.default_rng(c.seed).permutation(len(part))[: c.probe_posts])
        self._probe = (part.subset(rows), labels[rows])
        self._notes = []
        if c.stop_on == "classifier" and sized_patience(c.patience, len(valid)) != c.patience:
            self.config = c = dataclasses.replace(c, patience=sized_patience(c.patience, len(valid)))
            self._notes.append(f"validation part tiny ({len(valid)} posts < {SMALL_VALID}): its mAP is noisy, early "
                               f"stopping patience doubled to {c.patience} evaluations")
        try:
            super().fit(part, valid, progress)  # the embedding, early-stopped on the centroid probe
            self._probe = None
            emb_train, emb_valid = self.embed(part), self.embed(valid)
            with torch_threads(self.settings.threads):
                clf_info = fit_classifier(self.model.classifier, (emb_train, self.targets(part)),
                                          (emb_valid, self.targets(valid)), c.clf_epochs, c.clf_patience, c.seed,
                                          self.settings)
        finally:
            self._probe, self._links = None, None
        self.train_info.update(clf_info, left_out=left_out, trained_on=len(part), links=n_links,
                               dead_tag_outputs=dead_outputs(self.tag_outputs(emb_valid)))  # on the validation posts
        dead = self.train_info["dead_tag_outputs"]
        if dead:
            self._notes.append(f"{dead} of {len(self.meta['tags'])} tag outputs are constant over the validation "
                               "posts: they rank nothing in cross-modal search")
        return self

    def fit_notes(self) -> list[str]:
        return list(self._notes)

    def output(self, data: HeadData, raw: np.ndarray) -> Any:
        """Valid outputs while the embedding trains -> centroid-probe confidences (see the docstring)."""
        if self._probe is None:
            raise PipeError("dman predicts through predict(), not output()")
        probe, truth = self._probe  # truth: (P, L) over meta["labels"]
        emb = self.model.act(torch.from_numpy(raw)).numpy().reshape(len(data), -1)  # (N, E)
        ref = self.run_model(probe, self.model.embed)
        if self.config.stop_on == "classifier":
            return EmbeddingOutput(emb, list(self.meta["labels"]), self._probe_classifier(ref, truth, emb, data))
        cent = truth.T @ ref.reshape(len(probe), -1) / np.maximum(truth.sum(0), 1)[:, None]  # (L, E) label centroids
        conf = (1 + _unit(emb) @ _unit(cent).T) / 2  # (N, L) in [0, 1]
        return EmbeddingOutput(emb, list(self.meta["labels"]), conf.astype(np.float32))

    def _probe_classifier(self, ref: np.ndarray, truth: np.ndarray, emb: np.ndarray, data: HeadData) -> np.ndarray:
        """(N, L) confidences on `data` of a fresh classifier fitted as the final one, on the probe
        posts' embeddings `ref` (best valid mAP kept), without touching the training's random state."""
        c = self.config
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(c.seed)
            clf = LabelClassifier(self.model.embed_dim, len(self.meta["labels"]), tuple(c.clf_hidden))
        with torch.random.fork_rng():
            fit_classifier(clf, (ref.reshape(len(ref), -1), truth), (emb, self.targets(data)), c.clf_epochs,
                           c.clf_patience, c.seed, self.settings)
        with torch.no_grad():
            out = torch.sigmoid(clf(torch.from_numpy(emb.astype(np.float32)))).numpy()
        return out.reshape(len(emb), -1)[:, : len(self.meta["labels"])].astype(np.float32)

    def confidences(self, emb: np.ndarray) -> np.ndarray:
        clf = self.model.classifier
        with torch.no_grad():
            x = torch.from_numpy(emb).to(clf.mean.device)
            return torch.sigmoid(clf(x)).cpu().numpy().reshape(len(emb), -1)[:, : len(self.meta["labels"])]

    def tag_outputs(self, emb: np.ndarray) -> np.ndarray | None:
        return emb if self.meta["tags"] and self.model.sigmoid else None

    def search(self) -> str:
        return self.config.search


def dead_outputs(outputs: np.ndarray | None, tol: float = 1e-6) -> int:
    """Tag outputs that are constant (range <= tol) over a part's posts: they rank nothing."""
    if outputs is None or not len(outputs):
        return 0
    return int((np.ptp(outputs, axis=0) <= tol).sum())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

