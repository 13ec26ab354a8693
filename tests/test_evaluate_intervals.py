"""`pipe evaluate` and `pipe report` judge runs over seeds (issue 19, item 1): the mean and
95 % Student-t interval of each test metric, and the paired difference of the criterion to
the best comparable run where both ran the same seeds, against hand-computed values."""
from __future__ import annotations

import json
import math
from io import StringIO

import polars as pl
import pytest
from typer.testing import CliRunner

from tests import _tiny_data as tiny
from pipeline import api
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.evaluate.compare import comparison_rows, verdicts
from pipeline.evaluate.report import build_report
from pipeline.run.rundir import load_run

_load_commands()
T2 = 4.302652729749462  # t_{0.975} with 2 degrees of freedom (3 seeds)
REG = ("mse", "mae", "src", "medae")


def _seeds(mse: list[float], first: int = 0) -> dict[int, dict]:
    """seed -> test metrics with the given MSEs (the criterion) and fixed other metrics."""
    return {first + k: {"mse": v, "mae": 0.8, "src": 0.5, "medae": 0.7} for k, v in enumerate(mse)}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    tiny.fake_run(root, "best", head="uhan", per_seed=_seeds([1.0, 1.2, 1.1]))
    tiny.fake_run(root, "close", head="lightgbm", per_seed=_seeds([1.3, 1.5, 1.2]))
    tiny.fake_run(root, "far", head="svr", per_seed=_seeds([1.5, 1.8, 1.6]), log_only=True)  # seeds in the log only
    tiny.fake_run(root, "other-seeds", head="hisave", per_seed=_seeds([1.2, 1.3, 1.4], first=5))
    tiny.fake_run(root, "one", dataset="c", head="uhan", per_seed=_seeds([1.05]))
    tiny.fake_run(root, "b1", dataset="b", head="uhan", per_seed=_seeds([1.0, 1.2, 1.1]))
    tiny.fake_run(root, "b2", dataset="b", head="svr", per_seed=_seeds([1.3, 1.5, 1.2], first=3))
    return root


def _rows(root, names):
    return {r["run"]: r for r in comparison_rows([load_run(root / n) for n in names])}


def test_interval_over_seeds_and_none_for_one_seed(runs):
    rows = _rows(runs, ["best", "far", "one"])
    best = rows["best"]
    assert best["repeats"] == 3 and best["test_mse"] == pytest.approx(1.1)
    half = T2 * 0.1 / math.sqrt(3)  # sample std of 1.0, 1.2, 1.1 is 0.1
    assert (best["test_mse_low"], best["test_mse_high"]) == pytest.approx((1.1 - half, 1.1 + half), abs=1e-9)
    assert best["test_mae_low"] == pytest.approx(0.8) and best["test_mae_high"] == pytest.approx(0.8)  # no spread
    assert rows["far"]["test_mse_low"] == pytest.approx(1.6333333 - T2 * 0.1527525 / math.sqrt(3), abs=1e-6)
    assert rows["one"]["test_mse_low"] is None and rows["one"]["test_mse_high"] is None  # K = 1: no interval


def test_paired_difference_to_the_best_of_the_group(runs):
    rows = _rows(runs, ["best", "close", "far", "other-seeds", "one", "b1", "b2"])
    assert rows["best"]["paired_to_best"] is None  # the best itself
    close = rows["close"]["paired_to_best"]
    # best - close seed by seed: -0.3, -0.3, -0.1: mean -0.2333, sample std sqrt(1/75), half-width t/15
    assert close["to"] == "best" and close["metric"] == "mse" and close["n"] == 3
    assert close["mean"] == pytest.approx(-0.7 / 3)
    assert (close["low"], close["high"]) == pytest.approx((-0.7 / 3 - T2 / 15, -0.7 / 3 + T2 / 15))
    assert close["wins"] == 3 and close["within_noise"] is True  # the best wins every seed, yet within noise
    far = rows["far"]["paired_to_best"]  # -0.5, -0.6, -0.5: half-width t/30
    assert (far["low"], far["high"]) == pytest.approx((-1.6 / 3 - T2 / 30, -1.6 / 3 + T2 / 30))
    assert far["within_noise"] is False and far["wins"] == 3
    assert rows["other-seeds"]["paired_to_best"] is None  # seeds 5-7 against 0-2: nothing to pair
    assert rows["one"]["paired_to_best"] is None and rows["b2"]["paired_to_best"] is None
    json.dumps(list(rows.values()), allow_nan=False)  # `pipe evaluate --json` prints them


def test_verdict_uses_the_paired_interval_and_falls_back_when_seeds_differ(runs):
    said = verdicts(comparison_rows([load_run(runs / n) for n in ("best", "close", "far", "b1", "b2", "one")]))
    a, b, one = said
    assert "the best is best (uhan)" in a and "below close (lightgbm)" in a
    assert "paired over their 3 seeds, best - close: -0.2333 [-0.5202, +0.0535], wins 3/3, within noise." in a
    assert "standard error" not in a
    assert "the best is b1 (uhan)" in b and "standard error" in b and "paired" not in b  # seeds 0-2 against 3-5
    assert "the only run" in one


def test_tables_show_the_interval_and_the_paired_difference(runs, tmp_path):
    rows = api.evaluate([runs / n for n in ("best", "close", "one")], out=tmp_path / "cmp")
    md = (tmp_path / "cmp.md").read_text()
    assert "| 1.1000 [0.8516, 1.3484] |" in md and "| 1.0500 |" in md
    assert "| best - this: -0.2333 [-0.5202, +0.0535], wins 3/3, within noise |" in md
    csv = pl.read_csv(tmp_path / "cmp.csv").sort("run")
    assert csv["test_mse_high"].to_list()[0] == pytest.approx(rows[0]["test_mse_high"])
    assert csv["paired_to"].to_list() == [None, "best", None]
    assert csv["paired_within_noise"].to_list()[1] is True
    page = build_report([load_run(runs / n) for n in ("best", "close", "one")])
    assert "1.1000 [0.8516, 1.3484]" in page
    assert "best - this: -0.2333 [-0.5202, +0.0535], wins 3/3, within noise" in page


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_tables_with_intervals_fit(runs, monkeypatch, width):
    from rich.console import Console

    import pipeline.cli.train as cli_train

    screen = Console(width=width, file=StringIO(), color_system=None)
    monkeypatch.setattr(cli_train, "results_console", lambda: screen)
    r = CliRunner().invoke(app, ["evaluate", "best", "close", "far", "one", "--runs", str(runs),
                                 "--out", str(runs.parent / "cmp")])
    assert r.exit_code == 0, r.output
    text = screen.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    assert "1.100 [0.852, 1.348]" in text and "-0.233 [-0.520, +0.054] 3/3 ~" in text
