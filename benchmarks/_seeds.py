"""What every `benchmarks/planted_*.py` reports over seeds (issue 19: single runs decide nothing).

Each row of a benchmark is one `pipe train --repeats K` run (seeds 0..K-1 of the head: weight
init, batch order, dropout) on the same split and the same candidate lists as every other
row, so a row and the full model can be compared seed by seed: the paired difference
`full - row` (mean, 95 % t-interval, seeds the full model wins), "within noise" where the
interval crosses zero (pipeline/train/metrics.py: `paired_difference`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.train.metrics import describe_difference, mean_interval, paired_difference


def add_seeds_flag(ap: argparse.ArgumentParser, default: int = 5) -> None:
    ap.add_argument("--seeds", "--repeats", dest="seeds", type=int, default=default,
                    help=f"seeds per row (`pipe train --repeats`; default {default}; 1-2 for a quick look, no interval at 1)")


def per_seed(run_dir: Path, metric: str) -> list[float]:
    """Test `metric` of each repeat of a run, in seed order (NaN where a repeat has none)."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    return [float("nan") if r["test"].get(metric) is None else float(r["test"][metric]) for r in m["repeats"]]


def summary(values: list[float], digits: int = 3) -> str:
    """`0.612 [0.580, 0.644]` (mean and 95 % interval over seeds), or the mean alone for one seed."""
    s = mean_interval(values)
    f = f"{{:.{digits}f}}"
    return f.format(s["mean"]) + (f" [{f.format(s['low'])}, {f.format(s['high'])}]" if s["n"] > 1 else "")


def comparisons(rows: list[dict], full: str, metric: str, higher_is_better: bool = True) -> list[dict]:
    """Per row (a dict with `label` and `seeds`: {metric: [per-seed values]}): its mean and interval
    over seeds and, for a row other than `full`, the paired difference `full - row`."""
    ref = next((r for r in rows if r["label"] == full), None)
    out = []
    for r in rows:
        vals = r["seeds"][metric]
        item = {"label": r["label"], "metric": metric, **mean_interval(vals)}
        if ref is not None and r is not ref and len(vals) == len(ref["seeds"][metric]):
            item["difference"] = paired_difference(ref["seeds"][metric], vals, higher_is_better)
        out.append(item)
    return out


def comparison_lines(rows: list[dict], full: str, metric: str, higher_is_better: bool = True) -> list[str]:
    """Printable lines of `comparisons`: `label  metric mean [interval]   full - label: +d [lo, hi], wins w/n`."""
    lines = []
    for r, c in zip(rows, comparisons(rows, full, metric, higher_is_better)):
        line = f"{c['label']:<24} {metric} {summary(r['seeds'][metric])}"
        if "difference" in c:
            line += f"   {full} - this: {describe_difference(c['difference'])}"
        lines.append(line)
    return lines
