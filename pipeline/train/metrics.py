"""Regression metrics of the papers (MSE, MAE, Spearman's rho "SRC", median absolute error)
and their mean / std over repeats.

A metric that is undefined (Spearman of a constant prediction) is NaN here and `null` in
JSON files, never a made-up number.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, median_absolute_error

METRICS = ("mse", "mae", "src", "medae")


def regression_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got y {y.shape} and yhat {yhat.shape}")
    if np.ptp(y) == 0 or np.ptp(yhat) == 0:
        src = math.nan  # Spearman is undefined for a constant input
    else:
        src = float(spearmanr(y, yhat).statistic)
    return {
        "mse": float(mean_squared_error(y, yhat)),
        "mae": float(mean_absolute_error(y, yhat)),
        "src": src,
        "medae": float(median_absolute_error(y, yhat)),
    }


def mean_std(values: Iterable[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for a single repeat) of each metric over repeats."""
    rows = list(values)
    mean, std = {}, {}
    for k in METRICS:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        mean[k] = float(np.mean(v)) if v.size else math.nan
        std[k] = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return mean, std
