"""Issue 22: honest, readable results at first use (never-improved runs flagged, batch size capped)."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from tests import _tiny_data as tiny
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.evaluate.compare import comparison_rows
from pipeline.evaluate.report import build_report
from pipeline.run.rundir import load_run
from pipeline.run.train import TrainOptions, plan_run, train
from pipeline.train import tasks
from pipeline.train.data import HeadData

_load_commands()

UHAN = dict(head="uhan", stores={"visual": tiny.GRID, "text": tiny.TOKENS})
SMALL = {"dim": 8, "batch_size": 16, "device": "cpu", "eval_every": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=120, seed=2, stores=(tiny.GRID, tiny.TOKENS))
    return c


def _part(posts: pl.DataFrame, target: str = "score") -> HeadData:
    return HeadData(posts, {}, target)


def test_each_task_knows_its_constant_predictor():
    reg = tasks.get("regression")()
    train_, valid = _part(pl.DataFrame({"score": [1.0, 3.0]})), _part(pl.DataFrame({"score": [2.0, 4.0]}))
    assert reg.constant_criterion(train_, valid) == pytest.approx(((2 - 2) ** 2 + (4 - 2) ** 2) / 2)  # the training mean
    assert reg.improves(1.9, 2.0) and not reg.improves(2.0, 2.0) and not reg.improves(float("nan"), 2.0)
    rank = tasks.get("ranking")()
    assert rank.constant_criterion(train_, valid) == 0.5
    assert rank.improves(0.51, 0.5) and not rank.improves(0.5, 0.5)
    emb = tasks.get("embedding")()
    labels = lambda rows: _part(pl.DataFrame({"labels": rows}))  # noqa: E731
    # valid: label a on 1 of 4 posts, b on 2 of 4, c unseen in training (ignored): the prior's mAP is (1/4 + 2/4) / 2
    prior = emb.constant_criterion(labels([["a"], ["b"]]), labels([["a"], ["b"], ["b", "c"], ["c"]]))
    assert prior == pytest.approx(0.375)
    assert "mean" in reg.constant_predictor and "random" in rank.constant_predictor and "prior" in emb.constant_predictor


def test_an_untrained_run_is_kept_and_flagged_everywhere(cache, tmp_path):
    runs = tmp_path / "runs"
    said: list[str] = []
    d = train(TrainOptions(dataset="tiny", **UHAN, sets={**SMALL, "max_steps": 0}, name="flat", runs=runs, cache=cache),
              say=said.append)
    m = json.loads((d / "metrics.json").read_text())
    assert m["never_improved"] is True and m["repeats"][0]["restored_step"] == 0
    assert m["constant"]["mse"] > 0
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["never_improved"] is True and any(n.startswith("never improved") for n in cfg["notes"])
    assert "restored step 0" in said[-1] and "try" in said[-1] and "lr=" in said[-1]
    rows = comparison_rows([load_run(d)])
    assert rows[0]["never_improved"] is True
    assert "never improved" in build_report([load_run(d)])


def test_a_run_that_learns_is_not_flagged_and_one_below_the_mean_is(cache, tmp_path):
    runs = tmp_path / "runs"
    d = train(TrainOptions(dataset="tiny", **UHAN, sets={**SMALL, "max_steps": 40, "lr": 3e-3}, name="ok",
                           runs=runs, cache=cache))
    m = json.loads((d / "metrics.json").read_text())
    assert m["repeats"][0]["restored_step"] > 0 and m["valid"]["mse"] < m["constant"]["mse"]
    assert m["never_improved"] is False and comparison_rows([load_run(d)])[0]["never_improved"] is False
    assert "never_improved" not in json.loads((d / "config.json").read_text())
    # a head fitted in one go that predicts worse than the training mean (svr, a tiny C, no user or image)
    said: list[str] = []
    d = train(TrainOptions(dataset="tiny", head="svr", stores={"text": tiny.TOKENS}, ablate=["visual", "user"],
                           sets={"C": 1e-6}, name="svr", runs=runs, cache=cache), say=said.append)
    m = json.loads((d / "metrics.json").read_text())
    assert m["repeats"][0]["restored_step"] is None  # nothing restored: judged on the constant alone
    assert m["valid"]["mse"] > m["constant"]["mse"] and m["never_improved"] is True
    assert "never beat the training mean" in said[-1] and "restored step" not in said[-1]


def test_cli_train_and_evaluate_say_never_improved(cache, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "--dataset", "tiny", "--head", "uhan", "--visual", tiny.GRID, "--text", tiny.TOKENS,
            *[x for k, v in {**SMALL, "max_steps": 0}.items() for x in ("--set", f"{k}={v}")],
            "--runs", str(runs), "--cache", str(cache), "--name", "flat"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "never improved" in r.output and "try" in r.output
    r = CliRunner().invoke(app, ["evaluate", "flat", "--runs", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout[r.stdout.index("["):])
    assert rows[0]["never_improved"] is True
    assert pl.read_csv(runs / "evaluate.csv")["never_improved"].to_list() == [True]


def test_batch_size_is_capped_to_the_training_part(cache):
    plan = plan_run(TrainOptions(dataset="tiny", **UHAN, sets={**SMALL, "batch_size": 512, "max_steps": 1},
                                 cache=cache))
    assert plan.config.batch_size == plan.n_train == 84
    assert any(f"batch_size 512 capped to the {plan.n_train} training examples" in n for n in plan.notes)
    assert np.isfinite(plan.constant)
