"""Issue 22: honest, readable results at first use (never-improved runs flagged, batch size capped)."""
from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.slow
def test_a_run_that_learns_is_not_flagged(cache, tmp_path):
    runs = tmp_path / "runs"
    d = train(TrainOptions(dataset="tiny", **UHAN, sets={**SMALL, "max_steps": 40, "lr": 3e-3}, name="ok",
                           runs=runs, cache=cache))
    m = json.loads((d / "metrics.json").read_text())
    assert m["repeats"][0]["restored_step"] > 0 and m["valid"]["mse"] < m["constant"]["mse"]
    assert m["never_improved"] is False and comparison_rows([load_run(d)])[0]["never_improved"] is False
    assert "never_improved" not in json.loads((d / "config.json").read_text())


def test_a_head_fitted_in_one_go_below_the_training_mean_is_flagged(cache, tmp_path):
    runs = tmp_path / "runs"
    # svr with a tiny C, no user or image: predicts worse than the training mean
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


# -- item 2: comparable by construction -------------------------------------------------
_fake_run = tiny.fake_run  # a finished run folder written by hand


REG = {"mse": 1.1, "mae": 0.8, "src": 0.5, "medae": 0.7}


def test_rows_carry_identity_and_compare_on_the_original_scale(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "lgb", head="lightgbm", test=REG)
    scaled = {"mse": 0.015, "mae": 0.1, "src": 0.4, "medae": 0.09,
              "mse_counts": 1.676, "mae_counts": 1.0, "src_counts": 0.4, "medae_counts": 0.9}
    _fake_run(runs, "hyb", head="hybrid_cnn", transform="max", test=scaled)
    rows = comparison_rows([load_run(runs / "lgb"), load_run(runs / "hyb")])
    for r in rows:
        assert {"run", "dataset", "task", "target", "target_transform", "never_improved"} <= set(r)
    lgb, hyb = rows
    assert (lgb["dataset"], lgb["task"], lgb["target"], lgb["target_transform"]) == ("a", "regression", "score", "none")
    assert hyb["target_transform"] == "max"
    assert hyb["test_mse"] == 1.676 and hyb["test_mse_scaled"] == 0.015  # the original scale by default
    assert "test_mse_counts" not in hyb and lgb["test_mse"] == 1.1
    page = build_report([load_run(runs / "lgb"), load_run(runs / "hyb")])
    best = [c for c in page.split("<td") if 'class="best"' in c]
    assert any("1.1000" in c for c in best) and not any("1.6760" in c or "0.0150" in c for c in best)
    assert "score (max)" in page


def test_best_is_ranked_only_within_a_dataset_split_and_target(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "a1", dataset="a", test=REG)
    _fake_run(runs, "a2", dataset="a", test={**REG, "mse": 1.3})
    _fake_run(runs, "b1", dataset="b", test={**REG, "mse": 2.5})  # worse in number, but another dataset
    _fake_run(runs, "a3", dataset="a", target="likes", test={**REG, "mse": 9.0})  # another target
    page = build_report([load_run(runs / n) for n in ("a1", "a2", "b1", "a3")])
    best = " ".join(c for c in page.split("<td") if 'class="best"' in c)
    assert "1.1000" in best and "2.5000" in best and "9.0000" in best and "1.3000" not in best


def test_cli_evaluate_json_rows_and_every_path_said(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "r1", test=REG)
    _fake_run(runs, "k1", head="amnl", task="ranking", test={"p@1": 0.4, "p@3": 0.5, "auc": 0.6})
    _fake_run(runs, "e1", head="dman", task="embedding", test={"map": 0.3}, split=())
    out = tmp_path / "cmp"
    r = CliRunner().invoke(app, ["evaluate", "r1", "k1", "e1", "--runs", str(runs), "--json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)  # stdout is the JSON list alone
    assert [x["run"] for x in rows] == ["r1", "k1", "e1"]
    assert [x["target"] for x in rows] == ["score", "retweets", "labels"]
    assert all(x["dataset"] == "a" and x["never_improved"] is False and "target_transform" in x for x in rows)
    assert rows[1]["test_auc"] == 0.6
    for path in (f"{out}.csv", f"{out}-ranking.csv", f"{out}-embedding.csv", f"{out}.md"):
        assert path in r.stderr and Path(path).is_file()
    assert pl.read_csv(f"{out}-ranking.csv")["run"].to_list() == ["k1"]


# -- item 4: tune never does harm ---------------------------------------------------------
def test_tune_trains_the_defaults_when_no_trial_beats_them(cache, tmp_path, monkeypatch):
    from pipeline.run import tune as tune_mod

    def worse(self, space):  # every trial far worse than the defaults
        def run(trial):
            for k, spec in space.items():
                tune_mod.suggest(trial, k, spec)
            return 1e9
        return run

    monkeypatch.setattr(tune_mod.Search, "objective", worse)
    runs = tmp_path / "runs"
    args = ["tune", "--dataset", "tiny", "--head", "svr", "--text", tiny.TOKENS, "--set", "max_train_rows=60",
            "--trials", "2", "--name", "t", "--runs", str(runs), "--cache", str(cache)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((runs / "t" / "tune.json").read_text())
    assert meta["trained"] == "defaults" and set(meta["space"]) == {"C", "epsilon"}  # svr declares a space
    assert "no trial beat the defaults" in r.stderr and "training the defaults" in r.stderr
    cfg = json.loads((runs / "t" / "config.json").read_text())["config"]
    assert (cfg["C"], cfg["epsilon"]) == (1.0, 0.1)  # the defaults, not the best trial's values
    m = json.loads((runs / "t" / "metrics.json").read_text())
    assert m["valid"]["mse"] == pytest.approx(meta["defaults"]["valid"])
    assert "regression: test metrics" in r.stdout and "│ t " in r.stdout  # results on stdout, as pipe train's


def test_list_heads_says_which_heads_are_tunable():
    r = CliRunner().invoke(app, ["list", "heads", "--json"])
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert "learning_rate" in rows["lightgbm"]["tune"] and rows["svr"]["tune"] == "C,epsilon"
    assert "lr" in rows["uhan"]["tune"] and rows["hisave"]["tune"] == "min_posts"
    assert rows["popularity"]["tune"] == "—"  # no hyper-parameter: nothing to tune
    r = CliRunner().invoke(app, ["list", "heads"])
    assert "TUNE" in r.stdout


# -- item 5: roles by modality, errors by task --------------------------------------------
def test_roles_are_filled_by_modality_as_well_as_kind(tmp_path):
    from pipeline.core.errors import PipeError
    from pipeline.core.specs import FeatureSpec
    from pipeline.head.tabular import TEXT, VISUAL
    from pipeline.run.roles import resolve_roles

    posts = tiny.make_dataset(tmp_path, "mixed", n=20, stores=())
    ids = posts["post_id"].to_list()
    rng = np.random.default_rng(0)
    for eid in ("clip-vit-b32-1111aaaa", tiny.TEXTVEC):  # a CLIP image vector and a MiniLM text vector: same shape
        tiny.write_store(tmp_path, "mixed", eid, FeatureSpec("vector", (8,), "float32"), ids,
                         rng.normal(size=(20, 8)).astype(np.float32))
    stores, _ = resolve_roles({"visual": VISUAL, "text": TEXT}, "mixed", tmp_path)
    assert {r: s.extractor_id for r, s in stores.items()} == {"visual": "clip-vit-b32-1111aaaa", "text": tiny.TEXTVEC}
    with pytest.raises(PipeError, match="holds text vector rows; role 'visual' needs grid or vector image"):
        resolve_roles({"visual": VISUAL, "text": TEXT}, "mixed", tmp_path, {"visual": "minilm", "text": "clip"})
    with pytest.raises(PipeError, match="holds image vector rows; role 'text' needs vector or tokens text"):
        resolve_roles({"text": TEXT}, "mixed", tmp_path, {"text": "clip"})
    stores, notes = resolve_roles({"text": TEXT}, "mixed", tmp_path, {})  # only one text store: no ambiguity
    assert stores["text"].extractor_id == tiny.TEXTVEC


@pytest.mark.parametrize("head,task,words", [
    ("amnl", "ranking", ("pipe synth --task ranking", "--interactions FILE")),
    ("dman", "embedding", ("pipe synth --task embedding", "`labels`")),
])
def test_a_head_on_another_tasks_data_says_which_task_it_needs(cache, head, task, words):
    from pipeline.core.errors import PipeError

    with pytest.raises(PipeError) as e:
        plan_run(TrainOptions(dataset="tiny", head=head, cache=cache))  # a regression dataset
    msg = str(e.value)
    assert f"head {head!r} is a {task} head" in msg and all(w in msg for w in words), msg
    assert "several" not in msg and "too few" not in msg


def test_a_regression_head_without_its_target_says_what_makes_one(cache, tmp_path):
    r = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--head", "hisave", "--target", "likes",
                                 "--cache", str(cache), "--runs", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "is a regression head" in r.output and "pipe synth --task regression" in r.output


# -- item 7: interruption -----------------------------------------------------------------
@pytest.mark.parametrize("how,code", [("SIGTERM", 143), ("Ctrl-C", 130)])
def test_sigterm_and_ctrl_c_say_one_line_record_a_clean_reason_and_exit(cache, tmp_path, monkeypatch, how, code):
    import os
    import signal

    from pipeline.train.loop import Trainer

    real, calls = Trainer.predict, {"n": 0}

    def predict_then_stop(self, model, source, fn=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the evaluation after step 2 (step 0 and step 2 were evaluated)
            if how == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)  # the run's handler raises here, in the main thread
            raise KeyboardInterrupt
        return real(self, model, source, fn)

    monkeypatch.setattr(Trainer, "predict", predict_then_stop)
    runs = tmp_path / "runs"
    args = ["train", "--dataset", "tiny", "--head", "uhan", "--visual", tiny.GRID, "--text", tiny.TOKENS,
            *[x for k, v in {**SMALL, "max_steps": 20}.items() for x in ("--set", f"{k}={v}")],
            "--runs", str(runs), "--cache", str(cache), "--name", "stop", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({how}) at step 2; best so far: valid mse "), r.stderr
    reason = json.loads((runs / "stop" / "interrupted.json").read_text())["reason"]
    assert reason.startswith(f"interrupted ({how}) at step 2; best so far") and "Error" not in reason
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back


# -- item 1: tables that fit --------------------------------------------------------------
def _column(text: str, index: int) -> str:
    """The body cells of one column of the first rich table, concatenated (a folded id joins up again)."""
    out = []
    for line in text.splitlines():
        if line.startswith("└"):
            break
        if line.startswith("│"):
            out.append(line.split("│")[1 + index].strip())
    return "".join(out)


@pytest.mark.parametrize("width", [80, 120])
def test_evaluate_tables_never_cut_ids_or_numbers(tmp_path, monkeypatch, width):
    from io import StringIO

    from rich.console import Console

    import pipeline.cli.train as cli_train

    runs = tmp_path / "runs"
    long = "dualatt-no-user-no-visual-20261202-113302-2"
    _fake_run(runs, long, dataset="flickr-2016-subset", head="dualatt", test={**REG, "mse": 1.234567})
    _fake_run(runs, "hyb", head="hybrid_cnn", transform="max", dataset="flickr-2016-subset",
              test={"mse": 0.015, "mae": 0.1, "src": 0.4, "medae": 0.09, "mse_counts": 1.676, "mae_counts": 1.0,
                    "src_counts": 0.4123, "medae_counts": 0.9})
    _fake_run(runs, "e1", head="dman", task="embedding", test={"map": 0.734, "micro_p": 0.61, "p@10": 0.287})
    screen = Console(width=width, file=StringIO(), color_system=None)
    monkeypatch.setattr(cli_train, "results_console", lambda: screen)
    r = CliRunner().invoke(app, ["evaluate", long, "hyb", "e1", "--runs", str(runs)])
    assert r.exit_code == 0, r.output
    text = screen.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    for number in ("1.235", "1.676", "0.412", "0.734", "0.287"):  # 3 decimals, whole
        assert number in text, number
    assert long in _column(text, 0) and "flickr-2016-subset" * 2 in _column(text, 1)


@pytest.mark.parametrize("width", [80, 120])
def test_store_ls_never_cuts_an_extractor_id(tmp_path, monkeypatch, width):
    from io import StringIO

    from rich.console import Console

    import pipeline.cli.store as cli_store
    from pipeline.core.specs import FeatureSpec

    posts = tiny.make_dataset(tmp_path, "a-dataset-with-a-long-name", n=10, stores=())
    eid = "vgg16-pool5-128-f3a8e0c1d2b4a6c8e0f1"
    tiny.write_store(tmp_path, "a-dataset-with-a-long-name", eid, FeatureSpec("vector", (4,), "float32"),
                     posts["post_id"].to_list(), np.zeros((10, 4), np.float32))
    screen = Console(width=width, file=StringIO(), color_system=None)
    monkeypatch.setattr(cli_store, "results_console", lambda: screen)
    r = CliRunner().invoke(app, ["store", "ls", "--cache", str(tmp_path)])
    assert r.exit_code == 0, r.output
    text = screen.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    assert _column(text, 1) == eid and _column(text, 0) == "a-dataset-with-a-long-name"


# -- item 10: the report says which run is best ------------------------------------------
def test_report_says_which_run_is_best_and_whether_beyond_seed_noise(tmp_path):
    from pipeline.evaluate.report import verdicts

    runs = tmp_path / "runs"
    sd = {k: 0.05 for k in REG}
    _fake_run(runs, "good", head="uhan", test=REG, std=sd, repeats=3)
    _fake_run(runs, "fair", head="lightgbm", test={**REG, "mse": 1.3}, std=sd, repeats=3)
    _fake_run(runs, "noisy", dataset="b", head="uhan", test=REG, std={k: 0.3 for k in REG}, repeats=3)
    _fake_run(runs, "noisy2", dataset="b", head="svr", test={**REG, "mse": 1.3}, std={k: 0.3 for k in REG}, repeats=3)
    _fake_run(runs, "k1", head="amnl", task="ranking", test={"p@1": 0.4, "p@3": 0.5, "auc": 0.61})
    _fake_run(runs, "k2", head="vbpr", task="ranking", test={"p@1": 0.5, "p@3": 0.6, "auc": 0.72})
    loaded = [load_run(runs / n) for n in ("good", "fair", "noisy", "noisy2", "k1", "k2")]
    said = verdicts(comparison_rows(loaded))
    assert len(said) == 3  # one per task and dataset
    a, b, k = said
    assert a.startswith("regression on a") and "the best is good (uhan)" in a and "0.2000 below fair" in a
    assert "beyond seed noise" in a  # 0.2 against 2 * sqrt(2 * 0.05^2 / 3) = 0.082
    assert "the best is noisy (uhan)" in b and "within seed noise" in b  # 0.2 against 0.49
    assert "the best is k2 (vbpr)" in k and "test auc 0.7200" in k and "0.1100 above k1" in k
    assert "seed noise is unknown" in k
    page = build_report(loaded)
    assert page.index("the best is good") < page.index("<h2>regression</h2>")  # at the top


# -- item 8 (part): config files ----------------------------------------------------------
def test_config_files_read_flat_mappings_of_set_keys(tmp_path):
    from pipeline.core.config import read_config_file
    from pipeline.core.errors import PipeError

    (tmp_path / "a.yaml").write_text("max_steps: 20\nablate: [user, visual]\nmax-vocab: null\n")
    assert read_config_file(tmp_path / "a.yaml") == {"max_steps": 20, "ablate": "user,visual", "max_vocab": "none"}
    (tmp_path / "a.toml").write_text('lr = 0.002\nregime = "small"\n')
    assert read_config_file(tmp_path / "a.toml") == {"lr": 0.002, "regime": "small"}
    (tmp_path / "n.yaml").write_text("trainer:\n  lr: 1\n")
    with pytest.raises(PipeError, match="nested mapping"):
        read_config_file(tmp_path / "n.yaml")
    (tmp_path / "bad.toml").write_text("lr = = 1")
    with pytest.raises(PipeError, match="not valid TOML"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "a.txt").write_text("lr: 1")
    with pytest.raises(PipeError, match="expected a .yaml"):
        read_config_file(tmp_path / "a.txt")


def test_train_config_file_merges_with_set_and_print_config_round_trips(cache, tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "run.yaml").write_text("C: 5\nmax_train_rows: 60\nepsilon: 0.2\n")
    base = ["train", "--dataset", "tiny", "--head", "svr", "--text", tiny.TOKENS, "--runs", str(runs),
            "--cache", str(cache)]
    r = CliRunner().invoke(app, [*base, "--config", str(tmp_path / "run.yaml"), "--set", "C=2", "--name", "c"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((runs / "c" / "config.json").read_text())["config"]
    assert (cfg["C"], cfg["max_train_rows"], cfg["epsilon"]) == (2.0, 60, 0.2)  # --set wins over the file
    r = CliRunner().invoke(app, [*base, "--config", str(tmp_path / "run.yaml"), "--print-config"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed["C"] == 5.0 and printed["max_train_rows"] == 60 and not (runs / "svr").exists()
    (tmp_path / "resolved.yaml").write_text(r.stdout)  # JSON is YAML: the printed config is a --config file
    r = CliRunner().invoke(app, [*base, "--config", str(tmp_path / "resolved.yaml"), "--name", "again"])
    assert r.exit_code == 0, r.output
    assert json.loads((runs / "again" / "config.json").read_text())["config"] == {**cfg, "C": 5.0}


def test_list_runs_and_datasets_and_did_you_mean(cache, tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "uhan-small", dataset="tiny", head="uhan", test=REG)
    r = CliRunner().invoke(app, ["list", "runs", "--runs", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"name": "uhan-small", "head": "uhan", "task": "regression", "dataset": "tiny",
                                     "status": "done", "test": "mse 1.1000"}]
    r = CliRunner().invoke(app, ["list", "datasets", "--cache", str(cache), "--json"])
    assert json.loads(r.stdout) == [{"name": "tiny", "posts": 120, "stores": f"{tiny.TOKENS}, {tiny.GRID}"}]
    r = CliRunner().invoke(app, ["list", "runs", "--runs", str(runs)])
    assert r.exit_code == 0 and "uhan-small" in r.stdout and "NAME" in r.stdout
    r = CliRunner().invoke(app, ["evaluate", "uhan-smal", "--runs", str(runs)])
    assert r.exit_code == 2 and "did you mean 'uhan-small'?" in r.output
    r = CliRunner().invoke(app, ["train", "--dataset", "tinyy", "--head", "hisave", "--cache", str(cache),
                                 "--runs", str(runs)])
    assert r.exit_code == 2 and "did you mean 'tiny'?" in r.output
    r = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--head", "lightgbm", "--text", "tokenz",
                                 "--cache", str(cache), "--runs", str(runs)])
    assert r.exit_code == 2 and "did you mean 'tokens'?" in r.output and tiny.TOKENS in r.output
