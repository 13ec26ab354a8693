"""Engagement targets: a regression target's transform, fitted on the training part only.

Counts such as retweets and likes are heavy-tailed, so heads learn them on a compressed
scale and every number a user sees (predictions.parquet, `pipe score`) is mapped back:

- `none`: the column as it is;
- `log1p`: log(1 + y) (counts are >= 0; a negative value is refused);
- `max`: y / the training part's maximum, as the hybrid-CNN paper normalizes retweets and
  likes (its maxima 9,989 and 9,998); valid and test posts above it give values above 1.

All arithmetic is float64 and `inverse(forward(y))` gives y back to float64 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.errors import PipeError

TRANSFORMS = ("none", "log1p", "max")


@dataclass
class TargetTransform:
    kind: str = "none"  # none | log1p | max
    scale: float = 1.0  # max: the training maximum the target is divided by (fitted); 1 otherwise

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORMS:
            raise PipeError(f"--target-transform must be one of {', '.join(TRANSFORMS)}, got {self.kind!r}")

    def fit(self, y_train: np.ndarray, target: str = "target") -> TargetTransform:
        """Fit on the training part's targets (finite values); returns self."""
        y = np.asarray(y_train, np.float64)
        if self.kind == "log1p" and (y < 0).any():
            raise PipeError(f"--target-transform log1p: {int((y < 0).sum())} training posts have a negative {target!r}")
        if self.kind == "max":
            top = float(y.max()) if y.size else 0.0
            if not top > 0:
                raise PipeError(f"--target-transform max: the training maximum of {target!r} is {top}, not positive")
            self.scale = top
        return self

    def forward(self, y: Any) -> np.ndarray:
        """Original values -> the scale heads learn on (NaN stays NaN)."""
        y = np.asarray(y, np.float64)
        if self.kind == "log1p":
            with np.errstate(invalid="ignore"):
                return np.log1p(y)
        return y / self.scale if self.kind == "max" else y

    def inverse(self, z: Any) -> np.ndarray:
        """The learned scale -> original values (predictions, in counts)."""
        z = np.asarray(z, np.float64)
        if self.kind == "log1p":
            return np.expm1(z)
        return z * self.scale if self.kind == "max" else z

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> TargetTransform:
        d = d or {}
        return cls(str(d.get("kind", "none")), float(d.get("scale", 1.0)))

