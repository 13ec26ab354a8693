"""Issue 22, items 7 and 8: `pipe train --resume` reaches the uninterrupted result;
`--logger tensorboard|mlflow`; `pipe train --dry-run`."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import api
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.core.errors import PipeError
from tests import _tiny_data as tiny

_load_commands()

# dropout and user dropout on: the resumed fit must also replay torch's random state
SMALL = {"dim": 8, "batch_size": 16, "device": "cpu", "eval_every": 2, "patience": 50, "max_steps": 12,
         "dropout": 0.3, "user_dropout": 0.2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=120, seed=2, stores=(tiny.GRID, tiny.TOKENS))
    return c


def _train(cache, runs, name, watch=None, **kw):
    return api.train("tiny", "uhan", visual=tiny.GRID, text=tiny.TOKENS, config={**SMALL, **kw.pop("config", {})},
                     cache=cache, runs=runs, name=name, watch=watch, **kw)


def _stop_at(step):
    def watch(entry):
        if entry["step"] == step:
            raise KeyboardInterrupt  # after the evaluation at `step` was checkpointed and logged
    return watch


def _same_result(a, b):
    pa, pb = a.predictions().sort("post_id"), b.predictions().sort("post_id")
    np.testing.assert_allclose(pb["yhat"].to_numpy(), pa["yhat"].to_numpy(), rtol=1e-6, atol=0)
    for part in ("valid", "test"):
        for k, v in a.metrics[part].items():
            assert b.metrics[part][k] == pytest.approx(v, rel=1e-6), (part, k)
    assert b.metrics["repeats"][0]["restored_step"] == a.metrics["repeats"][0]["restored_step"]


@pytest.mark.slow
def test_resume_reaches_the_uninterrupted_result(cache, tmp_path):
    runs = tmp_path / "runs"
    whole = _train(cache, runs, "whole", repeats=2)
    with pytest.raises(KeyboardInterrupt):
        _train(cache, runs, "cut", watch=_stop_at(6), repeats=2)
    cut = runs / "cut"
    assert not (cut / "metrics.json").exists() and (cut / "interrupted.json").exists()  # clearly not finished
    assert api.load_run(cut).status == "interrupted"
    assert (cut / "checkpoint" / "repeat-0.pt").is_file()
    said = []
    resumed = api.resume("cut", runs=runs, say=said.append)
    assert any("repeat 1/2 from its checkpoint at step 6" in s for s in said), said
    _same_result(whole, resumed)
    assert resumed.metrics["std"]["test"]["mse"] == pytest.approx(whole.metrics["std"]["test"]["mse"], rel=1e-6)
    assert resumed.status == "done" and not (cut / "checkpoint").exists() and not (cut / "interrupted.json").exists()
    curve = [h["step"] for h in json.loads((cut / "model" / "head.json").read_text())["history"]]
    assert curve == list(range(0, 13, 2))  # the whole curve, the steps before the stop included


@pytest.mark.slow
def test_resume_after_a_killed_process_and_in_the_second_repeat(cache, tmp_path, monkeypatch):
    """A process killed without a word leaves no interrupted.json (status `failed`): it resumes too,
    here in its second repeat, the first kept as the log recorded it."""
    runs = tmp_path / "runs"
    whole = _train(cache, runs, "whole", repeats=2)
    from pipeline.run import rundir

    monkeypatch.setattr(rundir.RunWriter, "mark_interrupted", lambda self, reason: None)  # as if SIGKILLed
    calls = {"n": 0}

    def second_repeat_step_4(entry):
        calls["n"] += entry["step"] == 4
        if calls["n"] == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        _train(cache, runs, "killed", watch=second_repeat_step_4, repeats=2)
    monkeypatch.undo()
    assert api.load_run(runs / "killed").status == "failed"
    said = []
    resumed = api.resume(runs / "killed", say=said.append)
    assert any("(failed): repeat 2/2 from its checkpoint at step 4" in s for s in said), said
    _same_result(whole, resumed)
    assert resumed.metrics["repeats"][1]["test"]["mse"] == pytest.approx(whole.metrics["repeats"][1]["test"]["mse"],
                                                                       rel=1e-6)


def test_resume_refuses_a_finished_run_and_suggests_a_name(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    tiny.make_dataset(cache, n=60, stores=(tiny.FC,))
    api.train("tiny", "svr", cache=cache, runs=runs, name="finished-run")
    r = CliRunner().invoke(app, ["train", "--resume", "finished-run", "--runs", str(runs)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "run finished-run is finished (metrics.json written): nothing to resume" in lines[0]
    r = CliRunner().invoke(app, ["train", "--resume", "finished-rn", "--runs", str(runs)])
    assert r.exit_code == 2 and "did you mean 'finished-run'?" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", "--resume", "finished-run", "--head", "svr", "--runs", str(runs)])
    assert r.exit_code == 2 and "drop --head" in r.stderr


def _stop_svr(cache, runs, name):
    """An svr run stopped by Ctrl-C after its fit, while it saves its model."""
    from pipeline.run.rundir import RunWriter

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunWriter, "save_model", lambda self, head: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            api.train("tiny", "svr", cache=cache, runs=runs, name=name)


def test_a_stopped_head_fitted_in_one_go_resumes_by_fitting_again(tmp_path):
    """svr has no checkpoint: its repeat in progress fits again, to the same result."""
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    tiny.make_dataset(cache, n=60, stores=(tiny.FC,))
    whole = api.train("tiny", "svr", cache=cache, runs=runs, name="whole")
    _stop_svr(cache, runs, "cut")
    r = CliRunner().invoke(app, ["train", "--resume", "cut", "--runs", str(runs)])
    assert r.exit_code == 0, r.output
    assert "resuming run" in r.stderr and "repeat 1/1 from the start of the repeat" in r.stderr
    assert api.load_run(runs / "cut").metrics["test"] == whole.metrics["test"]


def test_resume_refuses_a_run_whose_data_changed(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    tiny.make_dataset(cache, n=60, stores=(tiny.FC,))
    _stop_svr(cache, runs, "cut")
    tiny.make_dataset(cache, n=70, stores=(tiny.FC,))  # new posts, a new store
    with pytest.raises(PipeError, match="cannot be resumed to the same result: its .*changed"):
        api.resume("cut", runs=runs)


# -- --logger ---------------------------------------------------------------------------
def _log_entries(run_dir):
    lines = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [e for e in lines if e["event"] == "valid"]


@pytest.mark.slow
def test_tensorboard_logger_writes_the_train_log_metrics(cache, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(cache, tmp_path / "runs", "tb", logger="tensorboard", config={"max_steps": 6})
    acc = EventAccumulator(str(run.dir / "tensorboard" / "repeat-0"))
    acc.Reload()
    entries = _log_entries(run.dir)
    for key in ("valid_mse", "train_loss", "best"):
        want = [(e["step"], e[key]) for e in entries if e.get(key) is not None]
        got = [(s.step, s.value) for s in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want] and want
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)


def test_mlflow_logger_calls_mlflow_with_the_train_log_metrics(tmp_path, monkeypatch):
    """mlflow is too heavy to install for a test: a stand-in module records the calls."""
    calls = []
    fake = types.ModuleType("mlflow")
    fake.start_run = lambda run_name=None: calls.append(("start", run_name))
    fake.log_params = lambda params: calls.append(("params", params))
    fake.log_metrics = lambda metrics, step=None: calls.append(("metrics", step, metrics))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    tiny.make_dataset(cache, n=60, stores=(tiny.FC,))
    run = api.train("tiny", "svr", cache=cache, runs=runs, name="ml", logger="mlflow")
    assert calls[0] == ("start", "ml") and calls[1][0] == "params" and calls[-1] == ("end",)
    logged = [(c[1], c[2]) for c in calls if c[0] == "metrics"]
    want = [(e["step"], {k: v for k, v in e.items() if k.startswith(("valid_", "train_")) and v is not None})
            for e in _log_entries(run.dir)]
    assert logged and [s for s, _ in logged] == [s for s, _ in want]
    for (_, got), (_, w) in zip(logged, want):
        assert {k: got[k] for k in w} == pytest.approx(w)


def test_a_missing_logger_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    tiny.make_dataset(cache, n=60, stores=(tiny.FC,))
    r = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--head", "svr", "--cache", str(cache), "--runs",
                                 str(runs), "--logger", "mlflow"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the mlflow package" in lines[0] and "pip install 'pipe[mlflow]'" in lines[0]
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run folder was made


# -- --dry-run --------------------------------------------------------------------------
@pytest.mark.slow
def test_dry_run_checks_the_whole_path_and_writes_nothing(cache, tmp_path, monkeypatch):
    import tempfile

    runs, tmp = tmp_path / "runs", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    args = ["train", "--dataset", "tiny", "--head", "uhan", "--visual", tiny.GRID, "--text", tiny.TOKENS,
            "--set", "dim=8", "--set", "device=cpu", "--runs", str(runs), "--cache", str(cache), "--dry-run", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for what in ("prepared tiny for uhan", "trained 1 batch of", "validated 2 times", "predicted train, valid and test",
                 "loaded the saved model back", "evaluated the run: a regression row on tiny", "dry run passed"):
        assert what in out, out
    assert not runs.exists() and list(tmp.iterdir()) == []  # no run folder, the temporary one removed
