"""`pipe score`: new posts are ingested, extracted with the run's exact extractors (only what
is not cached), scored by the run's model; unknown users and missing images are flagged,
never dropped."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from tests._end_to_end import EXTRACT, TINY, synth_runs
from typer.testing import CliRunner

from heads.hisave import HisAve
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts
from pipeline.score import score

pytestmark = pytest.mark.slow

_load_commands()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synth dataset at 32 px with random-VGG16 pool5 and token stores, and three runs."""
    root = tmp_path_factory.mktemp("score")
    cache, runs = synth_runs(root, 32, (("hisave", "hisave", []), ("gbm", "lightgbm", ["n_estimators=30", "n_jobs=1"]),
                                        ("uhan", "uhan", TINY)))
    # new posts: known users, one stranger, one without image, one with a corrupt image file
    new = load_posts("train", cache).tail(8).with_columns(
        ("new-" + pl.col("post_id")).alias("post_id"), pl.lit(None, pl.Float64).alias("score"))
    bad = root / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg at all")
    new = new.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("stranger")).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(pl.int_range(pl.len()) == 1).then(None)
        .when(pl.int_range(pl.len()) == 2).then(pl.lit(str(bad))).otherwise(pl.col("image")).alias("image"))
    new_file = root / "new posts.parquet"
    new.write_parquet(new_file)
    return {"root": root, "cache": cache, "runs": runs, "new": new_file, "ids": new["post_id"].to_list()}


@pytest.mark.parametrize("run", ["hisave", "gbm", "uhan"])
def test_scores_new_posts_with_flags(world, run, tmp_path):
    out = tmp_path / "scores.parquet"
    rep = score(run, world["new"], out, cache=world["cache"], runs=world["runs"], **EXTRACT)
    assert rep.dataset == "new-posts"
    s = pl.read_parquet(out)
    assert s.columns == ["post_id", "score", "unseen_user", "missing_image"]
    assert sorted(s["post_id"]) == sorted(world["ids"])  # nothing dropped
    assert np.isfinite(s["score"].to_numpy()).all()
    flags = dict(zip(s["post_id"], zip(s["unseen_user"], s["missing_image"])))
    ids = world["ids"]
    assert [p for p in ids if flags[p][0]] == [ids[0]]
    want_missing = {ids[1], ids[2]} if run != "hisave" else {ids[1]}  # hisave reads no image store
    assert {p for p in ids if flags[p][1]} == want_missing
    assert rep.unseen_users == 1 and rep.metrics is None


def test_rescoring_training_posts_reproduces_the_run(world, tmp_path):
    """Exact extractors + the saved model: scores equal the run's own test predictions."""
    posts = load_posts("train", world["cache"])
    f = tmp_path / "again.parquet"
    posts.write_parquet(f)
    rep = score(world["runs"] / "gbm", f, tmp_path / "s.parquet", dataset="again", cache=world["cache"], **EXTRACT)
    assert rep.metrics is not None and set(rep.extracted.values()) == {120}
    got = pl.read_parquet(tmp_path / "s.parquet")
    pred = pl.read_parquet(world["runs"] / "gbm" / "predictions.parquet").join(got, on="post_id")
    assert pred.height == 120
    np.testing.assert_allclose(pred["score"].to_numpy(), pred["yhat"].to_numpy(), rtol=1e-5, atol=1e-5)
    # a second pass finds everything cached
    rep2 = score(world["runs"] / "gbm", f, tmp_path / "s2.parquet", dataset="again", cache=world["cache"], **EXTRACT)
    assert set(rep2.extracted.values()) == {0}


def test_unseen_fallback_without_head_method(world, tmp_path, monkeypatch):
    monkeypatch.delattr(HisAve, "unseen_users")
    out = tmp_path / "s.parquet"
    score("hisave", world["new"], out, dataset="fallback", cache=world["cache"], runs=world["runs"], **EXTRACT)
    s = pl.read_parquet(out)
    assert s.filter(pl.col("unseen_user"))["post_id"].to_list() == [world["ids"][0]]


def test_score_refuses_the_training_dataset_name_and_cli_works(world, tmp_path):
    with pytest.raises(PipeError, match="training dataset"):
        score("hisave", world["new"], tmp_path / "x.parquet", dataset="train", cache=world["cache"],
              runs=world["runs"])
    r = CliRunner().invoke(app, ["score", "--run", "gbm", "--posts", str(world["new"]), "--out",
                                 str(tmp_path / "cli.parquet"), "--runs", str(world["runs"]), "--cache",
                                 str(world["cache"]), "--num-workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "scored 8 posts" in r.output and pl.read_parquet(tmp_path / "cli.parquet").height == 8
