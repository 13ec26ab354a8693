"""`RankingHead`: a TorchHead that scores user-post pairs for the ranking task.

The ranking task hands each part `examples` (user_id, post_id, label, group, at): a
training group is one positive (a retweet) followed by its negatives. Training batches
are groups: `item` fields of shape (B, C, ...) with C = 1 + the largest group's negatives,
column 0 the positive, `mask` (B, C) false on padding, and `user` (B,). Prediction
batches are the example rows one by one (C = 1), so `predict` returns one float per row
of `data.examples` in order, whatever the groups (`pipe score` puts every pair in group
0). The examples are held as index arrays: each row's post is a row of the part's distinct
posts (`Items`), whose store rows are located once per source, so a batch is a gather, not
a lookup per id (issue 21). A subclass writes `item_arrays` (per-post arrays fitted once
per source, e.g. AMNL's author rows), `item_batch` (the arrays its model reads for item
rows) and a model whose `forward(batch)` returns (B, C) scores. The loss is the pairwise hinge (`hinge`, margin 1
unless the head passes its own), padding masked out.

Users are fitted on the training examples (`fit_users`; row 0 = a user never seen in
training, flagged by `unseen_users` per example row).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl
import torch

from pipeline.head.torch_head import Columns, PostRows, TorchHead
from pipeline.core.errors import PipeError
from pipeline.train import tasks
from pipeline.train.data import HeadData
from pipeline.train.loop import Source


def examples(data: HeadData, head: str) -> pl.DataFrame:
    if data.examples is None:
        raise PipeError(f"head {head!r} ranks user-post pairs, and this part has no examples (a ranking task's parts do)")
    return data.examples


def group_rows(ex: pl.DataFrame) -> np.ndarray:
    """(G, C) example row indices per group, the positive first, -1 after a short group."""
    s = ex.with_row_index("row").sort("group", pl.col("label"), descending=[False, True], maintain_order=True)
    group, row = s["group"].to_numpy(), s["row"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(group)])
    out = np.full((len(starts), int(sizes.max(initial=1))), -1, np.int64)
    out[np.repeat(np.arange(len(starts)), sizes), np.arange(len(group)) - np.repeat(starts, sizes)] = row
    return out


@dataclass
class Items(PostRows):
    """A part's distinct example posts (`ids`, P) and the per-post arrays a head fitted for
    them (`item_arrays`, leading dim P): what an example row's post is indexed into."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def post_codes(ex: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """The distinct posts of the examples in first-seen order, and each row's index among them."""
    distinct = ex["post_id"].unique(maintain_order=True)
    code = ex.select("post_id").join(distinct.to_frame().with_row_index("code"), on="post_id", how="left",
                                     maintain_order="left")["code"]
    return distinct.to_list(), code.to_numpy().astype(np.int64)


def hinge(margin: float, mask_key: str = "mask") -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """Mean of max(0, margin - F(z+) + F(z-)) over the real negatives of (B, C) scores."""
    def loss(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m = batch[mask_key][:, 1:].to(pred.dtype)  # (B, C-1)
        return (torch.relu(margin - pred[:, :1] + pred[:, 1:]) * m).sum() / m.sum().clamp(min=1.0)
    return loss


class RankingHead(TorchHead):
    task = "ranking"

    # -- what a subclass provides ----------------------------------------------------------
    def item_arrays(self, data: HeadData, ids: list[str]) -> dict[str, np.ndarray]:
        """Per-post arrays of the part's distinct example posts `ids` (leading dim len(ids)), fitted
        once per source; none by default."""
        return {}

    def item_batch(self, items: Items, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays the model reads for the posts at `rows` of `items` (leading dim len(rows));
        none by default (pure collaborative heads)."""
        return {}

    def fit_users(self, train: HeadData) -> list[str]:
        """The users that get a preference row: the training examples' users."""
        return examples(train, self.name)["user_id"].unique().to_list()

    # -- plumbing ---------------------------------------------------------------------------
    def loss(self, task: tasks.Task) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
        """The pairwise hinge with margin 1 (a head with a margin setting passes its own, as AMNL)."""
        return hinge(1.0)

    def assemble(self, cols: Columns, rows: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError("ranking heads assemble batches of examples (RankingHead.source)")

    def output(self, data: HeadData, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, np.float32).reshape(-1)  # (N, 1) -> (N,): one score per example row

    def source(self, data: HeadData, with_y: bool, training: bool = False) -> Source:
        """Training: (positive, negatives) groups; otherwise the example rows one by one."""
        if self.users is None:
            raise self.not_fitted()
        self._check_roles(data)
        ex = examples(data, self.name)
        users = self.users.encode(ex["user_id"].to_list())
        ids, code = post_codes(ex)  # (P,) distinct posts, (N,) each row's post among them
        items = Items(data, ids, self.item_arrays(data, ids))
        groups = group_rows(ex) if training else np.arange(ex.height)[:, None]  # (G, C) or (N, 1)

        def assemble(rows: np.ndarray) -> dict[str, np.ndarray]:
            idx = groups[rows]  # (B, C)
            mask = idx >= 0
            flat = np.where(mask, idx, idx[:, :1]).reshape(-1)  # padding repeats the positive, masked out
            out = {k: v.reshape(*idx.shape, *v.shape[1:])  # (B*C, ...) -> (B, C, ...)
                   for k, v in self.item_batch(items, code[flat]).items()}
            return {**out, "user": users[idx[:, 0]], "mask": mask}

        return Source(len(groups), assemble, None)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """Per example row: True when its user had no training example (they get row 0)."""
        if self.users is None:
            raise self.not_fitted()
        return self.users.encode(examples(data, self.name)["user_id"].to_list()) == 0
