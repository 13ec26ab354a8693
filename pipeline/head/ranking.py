"""`RankingHead`: a TorchHead that scores user-post pairs for the ranking task.

The ranking task hands each part `examples` (user_id, post_id, label, group, at): a
training group is one positive (a retweet) followed by its negatives. Training batches
are groups: `item` fields of shape (B, C, ...) with C = 1 + the largest group's negatives,
column 0 the positive, `mask` (B, C) false on padding, and `user` (B,). Prediction
batches are the example rows one by one (C = 1), so `predict` returns one float per row
of `data.examples` in order, whatever the groups (`pipe score` puts every pair in group
0). A subclass writes `item_batch` (the per-post arrays its model reads) and a model whose
`forward(batch)` returns (B, C) scores. The loss is the pairwise hinge (`hinge`, margin 1
unless the head passes its own), padding masked out.

Users are fitted on the training examples (`fit_users`; row 0 = a user never seen in
training, flagged by `unseen_users` per example row).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl
import torch

from pipeline.head.torch_head import Columns, TorchHead
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
    g = (ex.with_row_index("row").sort("group", pl.col("label"), descending=[False, True], maintain_order=True)
         .group_by("group", maintain_order=True).agg("row"))
    rows = g["row"].to_list()
    out = np.full((len(rows), max((len(r) for r in rows), default=1)), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def hinge(margin: float, mask_key: str = "mask") -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """Mean of max(0, margin - F(z+) + F(z-)) over the real negatives of (B, C) scores."""
    def loss(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        m = batch[mask_key][:, 1:].to(pred.dtype)  # (B, C-1)
        return (torch.relu(margin - pred[:, :1] + pred[:, 1:]) * m).sum() / m.sum().clamp(min=1.0)
    return loss


class RankingHead(TorchHead):
    task = "ranking"

    # -- what a subclass provides ----------------------------------------------------------
    def item_batch(self, data: HeadData, ids: list[str]) -> dict[str, np.ndarray]:
        """Per-post arrays for `ids` (leading dim len(ids)); none by default (pure collaborative heads)."""
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
        ids = ex["post_id"].to_list()
        groups = group_rows(ex) if training else np.arange(len(ids))[:, None]  # (G, C) or (N, 1)

        def assemble(rows: np.ndarray) -> dict[str, np.ndarray]:
            idx = groups[rows]  # (B, C)
            mask = idx >= 0
            flat = np.where(mask, idx, idx[:, :1]).reshape(-1)  # padding repeats the positive, masked out
            out = {k: v.reshape(*idx.shape, *v.shape[1:])  # (B*C, ...) -> (B, C, ...)
                   for k, v in self.item_batch(data, [ids[i] for i in flat]).items()}
            return {**out, "user": users[idx[:, 0]], "mask": mask}

        return Source(len(groups), assemble, None)

    def unseen_users(self, data: HeadData) -> np.ndarray:
        """Per example row: True when its user had no training example (they get row 0)."""
        if self.users is None:
            raise self.not_fitted()
        return self.users.encode(examples(data, self.name)["user_id"].to_list()) == 0
