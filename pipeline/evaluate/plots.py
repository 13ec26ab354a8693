"""The figures of `pipe report` and `pipe explain`, each returned as PNG bytes.

matplotlib's object API (`Figure`, Agg canvas): no pyplot state, no display, so it runs
headless and in threads. PNG rather than SVG: a 5,000-point scatter stays small, and an
SVG carries namespace URLs, while the report must hold no http(s) reference at all.
Large inputs are subsampled with a fixed seed (`MAX_POINTS`), and the title says so.
Every string drawn passes through `plain`: text from data (labels, ids, words) is drawn as
typed, never as math text (`$\\undefinedmacro$` would stop the report; `cost $5 or $6` would be
typeset). Escaping rather than rcParams keeps figures independent of global state (threads).
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

MAX_POINTS = 5000  # points drawn per scatter
DPI = 80


def plain(text: object) -> str:
    """`text` as matplotlib draws it literally: each `$` escaped, so no math text starts."""
    return str(text).replace("$", r"\$")


def _figure(w: float = 4.6, h: float = 3.4):  # -> matplotlib.figure.Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def subsample(n: int, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all rows, or `limit` of them drawn with a fixed seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def scatter(y: np.ndarray, yhat: np.ndarray, title: str) -> bytes:
    """Predicted against true, with the y = x line."""
    keep = subsample(len(y))
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(y[keep], yhat[keep], s=6, alpha=0.4 if len(keep) > 1000 else 0.8, color="#3465a4", linewidths=0)
    lo, hi = float(min(y.min(), yhat.min())), float(max(y.max(), yhat.max()))
    ax.plot([lo, hi], [lo, hi], color="#cc0000", lw=1, label="y = x")
    shown = f" ({len(keep):,} of {len(y):,} shown)" if len(keep) < len(y) else f" (n = {len(y):,})"
    ax.set(xlabel="true", ylabel="predicted", title=plain(title) + shown)
    ax.legend(loc="upper left", fontsize=8)
    return png(fig)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str) -> bytes:
    """One line per series (e.g. one per repeat), markers at the points."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ax.plot(x, [np.nan if v is None else v for v in y], marker="o", ms=3, lw=1.2, label=plain(label))
    ax.set(xlabel=plain(xlabel), ylabel=plain(ylabel), title=plain(title))
    if len(series) > 1:
        ax.legend(fontsize=8)
    return png(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
         counts: Sequence[int] | None = None, xlabel: str = "") -> bytes:
    """Vertical bars (horizontal past 12 labels, so long label sets stay readable); `counts`
    are written on the bars (n per bin)."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    labels, title, ylabel, xlabel = [plain(t) for t in labels], plain(title), plain(ylabel), plain(xlabel)
    many = len(labels) > 12
    fig = _figure(4.6, max(3.4, 0.22 * len(labels) + 1) if many else 3.4)
    ax = fig.add_subplot()
    pos = np.arange(len(labels))
    drawn = (ax.barh if many else ax.bar)(pos, np.nan_to_num(vals), color="#4e9a06")
    if many:
        ax.set_yticks(pos, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel=ylabel, title=title)
    else:
        ax.set_xticks(pos, labels, rotation=30 if max((len(s) for s in labels), default=0) > 6 else 0,
                      ha="right" if max((len(s) for s in labels), default=0) > 6 else "center", fontsize=8)
        ax.set(ylabel=ylabel, xlabel=xlabel, title=title)
    if counts is not None:
        ax.bar_label(drawn, [f"n={c}" for c in counts], fontsize=7)
    return png(fig)


def heatmap_on_image(image: np.ndarray | None, weights: Sequence[float], grid: tuple[int, int], title: str) -> bytes:
    """Region weights (row-major over `grid`) as a heat map over the image (an (H, W, 3)
    uint8 array, or None: the grid alone), with the colour scale."""
    rows, cols = grid
    title = plain(title)
    w = np.asarray(weights, dtype=float).reshape(rows, cols)
    fig = _figure(4.6, 4.0)
    ax = fig.add_subplot()
    if image is not None:
        h, wd = image.shape[:2]
        ax.imshow(image, extent=(0, wd, h, 0))
        im = ax.imshow(w, cmap="inferno", alpha=0.55, extent=(0, wd, h, 0), interpolation="nearest")
    else:
        im = ax.imshow(w, cmap="inferno", interpolation="nearest")
        title += " (no image)"
    ax.set(title=f"{title}\n(uniform: {1 / w.size:.4f} each)", xticks=[], yticks=[])
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention weight")
    return png(fig)


def words(tokens: Sequence[tuple[str, float]], title: str) -> bytes:
    """Words in text order on a background whose strength is the word's weight (the
    heaviest word darkest), wrapped into lines."""
    from matplotlib import colormaps

    cmap = colormaps["YlOrRd"]
    top = max((w for _, w in tokens), default=1.0) or 1.0
    per_line, n = 8, len(tokens)
    lines = max(1, -(-n // per_line))
    fig = _figure(6.4, 0.5 + 0.42 * lines)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(plain(title), fontsize=10)
    for k, (word, w) in enumerate(tokens):
        r, c = divmod(k, per_line)
        ax.text((c + 0.5) / per_line, 1 - (r + 0.5) / lines, f"{plain(word)}\n{w:.3f}", ha="center", va="center", fontsize=8,
                bbox={"facecolor": cmap(0.9 * w / top), "edgecolor": "none", "pad": 2},
                color="white" if w / top > 0.6 else "black", transform=ax.transAxes)
    return png(fig)


def thumbnails(items: Sequence[tuple[np.ndarray | None, str, float]], title: str) -> bytes:
    """Earlier posts (image or None, caption, weight) side by side, each titled by its weight."""
    n = max(1, len(items))
    fig = _figure(min(1.6 * n, 12), 2.2)
    fig.suptitle(plain(title), fontsize=10)
    for k, (img, caption, w) in enumerate(items):
        ax = fig.add_subplot(1, n, k + 1)
        if img is not None:
            ax.imshow(img)
        ax.set_title(f"{w:.3f}", fontsize=9)
        ax.set_xlabel(plain(caption[:14]), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    return png(fig)
