"""The task contract: pinned predictions of every pre-existing head, tasks' parts and
outputs, run settings apart from model settings, and the layers' import direction."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests import _tiny_data as tiny
from tests import _tiny_tasks
import numpy as np
import polars as pl
import pytest

import heads
from pipeline.core.config import build_config
from pipeline.core.errors import PipeError
from pipeline.data.splits import parse_split
from pipeline.train import tasks
from pipeline.train.data import HeadData, History, RunSettings
from pipeline.run.roles import resolve_roles
from pipeline.train.tasks.embedding import EmbeddingOutput

PINS = json.loads((Path(__file__).parent / "data" / "pinned_predictions.json").read_text())
TINY = {"max_steps": "6", "eval_every": "2", "patience": "2", "batch_size": "16", "dim": "16",
        "n_estimators": "20", "n_jobs": "1", "max_train_rows": "60", "min_child_samples": "5"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=80, seed=5)
    return c


def _fit_tiny(name: str, cache: Path, settings: RunSettings):
    """Fit the head of pin `name` on the tiny dataset prepared by its task (tests/_tiny_tasks.py's
    inputs): the TINY settings, then the pin's own `sets` (a pin keyed `head@what` names its `head`)."""
    pin = PINS[name]
    name = pin.get("head", name)
    cls = heads.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    head = cls(build_config(name, cls.Config, {**{k: v for k, v in TINY.items() if k in fields}, **pin.get("sets", {})}))
    head.settings = settings
    stores, _ = resolve_roles(head.roles(), "tiny", cache, pin["stores"])
    task = _tiny_tasks.task_for(cls)
    posts, side, split = _tiny_tasks.inputs(head.task, cache)
    parts = task.prepare(posts, side, parse_split(split), stores)
    head.fit(parts.data["train"], parts.data["valid"])
    return head, parts.data


def _pinned_values(out) -> np.ndarray:
    """The numbers a pin records: the output itself, or an EmbeddingOutput's label confidences."""
    return np.asarray(out.confidence if isinstance(out, EmbeddingOutput) else out, np.float64).ravel()


def _pinned_keys(data: HeadData) -> list[str]:
    """What each pinned value belongs to: post ids, or a ranking example's user/post pair."""
    if data.examples is None:
        return data.ids
    return [f"{u}/{p}" for u, p in data.examples.select("user_id", "post_id").iter_rows()]


@pytest.mark.parametrize("name", sorted(PINS))
def test_predictions_unchanged_by_the_restructure(name, cache, one_thread):
    """Test predictions of each head that existed before the task contract, recorded then."""
    head, data = _fit_tiny(name, cache, RunSettings(device="cpu", threads=1))
    assert _pinned_keys(data["test"]) == PINS[name]["post_ids"]
    np.testing.assert_allclose(_pinned_values(head.predict(data["test"])), PINS[name]["yhat"], rtol=1e-5, atol=1e-5)


def test_device_is_a_run_setting_not_saved(cache, tmp_path, one_thread):
    head, data = _fit_tiny("uhan", cache, RunSettings(device="cpu", threads=1, prefetch=0))
    head.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "head.json").read_text())["config"]
    assert not {"device", "threads", "prefetch"} & set(saved)
    again = heads.get("uhan").load(tmp_path / "m")
    again.settings = RunSettings(device="auto", threads=2, prefetch=3)  # scores under other settings
    np.testing.assert_allclose(again.predict(data["test"]), head.predict(data["test"]), rtol=1e-6)


def test_unfitted_heads_refuse_to_predict(cache):
    posts = pl.read_parquet(cache / "tiny" / "posts.parquet").head(3)
    for name in heads.names():
        with pytest.raises(PipeError, match="not trained"):
            heads.get(name)().predict(HeadData(posts, {}))


def test_every_head_names_a_registered_task():
    for name in heads.names():
        assert heads.get(name).task in tasks.names()


# -- tasks -------------------------------------------------------------------------------
T0 = datetime(2021, 1, 1, tzinfo=timezone.utc)


def _social(n_users=6, n_posts=60, n_events=90, seed=0):
    """Posts by 6 users, a follow graph, retweet events after each post."""
    rng = np.random.default_rng(seed)
    posts = pl.DataFrame({
        "post_id": [f"p{i:03d}" for i in range(n_posts)], "user_id": [f"u{i % n_users}" for i in range(n_posts)],
        "posted_at": [T0 + timedelta(hours=i) for i in range(n_posts)], "score": rng.normal(size=n_posts),
        "image": [None] * n_posts,
        "labels": [["a", "b"][: 1 + i % 2] if i % 7 else [] for i in range(n_posts)],
    }, schema_overrides={"posted_at": pl.Datetime("us", "UTC"), "image": pl.Utf8})
    follows = pl.DataFrame({"user_id": [f"u{u}" for u in range(n_users) for f in range(n_users) if f != u],
                            "followee_id": [f"u{f}" for u in range(n_users) for f in range(n_users) if f != u]})
    ev_posts = rng.integers(0, n_posts, n_events)
    users = [f"u{(p % n_users + 1 + k % (n_users - 1)) % n_users}" for k, p in enumerate(ev_posts)]
    events = pl.DataFrame({"user_id": users, "post_id": [f"p{p:03d}" for p in ev_posts],
                           "at": [T0 + timedelta(hours=int(p) + 1 + int(rng.integers(0, 5))) for p in ev_posts]},
                          schema_overrides={"at": pl.Datetime("us", "UTC")}).unique(["user_id", "post_id"])
    return posts, {"interactions": events, "follows": follows}


def test_ranking_negatives_never_leak():
    posts, side = _social()
    parts = tasks.get("ranking")().prepare(posts, side, parse_split(None), {})
    ev = side["interactions"]
    train_pairs = {(u, p) for u, p in parts.data["train"].side["interactions"].select("user_id", "post_id").iter_rows()}
    cut = parts.data["train"].side["interactions"]["at"].max()
    assert parts.data["train"].side["interactions"]["at"].max() <= parts.data["valid"].examples["at"].min()
    posted = dict(posts.select("post_id", "posted_at").iter_rows())
    for part, d in parts.data.items():
        ex = d.examples
        assert set(ex["label"].to_list()) <= {0, 1}
        for u, p, label, at in ex.select("user_id", "post_id", "label", "at").iter_rows():
            if label == 0:
                assert posted[p] < at  # a negative was posted before the positive's time
                assert (u, p) not in train_pairs  # never a tweet the user retweeted in training
                if part == "train":
                    assert at <= cut
    all_pairs = set(ev.select("user_id", "post_id").iter_rows())
    for part in ("valid", "test"):
        neg = parts.data[part].examples.filter(pl.col("label") == 0)
        assert not set(neg.select("user_id", "post_id").iter_rows()) & all_pairs
    assert "candidates" in parts.files and parts.files["candidates"].height == sum(
        d.examples.height for d in parts.data.values())


def test_ranking_outputs_and_scores():
    posts, side = _social()
    task = tasks.get("ranking")()
    d = task.prepare(posts, side, parse_split(None), {}).data["test"]
    perfect = d.examples["label"].cast(pl.Float64).to_numpy()
    m = task.metrics(d, task.check(perfect, d, "oracle", "test"))
    assert m["auc"] == 1.0 and m["p@1"] == 1.0
    with pytest.raises(PipeError, match="predictions for"):
        task.check(perfect[:-1], d, "oracle", "test")
    s = task.scores(d, perfect)
    assert s.columns == ["post_id", "user_id", "score", "rank"] and s["rank"].min() == 1
    pred = task.predictions(d, perfect, "test")
    assert pred.columns[:2] == ["post_id", "split"]


def test_embedding_task_splits_at_random_and_scores_outputs():
    posts, _ = _social()
    task = tasks.get("embedding")()
    parts = task.prepare(posts, {}, parse_split(None, task.default_split), {})
    assert parts.counts["unlabelled_skipped"] == sum(1 for i in range(60) if i % 7 == 0)
    d = parts.data["test"]
    truth = np.array([[("a" in r), ("b" in r)] for r in d.posts["labels"].to_list()], np.float64)
    out = EmbeddingOutput(np.ones((len(d), 3), np.float32), ["a", "b"], truth * 0.9 + 0.05,
                          tags=["b", "a", "z"], tag_confidence=np.column_stack([truth[:, 1], truth[:, 0], 0 * truth[:, 0]]))
    m = task.metrics(d, task.check(out, d, "oracle", "test"))
    assert m["map"] == 1.0 and m["micro_f1"] == 1.0 and m["p@1"] == 1.0
    p = task.predictions(d, out, "test")
    assert p.columns[:2] == ["post_id", "split"] and "embedding" in p.columns
    every = p["confidence"].struct.unnest()  # every label's confidence is kept, not only the top ones
    assert every.columns == ["a", "b"] and np.allclose(every.to_numpy(), out.confidence)
    with pytest.raises(PipeError, match="EmbeddingOutput"):
        task.check(np.zeros(len(d)), d, "x", "test")


def _earlier(hist: History, pid: str, n: int, scope: str) -> list[str]:
    """The ids of up to n posts published strictly before `pid` (its window without itself)."""
    from pipeline.train.windows import window_index

    ids = hist.posts["post_id"].to_list()
    return [ids[j] for j in window_index(hist, [pid], n + 1, scope)[0] if j >= 0][:-1]


def test_history_gives_earlier_posts_and_training_labels_only(cache):
    posts = pl.read_parquet(cache / "tiny" / "posts.parquet")
    parts = tasks.get("regression")().prepare(posts, {}, parse_split(None), {})
    hist = parts.data["test"].history
    assert isinstance(hist, History)
    known = hist.posts.filter(pl.col("score").is_not_null())["post_id"].to_list()
    assert sorted(known) == sorted(parts.data["train"].ids)  # labels of training posts only
    ordered = hist.posts["post_id"].to_list()
    pid = parts.data["test"].ids[0]
    window = _earlier(hist, pid, 4, "global")
    i = ordered.index(pid)
    assert window == ordered[max(0, i - 4):i] and pid not in window
    user = hist.posts.filter(pl.col("post_id") == pid)["user_id"][0]
    mine = _earlier(hist, pid, 50, "user")
    assert all(u == user for u in hist.posts.filter(pl.col("post_id").is_in(mine))["user_id"])


def test_target_column_and_extra_numeric_columns(cache):
    posts = pl.read_parquet(cache / "tiny" / "posts.parquet").with_columns(retweets=pl.col("score") * 10)
    parts = tasks.get("regression")("retweets").prepare(posts, {}, parse_split(None), {})
    assert np.allclose(parts.data["train"].y, parts.data["train"].posts["retweets"].to_numpy())
    with pytest.raises(PipeError, match="no column 'likes'"):
        tasks.get("regression")("likes").prepare(posts, {}, parse_split(None), {})


def test_log_grows_during_a_fit_and_an_interrupted_run_is_marked(cache, tmp_path, monkeypatch, one_thread):
    from pipeline.run.train import TrainOptions, train
    from pipeline.run.rundir import load_run

    uhan = heads.get("uhan")
    seen: list[int] = []
    real_fit = uhan.fit

    def spying_fit(self, train_part, valid_part, progress=None):
        def spy(entry):
            progress(entry)  # the run logs the evaluation ...
            log = (tmp_path / "runs" / "live" / "train_log.jsonl").read_text().splitlines()
            seen.append(sum('"event": "valid"' in line for line in log))  # ... and it is on disk now
        return real_fit(self, train_part, valid_part, spy)

    monkeypatch.setattr(uhan, "fit", spying_fit)
    sets = {"max_steps": 4, "eval_every": 2, "dim": 8, "batch_size": 16, "device": "cpu"}
    opts = dict(dataset="tiny", head="uhan", stores={"visual": tiny.GRID, "text": tiny.TOKENS}, sets=sets,
                runs=tmp_path / "runs", cache=cache)
    train(TrainOptions(name="live", **opts))
    assert seen == [1, 2, 3]  # evaluations at steps 0, 2, 4, each logged as it happened

    def interrupted_fit(self, train_part, valid_part, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(uhan, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(name="stopped", **opts))
    run = load_run(tmp_path / "runs" / "stopped")
    assert run.status == "interrupted" and run.metrics is None


def test_cli_train_watches_each_evaluation_and_warns_about_cost(cache, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    args = ["train", "--dataset", "tiny", "--head", "uhan", "--visual", tiny.GRID, "--text", tiny.TOKENS,
            "--set", "dim=8", "--set", "batch_size=16", "--set", "device=cpu", "--runs", str(tmp_path / "runs"),
            "--cache", str(cache)]
    r = CliRunner().invoke(app, [*args, "--set", "max_steps=4", "--set", "eval_every=2", "--name", "w"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("step ")]
    assert len(lines) == 3 and "valid mse" in lines[-1] and "evaluations left before stopping" in lines[-1]
    assert "ETA" in lines[-1] and "samples/s" in lines[-1]
    r = CliRunner().invoke(app, [*args, "--set", "max_steps=0", "--name", "cheap"])
    assert "epochs" not in r.output  # no cost note for a run that trains nothing
    from pipeline.run.train import schedule_cost

    cfg = heads.get("uhan").Config()
    assert "at least 1,280 steps" in schedule_cost(cfg, 56)  # the paper's schedule on 56 posts: said plainly
    assert schedule_cost(cfg, 100_000) is None


def test_keep_interrupted_saves_the_best_model_so_far(cache, tmp_path, monkeypatch, one_thread):
    from pipeline.train.loop import Trainer
    from pipeline.run.train import TrainOptions, train
    from pipeline.run.rundir import load_run

    real = Trainer.predict
    calls = {"n": 0}

    def predict_then_stop(self, model, source, fn=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the third evaluation: Ctrl-C
            raise KeyboardInterrupt
        return real(self, model, source, fn)

    monkeypatch.setattr(Trainer, "predict", predict_then_stop)
    opts = TrainOptions(dataset="tiny", head="uhan", stores={"visual": tiny.GRID, "text": tiny.TOKENS},
                        sets={"max_steps": 10, "eval_every": 2, "dim": 8, "batch_size": 16, "device": "cpu"},
                        runs=tmp_path / "runs", cache=cache, name="kept", keep_interrupted=True)
    with pytest.raises(KeyboardInterrupt):
        train(opts)
    run = load_run(tmp_path / "runs" / "kept")
    assert run.status == "interrupted" and (run.dir / "model" / "head.json").is_file()
    assert run.load_head().model is not None
