"""Attention maps of a torch head's model, as `Explanation`s (`TorchHead.explain`).

A model that exposes its attention writes `details(batch) -> dict` next to `forward`
(UHAN and DualAtt do): `y` (B,) the raw output, and any of `alpha_V` (B, M) weights over
the regions of the `visual` grid, `alpha_T` (B, L') weights over the first L' token
positions of the batch's `tokens` (the text encoder cuts trailing padding) and `a` (B, 2)
the inter-attention over (visual, text). Anything else a head attends to (a sequence
head's earlier posts) it adds by overriding `explain` and filling `Explanation.history`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pipeline.head.base import Explanation, HeadData
from pipeline.core.specs import PAD_ID


def _grid(m: int) -> tuple[int, int]:
    """(rows, cols) of M regions: square when M is a square (a pool5 grid), else one row."""
    side = math.isqrt(m)
    return (side, side) if side * side == m else (1, m)


def _prediction(out: Any, i: int) -> Any:
    conf = getattr(out, "confidence", None)
    if conf is None:
        return float(np.asarray(out)[i])
    top = np.argsort(-conf[i], kind="stable")[:5]
    return {out.labels[j]: float(conf[i, j]) for j in top}


def explain_torch(head: Any, data: HeadData) -> list[Explanation]:
    """Run `head.model.details` over `data` (eval mode, no gradients) and keep the maps."""
    model = head.model
    cols = head.columns(data, False)
    device = next(model.parameters()).device
    model.eval()
    ys, maps = [], []
    size = head.config.batch_size
    with torch.no_grad():
        for start in range(0, len(data), size):
            rows = np.arange(start, min(start + size, len(data)))
            batch = head.assemble(cols, rows)
            d = model.details({k: torch.as_tensor(v).to(device) for k, v in batch.items()})
            ys.append(d["y"].float().cpu().numpy())
            for i in range(len(rows)):
                maps.append(_maps(d, batch, i))
    out = head.output(data, np.concatenate(ys) if ys else np.zeros(0, np.float32))
    return [Explanation(post_id=pid, prediction=_prediction(out, i), **maps[i]) for i, pid in enumerate(data.ids)]


def _maps(d: dict[str, torch.Tensor], batch: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """One post's maps; a map over nothing (no image, no words) is None."""
    out: dict[str, Any] = {}
    if "alpha_V" in d and bool(batch["visual_present"][i]):
        w = d["alpha_V"][i].float().cpu().numpy()
        out["regions"], out["grid"] = w.tolist(), _grid(len(w))
    if "alpha_T" in d:
        w = d["alpha_T"][i].float().cpu().numpy()
        tokens = batch["tokens"][i][: len(w)]
        words = [(int(t), float(x)) for t, x in zip(tokens, w) if t != PAD_ID]
        out["words"] = words or None
    if "a" in d:
        a = d["a"][i].float().cpu().numpy()
        out["modalities"] = {"visual": float(a[0]), "text": float(a[1])}
    return out
