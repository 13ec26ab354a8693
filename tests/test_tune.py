"""`pipe tune` (issue 9 part 3): search on valid, best trained as a normal run, test labels never read,
a killed search resumes."""
from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest

from pipeline.core import paths
from pipeline.run.train import TrainOptions
from pipeline.run.tune import STAGING, STUDY_FILE, TRIALS_FILE, TUNE_FILE, Search, TuneOptions, tune
from tests._tiny_data import GRID, TOKENS, make_dataset

pytestmark = pytest.mark.slow

# tiny and fast: fixed model size and schedule, the rest of UHAN's space is searched
FIXED = {"dim": 8, "patience": 2, "max_steps": 6, "threads": 1, "prefetch": 0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("tune")
    make_dataset(root / "cache", "tiny", n=80)
    return root / "cache"


def _opts(cache, runs, name, trials=3, dataset="tiny"):
    run = TrainOptions(dataset=dataset, head="uhan", stores={"visual": GRID, "text": TOKENS}, sets=dict(FIXED),
                       name=name, runs=runs, cache=cache)
    return TuneOptions(run, trials=trials, seed=0, startup_trials=2)


@pytest.fixture(scope="module")
def clean(cache):
    return tune(_opts(cache, cache.parent / "runs", "clean", trials=2))


def test_tune_searches_valid_then_trains_the_best_as_a_normal_run(cache, clean):
    out = clean
    for f in ("config.json", "metrics.json", STUDY_FILE, TRIALS_FILE, TUNE_FILE):
        assert (out / f).is_file(), f
    meta = json.loads((out / TUNE_FILE).read_text())
    trials = pl.read_csv(out / TRIALS_FILE)
    assert trials.height == 2 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert "dim" not in meta["space"] and "lr" in meta["space"]  # --set keys are fixed, not searched
    assert meta["defaults"]["valid"] > 0 and meta["best"]["valid"] == trials.filter(
        pl.col("state") == "COMPLETE")["value"].min()
    cfg = json.loads((out / "config.json").read_text())["config"]
    beat = meta["best"]["valid"] < meta["defaults"]["valid"]
    assert meta["trained"] == ("best trial" if beat else "defaults")  # never worse than the defaults
    chosen = meta["best"]["params"] if beat else {k: meta["defaults"]["config"][k] for k in meta["best"]["params"]}
    assert cfg["dim"] == 8 and all(cfg[k] == pytest.approx(v) for k, v in chosen.items())
    # the final run is the chosen fit again (same config, schedule included; CPU runs are bit-identical)
    assert json.loads((out / "metrics.json").read_text())["valid"]["mse"] == pytest.approx(
        min(meta["best"]["valid"], meta["defaults"]["valid"]))
    assert not (paths.runs_root(cache.parent / "runs") / STAGING / "clean").exists()
    with pytest.raises(Exception, match="already exists"):
        tune(_opts(cache, cache.parent / "runs", "clean"))


def test_search_never_reads_the_test_labels(cache, clean, tmp_path, monkeypatch):
    """Poisoned test labels change no trial value, and no test post reaches a search fit."""
    test_ids = pl.read_parquet(clean / "predictions.parquet").filter(pl.col("split") == "test")["post_id"]
    posts = pl.read_parquet(paths.posts_path("tiny", cache))
    poisoned = posts.with_columns(score=pl.when(pl.col("post_id").is_in(test_ids.implode())).then(1e6)
                                  .otherwise(pl.col("score")))
    p = paths.posts_path("poisoned", cache)
    p.parent.mkdir(parents=True, exist_ok=True)
    poisoned.write_parquet(p)
    (p.parent / "features").symlink_to(paths.posts_path("tiny", cache).parent / "features")
    seen = []
    real = Search.fit

    def spy(self, config, trial=None):
        assert not set(self.train.ids) & set(test_ids) and not set(self.valid.ids) & set(test_ids)
        seen.append(trial)
        return real(self, config, trial)

    monkeypatch.setattr(Search, "fit", spy)
    dirty = tune(_opts(cache, tmp_path / "runs", "dirty", trials=2, dataset="poisoned"))
    a, b = (json.loads((d / TUNE_FILE).read_text()) for d in (clean, dirty))
    assert a["defaults"]["valid"] == b["defaults"]["valid"]
    assert pl.read_csv(clean / TRIALS_FILE)["value"].to_list() == pl.read_csv(dirty / TRIALS_FILE)["value"].to_list()
    assert len(seen) == 3  # the defaults and two trials
    assert json.loads((dirty / "metrics.json").read_text())["test"]["mse"] > 1e6  # the final run does read test


def test_a_killed_search_resumes(cache, tmp_path, monkeypatch):
    import optuna

    opts = _opts(cache, tmp_path / "runs", "k", trials=2)
    real, calls = Search.fit, []

    def dies(self, config, trial=None):
        calls.append(trial)
        if len(calls) == 3:  # the defaults, one trial, then the kill
            raise KeyboardInterrupt
        return real(self, config, trial)

    monkeypatch.setattr(Search, "fit", dies)
    with pytest.raises(KeyboardInterrupt):
        tune(opts)
    stage = paths.runs_root(tmp_path / "runs") / STAGING / "k"
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{stage / STUDY_FILE}")
    study.ask()  # a trial a SIGKILL would leave RUNNING
    monkeypatch.setattr(Search, "fit", real)
    out = tune(dataclasses.replace(opts))
    states = pl.read_csv(out / TRIALS_FILE)["state"].to_list()
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 2 and states.count("FAIL") == 2
    params = pl.read_csv(out / TRIALS_FILE).filter(pl.col("state") == "COMPLETE")["param_lr"].to_list()
    assert len(set(params)) == len(params)  # the resumed sampler draws new configurations
    assert json.loads((out / TUNE_FILE).read_text())["defaults"]["valid"] > 0  # kept from the first search
