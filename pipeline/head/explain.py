"""Attention maps of a torch head's model, as `Explanation`s (`TorchHead.explain`).

A model that exposes its attention is `Detailed`: it writes `details(batch) -> dict` next
to `forward` (UHAN, DualAtt and DSN do): `y` (B,) the raw output, and any of `alpha_V`
(B, M) weights over the regions of the `visual` grid, `alpha_T` (B, L') weights over the
first L' token positions of the batch's `tokens` (the text encoder cuts trailing padding)
and `a` (B, 2) the inter-attention over (visual, text), `alpha` (B, H, l) a sequence head's
weights over the positions of each post's window (DSN's long-term attention, per head; averaged
here). The head says which post sits at each window position (`attended`), so the weights become
`Explanation.history`: (earlier post id, weight), the post itself left out. The pass is the shared trainer's (`Trainer.apply`): the head's own
batches, prefetched, on the run's device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pipeline.head.base import Explanation, HeadData
from pipeline.core.specs import PAD_ID
from pipeline.train.tasks.embedding import EmbeddingOutput


class Detailed:
    """Mixin of an nn.Module that exposes its attention maps (`TorchHead.explain` reads them)."""

    def details(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`y` (B,) the raw output, and the maps the module docstring lists."""
        raise NotImplementedError


def _grid(m: int) -> tuple[int, int]:
    """(rows, cols) of M regions: square when M is a square (a pool5 grid), else one row."""
    side = math.isqrt(m)
    return (side, side) if side * side == m else (1, m)


def _prediction(out: Any, i: int) -> Any:
    if not isinstance(out, EmbeddingOutput):
        return float(np.asarray(out)[i])
    conf = out.confidence
    top = np.argsort(-conf[i], kind="stable")[:5]
    return {out.labels[j]: float(conf[i, j]) for j in top}


def explain_torch(head: Any, data: HeadData, attended: list[list[str | None]] | None = None) -> list[Explanation]:
    """Run a TorchHead's `model.details` over `data` (eval mode, no gradients) and keep the maps;
    `attended[i]` names the post at each window position of post i (None: padding)."""
    model = head.model

    def details(batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        d = model.details(batch)
        return d["y"].float().cpu().numpy(), [_maps(d, batch, i) for i in range(len(d["y"]))]

    done = head.evaluator().apply(model, head.source(data, False), details)
    maps = [m for _, ms in done for m in ms]
    out = head.output(data, np.concatenate([y for y, _ in done]) if done else np.zeros(0, np.float32))
    for i, pid in enumerate(data.ids):
        w = maps[i].pop("window", None)
        if w is not None and attended is not None:
            maps[i]["history"] = [(p, float(x)) for p, x in zip(attended[i], w) if p is not None and p != pid]
    return [Explanation(post_id=pid, prediction=_prediction(out, i), **maps[i]) for i, pid in enumerate(data.ids)]


def _maps(d: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], i: int) -> dict[str, Any]:
    """One post's maps; a map over nothing (no image, no words) is None."""
    out: dict[str, Any] = {}
    if "alpha_V" in d and bool(batch["visual_present"][i]):
        w = d["alpha_V"][i].float().cpu().numpy()
        out["regions"], out["grid"] = w.tolist(), _grid(len(w))
    if "alpha_T" in d:
        w = d["alpha_T"][i].float().cpu().numpy()
        tokens = batch["tokens"][i][: len(w)].cpu().numpy()
        words = [(int(t), float(x)) for t, x in zip(tokens, w) if t != PAD_ID]
        out["words"] = words or None
    if "a" in d:
        a = d["a"][i].float().cpu().numpy()
        out["modalities"] = {"visual": float(a[0]), "text": float(a[1])}
    if "alpha" in d:
        w = d["alpha"][i].float()
        out["window"] = (w.mean(0) if w.dim() == 2 else w).cpu().numpy().tolist()  # heads averaged: still sums to 1
    return out
