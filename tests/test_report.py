"""`pipe report`: one self-contained HTML page for runs of every task. The runs are written
here as their files (config, log, predictions, metrics), so the page is checked against
known numbers: every run is listed, every plot decodes and is not blank, the best value
of a column is marked, an ablation shows its change, nothing points to the network."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import api
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.core import paths
from pipeline.evaluate.report import build_report
from pipeline.run.rundir import RunWriter, load_run

_load_commands()
T0 = datetime(2021, 1, 1, tzinfo=timezone.utc)


def _run(runs: Path, name: str, task: str, head: str, test: dict, std: dict | None = None, ablate=(),
         preds: pl.DataFrame | None = None, done: bool = True, crit: str = "mse") -> None:
    w = RunWriter(runs, name)
    w.write_config({"head": head, "task": {"name": task, "criterion": crit}, "dataset": "rep", "ablate": list(ablate),
                    "cache": str(runs.parent / "cache"), "stores": {"visual": {"extractor_id": "vgg16-x"}},
                    "split": {"kind": "fractions", "fractions": [0.7, 0.1, 0.2]}})
    for rep in range(2 if std else 1):
        for step, v in ((0, 2.0), (64, 1.5), (128, 1.2 + rep / 10)):
            w.log({"event": "valid", "repeat": rep, "seed": rep, "step": step, f"valid_{crit}": v})
    if preds is not None:
        w.write_predictions(preds)
    if done:
        std = std or {k: None for k in test}  # as pipe train writes one repeat
        w.write_metrics({"valid": test, "test": test, "std": {"valid": std, "test": std},
                         "repeats": [test] * (1 + any(v is not None for v in std.values()))})
    else:
        w.mark_interrupted("KeyboardInterrupt")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs, cache = root / "runs", root / "cache"
    rng = np.random.default_rng(0)
    n = 6000  # more than the 5,000 points a scatter draws
    users = [f"u{i % 40 if i % 3 else i % 7}" for i in range(n)]
    posts = pl.DataFrame({"post_id": [f"p{i}" for i in range(n)], "user_id": users,
                          "posted_at": [T0 + timedelta(hours=i) for i in range(n)]})
    p = paths.posts_path("rep", cache)
    p.parent.mkdir(parents=True)
    posts.write_parquet(p)
    y = rng.normal(5, 1, n)
    split = ["train"] * 3000 + ["valid"] * 500 + ["test"] * (n - 3500)
    reg = lambda noise: pl.DataFrame({"post_id": posts["post_id"], "split": split, "y": y,  # noqa: E731
                                      "yhat": y + rng.normal(0, noise, n)})
    _run(runs, "uhan-full", "regression", "uhan", {"mse": 0.5, "mae": 0.6, "src": 0.7, "medae": 0.4},
         {"mse": 0.01, "mae": 0.01, "src": 0.02, "medae": 0.01}, preds=reg(0.7))
    _run(runs, "uhan-no-user", "regression", "uhan", {"mse": 0.9, "mae": 0.8, "src": 0.5, "medae": 0.6},
         ablate=["user"], preds=reg(0.95))
    _run(runs, "hisave-x", "regression", "hisave", {"mse": 0.4, "mae": 0.7, "src": 0.6, "medae": 0.5}, preds=reg(0.6))
    _run(runs, "dualatt-killed", "regression", "dualatt", {}, done=False)
    m = 300
    rank = pl.DataFrame({"post_id": [f"p{i}" for i in range(m)], "split": "test", "user_id": [f"u{i // 10}" for i in
                                                                                            range(m)],
                         "label": [int(i % 10 == 0) for i in range(m)], "group": [i // 10 for i in range(m)],
                         "score": rng.normal(0, 1, m) + np.array([i % 10 == 0 for i in range(m)])})
    _run(runs, "amnl-a", "ranking", "amnl", {"p@1": 0.4, "p@3": 0.3, "auc": 0.7}, preds=rank, crit="auc")
    labs = [["cat", "dog"][: 1 + i % 2] for i in range(m)]
    emb = pl.DataFrame({"post_id": [f"p{i}" for i in range(m)], "split": "test", "labels": labs,
                        "top_labels": [["cat", "dog", "sky"]] * m, "top_confidence": [[0.9, 0.6, 0.1]] * m,
                        "embedding": [[0.0, 1.0]] * m})
    _run(runs, "dman-a", "embedding", "dman", {"map": 0.6, "micro_f1": 0.5, "p@1": 0.8, "p@5": 0.6}, preds=emb,
         crit="map")
    names = ["uhan-full", "uhan-no-user", "hisave-x", "dualatt-killed", "amnl-a", "dman-a"]
    return {"root": root, "runs": runs, "cache": cache, "names": names}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.tables, self.best, self.links = 0, 0, []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("src", ""), a.get("alt", "")))
        self.tables += tag == "table" and a.get("class") == "cmp"  # comparison tables (not per-user ones)
        self.best += tag == "td" and a.get("class") == "best"
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith(("#", "data:"))]

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.mark.slow
def test_report_lists_every_run_and_every_plot_decodes(world, tmp_path):
    out = api.report([world["runs"] / n for n in world["names"]], out=tmp_path / "report.html")
    text = out.read_text()
    assert not re.search(r"https?:", text) and "<script" not in text
    page = _parse(text)
    assert page.tables == 3 and not page.links  # one table per task; only in-page anchors and data URIs
    words = " ".join(page.text)
    for name in world["names"]:
        assert f'id="run-{name}"' in text and f'href="#run-{name}"' in text and name in words
    assert "interrupted" in words and "no predictions to plot" in words
    alts = [alt for _, alt in page.images]
    for want in ("uhan-full: predicted vs true", "uhan-full: error by user activity", "uhan-full: error by time",
                 "uhan-full: validation", "amnl-a: P@k", "dman-a: AP", "dman-a: cross-modal P@k"):
        assert want in alts, want
    for src, alt in page.images:
        assert src.startswith("data:image/png;base64,")
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"))
        assert im.shape[0] > 50 and im.std() > 5, f"{alt} is blank"
    assert "6,000" not in words or "5,000 of 6,000 shown" in text  # the scatter is subsampled and says so


def test_best_marked_and_ablation_change(world):
    runs = [load_run(world["runs"] / n) for n in ("uhan-full", "uhan-no-user", "hisave-x")]
    text = build_report(runs)
    # best MSE 0.4 (hisave, lower is better), best SRC 0.7 (uhan-full, higher is better)
    assert re.search(r'<td class="best"[^>]*>0\.4000<', text)
    assert re.search(r'<td class="best"[^>]*>0\.7000 ± 0\.0200<', text)
    assert "Δ +0.4000" in text and 'class="delta worse"' in text  # no-user MSE 0.9 vs the full model's 0.5
    assert _parse(text).best == 4


@pytest.mark.slow
def test_report_cli_and_renders_in_a_browser_when_one_is_installed(world, tmp_path):
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", *[str(world["runs"] / n) for n in world["names"]], "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and str(out) in r.output
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nothing-here")])
    assert r.exit_code == 2 and "no run" in r.output
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome", "headless_shell") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("no headless Chromium on this machine (.ci/run installs one where it can)")
    shot = tmp_path / "shot.png"
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                          "--window-size=1400,2000", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert all(f'id="run-{n}"' in dom for n in world["names"])
    assert np.asarray(Image.open(shot).convert("L")).std() > 5


@pytest.mark.slow
def test_fifty_runs_stay_readable(world, tmp_path):
    runs = tmp_path / "many"
    for k in range(50):  # an interrupted run: the table row and one curve each keep the test quick
        shutil.copytree(world["runs"] / "dualatt-killed", runs / f"hisave-{k:02d}")
    text = build_report([load_run(p) for p in sorted(runs.iterdir())])
    page = _parse(text)
    assert page.tables == 1 and sum(f'href="#run-hisave-{k:02d}"' in text for k in range(50)) == 50
    assert "<details open>" not in text  # sections start folded
    assert len(text) < 20_000_000


def test_a_curve_without_a_finite_value_is_a_note_not_empty_axes(tmp_path):
    """A head fitted in one go logs evaluations without the criterion (svr): the report said so with
    a plot of empty axes; now it says so in words and draws no such plot."""
    from pipeline.evaluate.report import validation_curves

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "r", "head": "svr", "task": {"name": "regression",
                                                                                       "criterion": "mse"}}))
    (run / "train_log.jsonl").write_text(json.dumps({"event": "valid", "repeat": 0, "step": 0, "value": 1.0}) + "\n"
                                         + json.dumps({"event": "valid", "repeat": 1, "step": 3, "valid_mse": 0.5}) + "\n")
    assert list(validation_curves(load_run(run))) == ["repeat 1"]
