"""`pipe evaluate`: one comparison row per run, written as CSV and Markdown.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipeline.train.rundir import Run


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One flat row per run: identity, then test metrics (mean and std over repeats) and valid MSE."""
    from pipeline.train.metrics import METRICS

    rows = []
    for r in runs:
        m = r.metrics or {}
        row: dict[str, Any] = {
            "run": r.name, "head": r.head, "ablate": ",".join(r.config.get("ablate", [])),
            "stores": " ".join(r.stores.values()), "split": _split_text(r.config.get("split", {})),
            "repeats": len(m.get("repeats", [])) if m else 0, "status": "done" if m else "incomplete",
        }
        for k in METRICS:
            row[f"test_{k}"] = m.get("test", {}).get(k) if m else None
            row[f"test_{k}_std"] = m.get("std", {}).get("test", {}).get(k) if m else None
        row["valid_mse"] = m.get("valid", {}).get("mse") if m else None
        rows.append(row)
    return rows


def _split_text(s: dict[str, Any]) -> str:
    if s.get("kind") == "uhan":
        return f"uhan:{s.get('seed', 0)}"
    return ",".join(f"{f:g}" for f in s.get("fractions", []))


def mean_pm_std(row: dict[str, Any], metric: str, digits: int = 4) -> str:
    """`m ± s` of a test metric of a comparison row; the mean alone for a single repeat."""
    mean, std = row[f"test_{metric}"], row[f"test_{metric}_std"]
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None and row["repeats"] > 1 else f"{mean:.{digits}f}"


def write_comparison(rows: list[dict[str, Any]], prefix: str | Path) -> tuple[Path, Path]:
    """PREFIX.csv (every column, means and stds apart) and PREFIX.md (mean ± std)."""
    from pipeline.train.metrics import METRICS

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = prefix.with_name(prefix.name + ".csv"), prefix.with_name(prefix.name + ".md")
    pl.DataFrame(rows, infer_schema_length=None).write_csv(csv_path)
    head = ["run", "head", "ablations", "repeats", *[f"test {k.upper()}" for k in METRICS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"], r["head"], r["ablate"] or "—", str(r["repeats"]),
                 *[mean_pm_std(r, k) for k in METRICS]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path
