"""benchmarks/_seeds.py: per-seed metrics of a `--repeats` run and paired differences to the full model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import _seeds  # noqa: E402


def _run(tmp_path: Path, name: str, aucs: list[float]) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"repeats": [{"seed": k, "test": {"auc": v}} for k, v in enumerate(aucs)]}))
    return d


def test_per_seed_and_paired_lines(tmp_path):
    full, base = _run(tmp_path, "full", [0.7, 0.8, 0.6]), _run(tmp_path, "base", [0.6, 0.7, 0.65])
    rows = [{"label": "full", "seeds": {"auc": _seeds.per_seed(full, "auc")}},
            {"label": "base", "seeds": {"auc": _seeds.per_seed(base, "auc")}}]
    assert rows[1]["seeds"]["auc"] == [0.6, 0.7, 0.65]
    comp = _seeds.comparisons(rows, "full", "auc")
    assert "difference" not in comp[0] and comp[1]["difference"]["mean"] == pytest.approx(0.05)
    lines = _seeds.comparison_lines(rows, "full", "auc")
    assert lines[0].startswith("full") and "0.700 [0.452, 0.948]" in lines[0]  # 0.7 -/+ 4.303 * 0.1 / sqrt(3)
    assert lines[1].endswith("full - this: +0.050 [-0.165, +0.265], wins 2/3, within noise")
