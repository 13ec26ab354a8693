"""Tasks own their protocol: the task config (`--task-set`, the `--set` aliases, a head's
`task_defaults`) is recorded in config.json and restored for scoring, never read from the
head's config; the ranking task's valid and test candidate lists depend on neither the
head's seed nor the training `negatives`."""
from __future__ import annotations

import dataclasses
import json

from tests import _tiny_data as tiny
from tests import _tiny_tasks
import polars as pl
import pytest
from typer.testing import CliRunner

import heads
import pipeline.cli as cli
from pipeline.core.config import parse_sets
from pipeline.core.errors import PipeError
from pipeline.data.splits import parse_split
from pipeline.run.train import SETTINGS, TrainOptions, train
from pipeline.train import tasks

cli._load_commands()
TINY = ["max_steps=4", "eval_every=2", "patience=2", "batch_size=16", "dim=8", "device=cpu", "threads=1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny posts (no stores) with follows and retweets, under dataset "tiny"."""
    c = tmp_path_factory.mktemp("cache")
    posts = tiny.make_dataset(c, stores=())
    for name, table in _tiny_tasks.social_tables(posts).items():
        table.write_parquet(c / "tiny" / f"{name}.parquet")
    return c


def _train(cache, tmp_path, head: str, name: str, sets=(), task_sets=None):
    known = {f.name for f in dataclasses.fields(heads.get(head).Config)} | set(SETTINGS)
    tiny_sets = [s for s in TINY if s.split("=")[0] in known]
    opts = TrainOptions("tiny", head, sets=parse_sets([*tiny_sets, *sets]), task_sets=task_sets or {}, name=name,
                        runs=tmp_path / "runs", cache=cache)
    run = train(opts)
    return run, json.loads((run / "config.json").read_text())


def _candidates(run, parts=("valid", "test")) -> pl.DataFrame:
    return pl.read_parquet(run / "candidates.parquet").filter(pl.col("split").is_in(list(parts)))


def test_the_heads_seed_never_changes_valid_and_test_candidates(cache, tmp_path, one_thread):
    runs = {seed: _train(cache, tmp_path, "bpr", f"bpr-{seed}", [f"seed={seed}"]) for seed in (0, 1)}
    assert [c["seeds"] for _, c in runs.values()] == [[0], [1]]  # the heads did train with other seeds
    a, b = (_candidates(run) for run, _ in runs.values())
    assert a.height > 0 and set(a["split"]) == {"valid", "test"}
    assert a.equals(b)
    assert runs[0][1]["task"]["config"] == runs[1][1]["task"]["config"] == {"negatives": 2, "candidates": 2, "seed": 0}


def test_heads_with_other_negatives_are_judged_on_the_same_candidates(cache, tmp_path, one_thread):
    one, c1 = _train(cache, tmp_path, "bpr", "bpr-1neg", ["negatives=1"])  # the README's alias
    three, c3 = _train(cache, tmp_path, "popularity", "pop-3neg", task_sets={"negatives": "3"})
    assert c1["task"]["config"]["negatives"] == 1 and c3["task"]["config"]["negatives"] == 3
    assert "negatives" not in c1["config"] and "negatives" not in c3["config"]  # never the head's setting
    assert _candidates(one).equals(_candidates(three))
    negs = [_candidates(r, ("train",)).filter(pl.col("label") == 0).group_by("group").len()["len"].max()
            for r in (one, three)]
    assert negs == [1, 3]  # training took its own draws


def test_training_with_as_many_negatives_as_candidates_takes_the_candidate_draws():
    """The lists of runs before the task config: one stream, training events first."""
    posts = tiny.make_posts(80, seed=0)[0]
    side = _tiny_tasks.social_tables(posts)
    Ranking = tasks.get("ranking")

    def examples(**c):
        parts = Ranking(config=Ranking.Config(**c)).prepare(posts, side, parse_split(None), {})
        return parts.files["candidates"]
    same = examples(negatives=3, candidates=3)
    other = examples(negatives=1, candidates=3)
    held = pl.col("split") != "train"
    assert same.filter(held).equals(other.filter(held))
    assert not same.filter(~held).equals(other.filter(~held))
    assert not examples(negatives=3, candidates=3, seed=1).filter(held).equals(same.filter(held))  # the task's seed does


def test_task_config_is_recorded_and_restored_for_scoring(cache, tmp_path):
    run, config = _train(cache, tmp_path, "hisave", "windowed", task_sets={"window": "3", "window_scope": "user"})
    assert config["task"]["config"] == {"window": 3, "window_scope": "user"}
    windows = pl.read_parquet(run / "windows.parquet")
    assert windows["window"].list.len().max() <= 3
    task = tasks.get("regression")()
    task.restore(config["task"])
    assert dataclasses.asdict(task.config) == {"window": 3, "window_scope": "user"}

    from pipeline import api  # `pipe score` writes the scored posts' windows from the restored task config

    posts = pl.read_parquet(cache / "tiny" / "posts.parquet").head(5).with_columns(
        post_id=pl.Series([f"n{i}" for i in range(5)]))
    posts.drop("image").write_parquet(tmp_path / "new.parquet")
    report = api.score(run, tmp_path / "new.parquet", tmp_path / "s.parquet", cache=cache, runs=tmp_path / "runs")
    scored = pl.read_parquet(report.windows)
    assert sorted(scored["post_id"]) == posts["post_id"].to_list()
    assert scored["window"].list.len().max() <= 3


def test_set_aliases_give_the_task_config(cache, tmp_path):
    _, by_alias = _train(cache, tmp_path, "hisave", "alias", ["window=2", "window_scope=user"])
    _, by_task = _train(cache, tmp_path, "hisave", "task-set", task_sets={"window": "2", "window_scope": "user"})
    assert by_alias["task"]["config"] == by_task["task"]["config"] == {"window": 2, "window_scope": "user"}
    assert "window" not in by_alias["config"]
    with pytest.raises(PipeError, match="both --set and --task-set"):
        _train(cache, tmp_path, "hisave", "twice", ["window=2"], {"window": "3"})
    with pytest.raises(PipeError, match="valid keys: window, window_scope"):
        _train(cache, tmp_path, "hisave", "bad", task_sets={"negatives": "2"})
    with pytest.raises(PipeError, match="no such setting"):  # an alias of another task is no setting here
        _train(cache, tmp_path, "hisave", "other", ["negatives=2"])


def test_heads_declare_task_defaults_and_keep_no_task_setting():
    regression, embedding, ranking = (tasks.get(n) for n in ("regression", "embedding", "ranking"))
    assert regression.build_config(heads.get("dsn"), {}).window == 8  # today's DSN window: pins reproduce
    assert regression.build_config(heads.get("dsn"), {"window": "3"}).window == 3  # unless the user gives it
    assert regression.build_config(heads.get("hisave"), {}).window is None
    assert embedding.build_config(heads.get("dman"), {}).tags == 1000
    assert ranking.build_config(heads.get("amnl"), {}) == ranking.Config()
    for name in heads.names():
        cls = heads.get(name)
        task = tasks.get(cls.task)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        assert not fields & set(task.ALIASES), f"{name} keeps a setting of the {cls.task} task in its config"
        assert set(cls.task_defaults) <= {f.name for f in dataclasses.fields(task.Config)}


def test_help_names_task_set_and_the_aliases():
    for command in ("train", "tune"):
        out = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"}).output
        assert "--task-set" in out and "aliases of --task-set" in " ".join(out.split())


def _as_saved_before_tasks_owned_settings(run, model_file: str, moved: dict) -> None:
    """Rewrite a run as one saved before issue 18: the task settings in the head's config (config.json
    and the model's own file), no `task.config`."""
    doc = json.loads((run / "config.json").read_text())
    doc["config"].update(moved)
    del doc["task"]["config"]
    (run / "config.json").write_text(json.dumps(doc))
    state = json.loads((run / "model" / model_file).read_text())
    state["config"].update(moved)
    (run / "model" / model_file).write_text(json.dumps(state))


@pytest.mark.parametrize("head,model_file,task_sets,moved", [
    ("hisave", "hisave.json", {"window": "3"}, {"window": 3, "window_scope": "global"}),
    ("popularity", "popularity.json", {}, {"negatives": 2}),
])
def test_a_run_saved_before_tasks_owned_their_settings_still_scores(cache, tmp_path, head, model_file, task_sets,
                                                                     moved):
    from pipeline import api

    run, _ = _train(cache, tmp_path, head, f"old-{head}", task_sets=task_sets)
    posts = pl.read_parquet(cache / "tiny" / "posts.parquet").head(6).with_columns(
        post_id=pl.Series([f"o{i}" for i in range(6)]))
    posts.drop("image").write_parquet(tmp_path / "new.parquet")
    now = api.score(run, tmp_path / "new.parquet", tmp_path / "now.parquet", dataset=f"new-{head}", cache=cache,
                    runs=tmp_path / "runs")  # a dataset per head: each scores its own file
    _as_saved_before_tasks_owned_settings(run, model_file, moved)
    old = api.score(run, tmp_path / "new.parquet", tmp_path / "old.parquet", dataset=f"new-{head}", cache=cache,
                    runs=tmp_path / "runs")
    assert pl.read_parquet(old.out).equals(pl.read_parquet(now.out))
    assert (old.windows is None) == (now.windows is None)  # the window came back from the head's old config
    if now.windows is not None:
        assert pl.read_parquet(old.windows).equals(pl.read_parquet(now.windows))
