"""The papers' metrics, one function per task, and their mean / std over repeats.

- regression (UHAN, DSN, hybrid CNN): MSE, MAE, Spearman's rho "SRC", median absolute error.
- ranking (AMNL): per user, P@1 and P@3 of the ranked candidates and AUC = the share of
  (positive, negative) pairs ranked correctly (ties count one half); each averaged over users.
- embedding (DMAN): mAP (per label, average precision of the images ranked by confidence;
  mean over labels with a positive), micro / macro precision, recall and F1 at a 0.5
  threshold. `macro_f1` is the paper's (harmonic mean of macro P and macro R);
  `macro_f1_per_class` the mean of per-class F1. Cross-modal P@k: per query, the share of
  relevant images among the k nearest.

A metric that is undefined (Spearman of a constant prediction, AUC of a user without a
negative) is NaN here and `null` in JSON files, never a made-up number. scipy is imported
only when Spearman is computed, so commands that never score start fast.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

REGRESSION = ("mse", "mae", "src", "medae")
RANKING = ("p@1", "p@3", "auc")
EMBEDDING = ("map", "micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "macro_f1_per_class")
CROSS_MODAL_K = (1, 5, 10, 20, 50)


def regression_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    yhat = np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape or y.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got y {y.shape} and yhat {yhat.shape}")
    if np.ptp(y) == 0 or np.ptp(yhat) == 0:
        src = math.nan  # Spearman is undefined for a constant input
    else:
        from scipy.stats import spearmanr

        src = float(spearmanr(y, yhat).statistic)
    err = yhat - y
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))), "src": src,
            "medae": float(np.median(np.abs(err)))}


def _precision_at(labels_by_score: np.ndarray, k: int) -> float:
    """Share of positives among the first k (fewer when the list is shorter)."""
    top = labels_by_score[:k]
    return float(top.mean()) if len(top) else math.nan


def pair_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of (positive, negative) pairs with the positive scored higher; ties count 1/2."""
    pos, neg = scores[labels > 0], scores[labels <= 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    diff = pos[:, None] - neg[None, :]  # (P, N)
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _per_user(users: Sequence[str], labels: np.ndarray, scores: np.ndarray
              ) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per user: (labels, scores) of its candidates and its labels ranked by score, where
    tied candidates each count their tie's mean label (the expected P@k of a random order
    among ties: a constant scorer must not gain from the candidates' listing order, which
    puts the positive first)."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(users) != len(labels) or len(labels) != len(scores) or len(labels) == 0:
        raise ValueError(f"need equal, non-empty lengths, got {len(users)}, {len(labels)}, {len(scores)}")
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(users):
        groups.setdefault(u, []).append(i)
    for rows in groups.values():
        r = np.array(rows)
        order = r[np.argsort(-scores[r], kind="stable")]
        _, tie = np.unique(scores[order], return_inverse=True)  # tie block of each ranked candidate
        yield labels[r], scores[r], (np.bincount(tie, labels[order]) / np.bincount(tie))[tie]


def ranking_metrics(users: Sequence[str], labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """P@1, P@3 and AUC per user over that user's candidates, averaged over users (NaN-free
    users only for AUC). Candidates are ranked by score; ties count their mean (`_per_user`)."""
    p1, p3, auc = [], [], []
    for lab, sc, ranked in _per_user(users, labels, scores):
        p1.append(_precision_at(ranked, 1))
        p3.append(_precision_at(ranked, 3))
        a = pair_auc(sc, lab)
        if not math.isnan(a):
            auc.append(a)
    return {"p@1": float(np.mean(p1)), "p@3": float(np.mean(p3)), "auc": float(np.mean(auc)) if auc else math.nan}


def precision_at_ks(users: Sequence[str], labels: np.ndarray, scores: np.ndarray, ks: Iterable[int] = range(1, 11)
                    ) -> dict[int, float]:
    """P@k per user for each k, averaged over users (the curve `pipe report` draws; P@1 and
    P@3 equal ranking_metrics')."""
    ranked = [r for _, _, r in _per_user(users, labels, scores)]
    return {k: float(np.mean([_precision_at(r, k) for r in ranked])) for k in ks}


def average_precision(truth: np.ndarray, confidence: np.ndarray) -> float:
    """AP of one label: mean over its positives of the precision at each positive's rank."""
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        return math.nan
    order = np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable")
    hits = truth[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def _safe_div(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def embedding_metrics(truth: np.ndarray, confidence: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Multi-label metrics of (N, L) 0/1 truth against (N, L) confidences."""
    truth = np.asarray(truth, dtype=bool)
    conf = np.asarray(confidence, dtype=np.float64)
    if truth.shape != conf.shape or truth.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {truth.shape} and {conf.shape}")
    pred = conf > threshold
    tp = (pred & truth).sum(0).astype(np.float64)  # (L,)
    fp = (pred & ~truth).sum(0).astype(np.float64)
    fn = (~pred & truth).sum(0).astype(np.float64)
    aps = [average_precision(truth[:, j], conf[:, j]) for j in range(truth.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    micro_p, micro_r = _safe_div(tp.sum(), tp.sum() + fp.sum()), _safe_div(tp.sum(), tp.sum() + fn.sum())
    per_p = np.array([_safe_div(t, t + f) for t, f in zip(tp, fp)])
    per_r = np.array([_safe_div(t, t + f) for t, f in zip(tp, fn)])
    macro_p, macro_r = float(per_p.mean()), float(per_r.mean())
    return {
        "map": float(np.mean(aps)) if aps else math.nan,
        "micro_p": micro_p, "micro_r": micro_r, "micro_f1": _f1(micro_p, micro_r),
        "macro_p": macro_p, "macro_r": macro_r, "macro_f1": _f1(macro_p, macro_r),
        "macro_f1_per_class": float(np.mean([_f1(p, r) for p, r in zip(per_p, per_r)])),
    }


def cross_modal_precision(relevant: np.ndarray, distance: np.ndarray, ks: Sequence[int] = CROSS_MODAL_K
                          ) -> dict[str, float]:
    """Mean over queries of P@k: (Q, N) relevance of each image to each query and (Q, N)
    distances (smaller = nearer)."""
    relevant = np.asarray(relevant, dtype=bool)
    order = np.argsort(np.asarray(distance, dtype=np.float64), axis=1, kind="stable")  # (Q, N)
    ranked = np.take_along_axis(relevant, order, axis=1)
    out = {}
    for k in ks:
        out[f"p@{k}"] = float(ranked[:, :k].mean()) if len(ranked) else math.nan
    return out


def mean_std(values: Iterable[dict[str, float]], names: Sequence[str] | None = None
             ) -> tuple[dict[str, float], dict[str, float | None]]:
    """Mean and sample std (ddof=1) of each metric over repeats; std is None for one repeat."""
    rows = list(values)
    keys = list(names) if names is not None else list(dict.fromkeys(k for r in rows for k in r))
    mean: dict[str, float] = {}
    std: dict[str, float | None] = {}
    for k in keys:
        v = np.array([r.get(k, math.nan) for r in rows], dtype=np.float64)
        mean[k] = float(np.mean(v)) if v.size else math.nan
        std[k] = float(np.std(v, ddof=1)) if v.size > 1 else None
    return mean, std


def mean_interval(values: Iterable[float], level: float = 0.95) -> dict[str, float]:
    """Mean of `values` (one per seed) and its two-sided Student-t interval at `level`:
    mean -/+ t_{(1+level)/2, n-1} s / sqrt(n) (`low`, `high`; NaN for fewer than 2 values).
    Why: a single run decides nothing (issue 19: DMAN's test mAP .55 / .75 / .51 over 3 seeds)."""
    v = np.asarray([x for x in values], dtype=np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_difference(model: Sequence[float], other: Sequence[float], higher_is_better: bool = True,
                      level: float = 0.95) -> dict[str, float | int | bool]:
    """`model - other` seed by seed (both on the same split and candidates): the mean
    difference, its t-interval (`mean_interval`), `wins` = seeds where `model` is strictly
    better (higher, or lower when `higher_is_better` is False) out of `n`, and
    `within_noise` = the interval crosses zero (or there is no interval)."""
    a, b = np.asarray(model, np.float64), np.asarray(other, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one per seed on both sides, got {a.shape} and {b.shape}")
    d = a - b
    out: dict[str, float | int | bool] = dict(mean_interval(d, level))
    out["wins"] = int(((d > 0) if higher_is_better else (d < 0)).sum())
    out["within_noise"] = not (out["low"] > 0 or out["high"] < 0)  # NaN bounds: noise cannot be ruled out
    return out


def describe_difference(d: dict[str, float | int | bool], digits: int = 3) -> str:
    """One line of a paired difference: `+0.050 [-0.165, +0.265], wins 2/3, within noise`."""
    f = f"{{:+.{digits}f}}"
    interval = f"[{f.format(d['low'])}, {f.format(d['high'])}]" if d["n"] > 1 else "[no interval: one seed]"
    return (f"{f.format(d['mean'])} {interval}, wins {d['wins']}/{d['n']}"
            + (", within noise" if d["within_noise"] else ""))
