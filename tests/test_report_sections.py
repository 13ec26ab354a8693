"""Issue 22, item 10: the report's sections beyond the table and the verdict. Train-vs-valid
curves with the restored step marked (torch heads), no curve axes for a head fitted in one go,
runs overlaid per dataset, a tree head's feature importances (saved at train time, drawn
without lightgbm), a per-user error table (predictions keep `user_id`), PR curves per label for
embedding runs, only the needed prediction columns read, and no empty axes in any figure.

Runs are written as their files (as tests/test_report.py does), so every number is known."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.evaluate import breakdown, curves, plots
from pipeline.evaluate.report import build_report
from pipeline.head.tabular import IMPORTANCES
from pipeline.run.rundir import Run, RunWriter, load_run
from pipeline.train import tasks
from pipeline.train.data import HeadData
from tests import _tiny_data as tiny

SPLIT = {"kind": "fractions", "fractions": [0.6, 0.2, 0.2]}


def _run(runs: Path, name: str, head: str, task: str, crit: str, log: list[dict], preds: pl.DataFrame | None,
         test: dict, dataset: str = "d", importances: list | None = None) -> Run:
    w = RunWriter(runs, name)
    w.write_config({"head": head, "task": {"name": task, "criterion": crit}, "dataset": dataset, "ablate": [],
                    "stores": {}, "split": SPLIT})
    for e in log:
        w.log(e)
    if preds is not None:
        w.write_predictions(preds)
    if importances is not None:
        w.model_dir.mkdir(exist_ok=True)
        (w.model_dir / IMPORTANCES).write_text(json.dumps({"kind": "gain", "features": importances}))
    w.write_metrics({"valid": test, "test": test, "std": {"valid": {}, "test": {}}, "repeats": [test]})
    w.close()
    return load_run(runs / name)


def _torch_log(crit: str, values: list[float], restored: int) -> list[dict]:
    """What a torch head logs: step, criterion, train loss and best step at each evaluation, then repeat_end."""
    out = [{"event": "valid", "repeat": 0, "seed": 0, "step": 10 * (i + 1), f"valid_{crit}": v,
            "train_loss": 2.0 - 0.1 * i, "best_step": restored} for i, v in enumerate(values)]
    return out + [{"event": "repeat_end", "repeat": 0, "restored_step": restored}]


def _regression_preds(errors: dict[str, list[float]], train: dict[str, int]) -> pl.DataFrame:
    """Test rows of each user with the given errors (y = 5), and `train[u]` training rows."""
    rows = [(f"{u}-t{i}", "test", u, 5.0, 5.0 + e) for u, es in errors.items() for i, e in enumerate(es)]
    rows += [(f"{u}-r{i}", "train", u, 5.0, 5.0) for u, k in train.items() for i in range(k)]
    return pl.DataFrame(rows, schema=["post_id", "split", "user_id", "y", "yhat"], orient="row")


@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib Figure the report draws, kept for inspection."""
    figures: list = []
    real = plots.png

    def keep(fig):
        figures.append(fig)
        return real(fig)

    monkeypatch.setattr(plots, "png", keep)
    return figures


def _has_data(ax) -> bool:
    """A visible Axes shows data: a line with a finite value (a restored-step marker alone does
    not count), a bar of non-zero size, a scatter's points or an image."""
    lines = [ln for ln in ax.get_lines() if not str(ln.get_label()).startswith("restored")]
    if any(np.isfinite(np.asarray(ln.get_ydata(), dtype=float)).any() for ln in lines):
        return True
    if any(p.get_height() or p.get_width() for p in ax.patches):
        return True
    return bool(ax.images) or any(len(c.get_offsets()) for c in ax.collections)


def assert_no_empty_axes(figures) -> None:
    assert figures
    for fig in figures:
        for ax in fig.get_axes():
            if ax.axison:
                assert _has_data(ax), f"empty axes: {ax.get_title() or fig.get_suptitle()!r}"


def _tables(text: str) -> list[list[list[str]]]:
    """Each table of an HTML piece as rows of cell texts (the head row included)."""
    return [[re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", t)]
            for t in re.findall(r"<table.*?</table>", text, flags=re.S)]


@pytest.fixture
def world(tmp_path):
    runs = tmp_path / "runs"
    preds = _regression_preds({"a": [1.0, -3.0], "b": [0.5], "c": [2.0, 2.0, -2.0]}, {"a": 4, "c": 1})
    torch = _run(runs, "uhan-1", "uhan", "regression", "mse", _torch_log("mse", [1.5, 1.1, 1.3], restored=20), preds,
                 {"mse": 1.0, "mae": 0.8, "src": 0.5, "medae": 0.7})
    lgb_log = [{"event": "valid", "repeat": 0, "seed": 0, "step": i + 1, "valid_mse": 1.6 - 0.05 * i} for i in range(8)]
    lgb = _run(runs, "lightgbm-1", "lightgbm", "regression", "mse", lgb_log, preds,
               {"mse": 1.1, "mae": 0.9, "src": 0.4, "medae": 0.8},
               importances=[["user_mean", 40.0], ["visual_3", 12.5], ["n_tokens", 3.0], ["tok_7", 0.0]])
    svr = _run(runs, "svr-1", "svr", "regression", "mse", [{"event": "valid", "repeat": 0, "step": 0, "value": 1.2}],
               preds, {"mse": 1.2, "mae": 1.0, "src": 0.3, "medae": 0.9})
    labels = [["cat"], ["cat", "dog"], ["dog"], [], ["cat"], ["dog"]]
    conf = [{"cat": c, "dog": d} for c, d in ((0.9, 0.2), (0.8, 0.3), (0.1, 0.9), (0.2, 0.1), (0.7, 0.6), (0.3, 0.4))]
    emb = pl.DataFrame({"post_id": [f"e{i}" for i in range(6)], "split": "test", "user_id": "a", "labels": labels,
                        "top_labels": [["cat", "dog"]] * 6, "top_confidence": [[0.5, 0.5]] * 6,
                        "embedding": [[0.0, 1.0]] * 6, "confidence": conf})
    dman = _run(runs, "dman-1", "dman", "embedding", "map", _torch_log("map", [0.3, 0.5], restored=20), emb,
                {"map": 0.6, "micro_f1": 0.5}, dataset="e")
    rank = pl.DataFrame({"post_id": [f"q{i}" for i in range(8)], "split": "test",
                         "user_id": ["x", "x", "x", "y", "y", "y", "z", "z"], "label": [1, 0, 0, 1, 0, 0, 1, 0],
                         "group": [0] * 8, "score": [3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 1.0]})
    amnl = _run(runs, "amnl-1", "amnl", "ranking", "auc", [], rank, {"p@1": 0.5, "p@3": 0.4, "auc": 0.5}, dataset="r")
    return {"torch": torch, "lgb": lgb, "svr": svr, "dman": dman, "amnl": amnl}


def test_torch_run_gets_train_vs_valid_with_the_restored_step(world, drawn):
    figs, notes = curves.training_figure(world["torch"])
    assert len(figs) == 1 and not notes and len(drawn) == 1
    axes = drawn[0].get_axes()
    assert len(axes) == 2  # the validation criterion and, on its twin, the training loss
    labels = {str(ln.get_label()) for ax in axes for ln in ax.get_lines()}
    assert {"valid mse", "train loss", "restored step 20"} <= labels
    marker = next(ln for ln in axes[0].get_lines() if ln.get_label() == "restored step 20")
    assert list(marker.get_xdata()) == [20, 20]
    assert any("restored" in t.get_text() and "20" in t.get_text() for t in axes[0].texts)
    assert_no_empty_axes(drawn)


def test_heads_without_a_step_log_get_a_note_and_no_axes(world, drawn):
    figs, notes = curves.training_figure(world["svr"])
    assert figs == [] and drawn == [] and "fitted in one go" in notes[0]
    figs, _ = curves.training_figure(world["amnl"])  # no log at all
    assert figs == [] and drawn == []
    figs, _ = curves.training_figure(world["lgb"])  # rounds logged, no training loss: one axes, no twin
    assert len(figs) == 1 and len(drawn[0].get_axes()) == 1
    assert not any("train" in str(ln.get_label()) for ln in drawn[0].get_axes()[0].get_lines())


def test_lightgbm_importances_drawn_from_the_saved_file_without_lightgbm(world, drawn, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # importing lightgbm would fail
    assert breakdown.importances(world["torch"]) == []  # a head that saved none: nothing
    figs = breakdown.importances(world["lgb"])
    assert len(figs) == 1 and "lightgbm-1: feature importances" in figs[0]
    ax = drawn[0].get_axes()[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["user_mean", "visual_3", "n_tokens"]  # largest first; a zero-gain column left out
    assert [p.get_width() for p in ax.patches] == [40.0, 12.5, 3.0]
    assert_no_empty_axes(drawn)


def test_per_user_errors_hand_checked(world, monkeypatch):
    preds = world["torch"].predictions()
    assert "user_id" in preds.columns
    (every,) = _tables(text := breakdown.user_errors(preds))  # 3 users: one table lists them all
    assert every[0] == ["user", "test posts", "train posts", "MAE", "MSE"] and "test errors of all 3 users" in text
    # c: errors 2, 2, -2 -> MAE 2, MSE 4; a: 1, -3 -> MAE 2, MSE 5; b: 0.5 -> MAE 0.5, MSE 0.25
    assert every[1:] == [["c", "3", "1", "2.0000", "4.0000"], ["a", "2", "4", "2.0000", "5.0000"],
                         ["b", "1", "0", "0.5000", "0.2500"]]
    monkeypatch.setattr(breakdown, "TOP_USERS", 1)
    monkeypatch.setattr(breakdown, "MIN_ROWS", 2)
    top, worst = _tables(text := breakdown.user_errors(preds))
    assert top[1:] == [["c", "3", "1", "2.0000", "4.0000"]] and "(of 3)" in text
    assert worst[1:] == [["a", "2", "4", "2.0000", "5.0000"], ["c", "3", "1", "2.0000", "4.0000"]]  # b: too few
    old = breakdown.user_errors(preds.drop("user_id"))
    assert "no user_id" in old and "<table" not in old


def test_per_user_auc_hand_checked(world):
    (every,) = _tables(breakdown.user_aucs(world["amnl"].predictions()))
    # x ranks its positive first (1.0), y last (0.0), z ties it with its negative (0.5)
    assert every[1:] == [["x", "3", "1", "1.0000"], ["y", "3", "1", "0.0000"], ["z", "2", "1", "0.5000"]]


def test_embedding_run_gets_pr_curves_per_label_with_ap(world, drawn):
    test = world["dman"].predictions()
    figs = breakdown.pr_curves(world["dman"], test)
    assert len(figs) == 1 and "dman-1: PR curves" in figs[0]
    titles = sorted(ax.get_title() for ax in drawn[0].get_axes())
    # cat: positives e0, e1, e4 have the three highest confidences -> AP 1; dog: e2 (0.9), e5 (0.4), e1 (0.3)
    # come 1st, 3rd and 4th -> AP (1 + 2/3 + 3/4) / 3
    assert titles == ["cat: AP 1.000 (n=3)", f"dog: AP {(1 + 2 / 3 + 3 / 4) / 3:.3f} (n=3)"]
    assert_no_empty_axes(drawn)
    old = breakdown.pr_curves(world["dman"], test.drop("confidence"))
    assert "top-3" in old[0] and "<img" not in old[0]


def test_runs_overlaid_per_dataset(world, drawn):
    from pipeline.evaluate.compare import comparison_rows

    regression = [world["torch"], world["lgb"], world["svr"]]
    out = curves.overlaid(regression, comparison_rows(regression))
    assert out.count("<img") == 1 and len(drawn) == 1
    ax = drawn[0].get_axes()[0]
    assert [str(ln.get_label()) for ln in ax.get_lines() if not str(ln.get_label()).startswith("_")] == \
        ["uhan-1", "lightgbm-1"]  # svr has no curve
    star = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [20]  # uhan's restored step
    assert curves.overlaid([world["dman"]], comparison_rows([world["dman"]])) == ""  # alone on its dataset


def test_each_section_only_where_it_applies_and_no_empty_axes(world, drawn, monkeypatch):
    asked: list = []
    real = Run.predictions

    def spy(self, columns=None):
        asked.append(columns)
        return real(self, columns)

    monkeypatch.setattr(Run, "predictions", spy)
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    text = build_report(list(world.values()))
    alts = re.findall(r'alt="([^"]+)"', text)
    assert "uhan-1: validation" in alts and "lightgbm-1: validation" in alts and "svr-1: validation" not in alts
    assert [a for a in alts if a.endswith("feature importances")] == ["lightgbm-1: feature importances"]
    assert [a for a in alts if a.endswith("PR curves")] == ["dman-1: PR curves"]
    assert [a for a in alts if a.startswith("overlay")] == ["overlay: d score"]
    assert text.count('<table class="users">') == 4  # 3 regression runs, 1 ranking run, one table each (3 users)
    assert "fitted in one go" in text
    assert asked and all(c is not None and "embedding" not in c for c in asked)  # narrow reads only
    assert_no_empty_axes(drawn)


def test_predictions_keep_the_posts_user(tmp_path):
    posts = pl.DataFrame({"post_id": ["p1", "p2"], "user_id": ["u1", "u2"], "labels": [["a"], ["b"]]})
    from pipeline.train.tasks.embedding import EmbeddingOutput

    out = EmbeddingOutput(np.zeros((2, 2), np.float32), ["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]))
    p = tasks.get("embedding")().predictions(HeadData(posts, {}), out, "test")
    assert p["user_id"].to_list() == ["u1", "u2"] and p.columns[:3] == ["post_id", "split", "user_id"]
    parts = tiny.split_parts(tmp_path, 40, 0, tiny.GRID, tiny.TOKENS)
    test = parts["test"]
    task = tasks.get("regression")()
    r = task.predictions(test, np.zeros(len(test)), "test")
    assert r.columns == ["post_id", "split", "user_id", "y", "yhat"]
    assert r["user_id"].to_list() == test.posts["user_id"].cast(pl.Utf8).to_list()


@pytest.mark.slow
def test_trained_runs_save_what_the_report_draws(tmp_path, drawn, one_thread):
    """Real runs: lightgbm saves its importances with the model (the booster's gain per column),
    a torch head logs its train loss and restored step, predictions keep user_id; the report of
    both draws the importances, the marked curve and the per-user tables."""
    from pipeline.run.train import TrainOptions, train

    cache = tmp_path / "cache"
    tiny.make_dataset(cache, n=120, seed=2, stores=(tiny.GRID, tiny.TOKENS))
    common = dict(dataset="tiny", runs=tmp_path / "runs", cache=cache, split="0.6,0.2,0.2")
    lgb = load_run(train(TrainOptions(head="lightgbm", stores={"visual": tiny.GRID, "text": "tokens"},
                                      sets={"n_estimators": 30, "n_jobs": 1, "min_child_samples": 5}, **common)))
    uhan = load_run(train(TrainOptions(head="uhan", stores={"visual": tiny.GRID, "text": "tokens"},
                                       sets={"max_steps": 6, "eval_every": 3, "batch_size": 16, "dim": 16,
                                             "device": "cpu"}, **common)))
    saved = json.loads((lgb.dir / "model" / IMPORTANCES).read_text())
    head = lgb.load_head()
    gain = dict(zip(head.booster.feature_name(), head.booster.feature_importance(importance_type="gain")))
    assert saved["kind"] == "gain" and [n for n, _ in saved["features"]] == sorted(gain, key=lambda n: (-gain[n], n))
    assert all(v == pytest.approx(gain[n]) for n, v in saved["features"])
    assert {"user_id", "visual_missing"} <= set(gain)
    log = curves.read_log(uhan)[0]
    assert log.has_train and log.restored in log.steps
    for run in (lgb, uhan):
        assert run.predictions(["user_id"])["user_id"].null_count() == 0
    text = build_report([uhan, lgb])
    alts = re.findall(r'alt="([^"]+)"', text)
    assert f"{lgb.name}: feature importances" in alts and f"{uhan.name}: feature importances" not in alts
    assert f"{uhan.name}: validation" in alts and text.count('<div class="users">') == 2
    assert any(str(ln.get_label()) == f"restored step {log.restored}" for f in drawn for ax in f.get_axes()
               for ln in ax.get_lines())
    assert_no_empty_axes(drawn)
