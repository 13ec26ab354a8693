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
from typing import Any, Sequence

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


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str,
           marks: dict[str, float] | None = None) -> bytes:
    """One line per series (e.g. one per repeat, or per run), markers at the points; `marks`
    stars a series' point at that x (a run's restored step)."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, (x, y) in series.items():
        ys = [np.nan if v is None else v for v in y]
        (line,) = ax.plot(x, ys, marker="o", ms=3, lw=1.2, label=plain(label))
        at = (marks or {}).get(label)
        if at is not None and at in list(x):
            ax.plot([at], [ys[list(x).index(at)]], marker="*", ms=11, color=line.get_color(), ls="none")
    ax.set(xlabel=plain(xlabel), ylabel=plain(ylabel), title=plain(title))
    if len(series) > 1:
        ax.legend(fontsize=8)
    return png(fig)


def train_valid(series: dict[str, Any], criterion: str, title: str) -> bytes:
    """Per repeat (a `pipeline.evaluate.curves.Curve` each), the validation criterion (left axis, solid) and the training loss (right
    axis, dashed; only when one was logged) against the step, and the restored step as a
    dotted vertical line labelled with its step."""
    fig = _figure(5.2, 3.6)
    ax = fig.add_subplot()
    right = ax.twinx() if any(c.has_train for c in series.values()) else None
    handles = []
    for k, (label, c) in enumerate(series.items()):
        colour = f"C{k % 10}"
        tag = f" ({plain(label)})" if len(series) > 1 else ""
        handles += ax.plot(c.steps, _nan(c.valid), marker="o", ms=3, lw=1.2, color=colour,
                           label=f"valid {plain(criterion)}{tag}")
        if right is not None and c.has_train:
            handles += right.plot(c.steps, _nan(c.train), ls="--", lw=1, color=colour, alpha=0.8,
                                  label=f"train loss{tag}")
        if c.restored is not None:
            handles.append(ax.axvline(c.restored, color=colour, ls=":", lw=1.5, label=f"restored step {c.restored:,}{tag}"))
            ax.annotate(f"restored\nstep {c.restored:,}", (c.restored, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", va="top", fontsize=7, color=colour)
    ax.set(xlabel="step", ylabel=f"valid {plain(criterion)}", title=plain(title))
    if right is not None:
        right.set_ylabel("train loss")
    ax.legend(handles=handles, fontsize=7, loc="best")
    return png(fig)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [np.nan if v is None else v for v in values]


def pr_grid(panels: Sequence[tuple[str, np.ndarray, np.ndarray, float, int]], title: str) -> bytes:
    """Small multiples, one precision-recall curve per label: (label, recall, precision, AP,
    positives) each; AP and the positives in each panel's title, the label prior dotted."""
    n = len(panels)
    cols = min(4, n)
    rows = -(-n // cols)
    fig = _figure(2.3 * cols + 0.4, 2.1 * rows + 0.5)
    fig.suptitle(plain(title), fontsize=10)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.remove()  # no empty axes in the last row
            continue
        label, recall, precision, ap, positives = panels[k]
        ax.step(recall, precision, where="post", lw=1.2, color="#3465a4")
        ax.set_title(f"{plain(label)}: AP {ap:.3f} (n={positives})", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=7)
    for k in range(max(0, n - cols), n):  # the lowest panel of each column
        axes.flat[k].set_xlabel("recall", fontsize=8)
        axes.flat[k].xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    return png(fig)


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
         counts: Sequence[int] | None = None, xlabel: str = "", horizontal: bool | None = None) -> bytes:
    """Vertical bars (horizontal past 12 labels, or when asked, so long label sets stay
    readable); `counts` are written on the bars (n per bin)."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=float)
    labels, title, ylabel, xlabel = [plain(t) for t in labels], plain(title), plain(ylabel), plain(xlabel)
    many = len(labels) > 12 if horizontal is None else horizontal
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
