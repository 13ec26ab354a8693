"""`pipe explain` and `pipe rank` on tiny trained runs: attention weights are distributions
over regions, words and modalities; candidates are ordered exactly by `pipe score`'s
scores; unseen users and posts without an image work and are said plainly."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from tests._end_to_end import EXTRACT, TINY, synth_runs
from PIL import Image
from typer.testing import CliRunner

from pipeline.head.base import Explanation, Head
from pipeline import api
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts

_load_commands()


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """Synth posts at 64 px (a 2 x 2 pool5 grid), tokens, and tiny uhan, dualatt, hisave runs."""
    root = tmp_path_factory.mktemp("explain")
    cache, runs = synth_runs(root, 64, (("uhan", "uhan", TINY), ("dualatt", "dualatt", TINY), ("hisave", "hisave", [])))
    posts = load_posts("train", cache)
    return {"root": root, "cache": cache, "runs": runs, "posts": posts}


def _check_distributions(e, n_regions: int | None) -> None:
    x = e.explanation
    if n_regions is not None:
        assert len(x["regions"]) == n_regions and tuple(x["grid"]) == (2, 2)
        assert sum(x["regions"]) == pytest.approx(1, abs=1e-5)
    assert sum(w for _, w, _ in x["words"]) == pytest.approx(1, abs=1e-5)
    assert all(isinstance(word, str) and word for word, _, _ in x["words"])


@pytest.mark.slow
def test_explain_uhan_weights_sum_to_one(world, tmp_path):
    with_text = world["posts"].filter(pl.col("image").is_not_null() & (pl.col("title").str.len_chars() > 0))
    pid = with_text["post_id"][0]
    done = api.explain(world["runs"] / "uhan", [pid], out=tmp_path, html=True, cache=world["cache"])
    (e,) = done
    _check_distributions(e, 4)
    assert sum(e.explanation["modalities"].values()) == pytest.approx(1, abs=1e-5)
    assert e.user_mean is not None and e.user_posts > 0 and isinstance(e.prediction, float)
    saved = json.loads((tmp_path / e.files["json"]).read_text())
    assert saved["explanation"]["regions"] == pytest.approx(e.explanation["regions"])
    for kind in ("regions", "words", "modalities"):
        assert np.asarray(Image.open(tmp_path / e.files[kind]).convert("L")).std() > 5
    page = (tmp_path / "explain.html").read_text()
    assert "http" not in page and "training mean" in page
    # the prediction is the run's own for that post
    pred = pl.read_parquet(world["runs"] / "uhan" / "predictions.parquet").filter(pl.col("post_id") == pid)
    assert e.prediction == pytest.approx(float(pred["yhat"][0]), abs=1e-4)


@pytest.mark.slow
def test_explain_dualatt_and_new_posts_without_image_and_unseen_user(world, tmp_path):
    new = world["posts"].tail(3).with_columns(("new-" + pl.col("post_id")).alias("post_id"),
                                              pl.lit("stranger").alias("user_id"), pl.lit(None, pl.Float64).alias("score"),
                                              pl.lit(None, pl.String).alias("image"))
    f = tmp_path / "new.parquet"
    new.write_parquet(f)
    pid = new["post_id"][0]
    (e,) = api.explain(world["runs"] / "dualatt", [pid], posts_file=f, out=tmp_path / "x", cache=world["cache"],
                       **EXTRACT)
    assert e.explanation["regions"] is None and e.user_mean is None  # no image: no region map; unseen user
    assert sum(w for _, w, _ in e.explanation["words"]) == pytest.approx(1, abs=1e-5)
    assert "regions" not in e.files
    with pytest.raises(PipeError, match="no attention"):
        api.explain(world["runs"] / "hisave", [world["posts"]["post_id"][0]], out=tmp_path / "h", cache=world["cache"])
    with pytest.raises(PipeError, match="no post nope"):
        api.explain(world["runs"] / "uhan", ["nope"], out=tmp_path / "h", cache=world["cache"])


def test_head_contract_default_is_no_attention():
    assert Head.explain(None, None) is None  # type: ignore[arg-type]
    e = Explanation("p", 1.0, regions=[0.5, 0.5], grid=(1, 2))
    assert e.to_json()["grid"] == (1, 2) and e.to_json()["words"] is None


@pytest.fixture(scope="module")
def candidates(world):
    """Three candidates of a known user from existing images and titles, one without image,
    relative image paths, no post ids, no times."""
    folder = world["root"] / "cands"
    folder.mkdir()
    src = world["posts"].filter(pl.col("image").is_not_null()).head(3)
    for i, p in enumerate(src["image"].to_list()):
        Image.open(p).save(folder / f"c{i}.jpg")
    df = pl.DataFrame({"image": ["c0.jpg", "c1.jpg", None, "c2.jpg"], "title": src["title"].to_list() + ["x"]})
    df.write_csv(folder / "cands.csv")
    return {"file": folder / "cands.csv", "user": world["posts"]["user_id"][0]}


@pytest.mark.slow
def test_rank_orders_exactly_by_pipe_score(world, candidates, tmp_path):
    rep = api.rank(world["runs"] / "uhan", candidates["user"], candidates["file"], out=tmp_path / "r.csv",
                   explain=tmp_path / "maps", cache=world["cache"], **EXTRACT)
    t = rep.table
    assert t["rank"].to_list() == [1, 2, 3, 4] and t.height == 4
    assert t["score"].to_list() == sorted(t["score"].to_list(), reverse=True)
    assert rep.user_mean is not None
    np.testing.assert_allclose(t["gain"].to_numpy(), t["score"].to_numpy() - rep.user_mean, rtol=1e-6)
    assert t.filter(pl.col("missing_image"))["post_id"].to_list() == ["cand-3"]
    # pipe score on the same candidates gives the same numbers
    posts = pl.read_parquet(world["cache"] / rep.dataset / "posts.parquet")
    f = tmp_path / "same.parquet"
    posts.write_parquet(f)
    api.score(world["runs"] / "uhan", f, tmp_path / "s.parquet", dataset="same", cache=world["cache"], **EXTRACT)
    s = pl.read_parquet(tmp_path / "s.parquet").sort("score", descending=True)
    assert s["post_id"].to_list() == t["post_id"].to_list()
    np.testing.assert_allclose(s["score"].to_numpy(), t["score"].to_numpy(), rtol=1e-6)
    assert pl.read_csv(tmp_path / "r.csv")["post_id"].to_list() == t["post_id"].to_list()
    page = (tmp_path / "maps" / "rank.html").read_text()
    assert page.index("#1: ") < page.index("#4: ") and "http" not in page


@pytest.mark.slow
def test_rank_unseen_user_and_cli(world, candidates, tmp_path):
    r = CliRunner().invoke(app, ["rank", "--run", "uhan", "--user", "someone-new", "--candidates",
                                 str(candidates["file"]), "--runs", str(world["runs"]), "--cache", str(world["cache"]),
                                 "--num-workers", "0", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "never seen in training: the ranking rests on the content alone" in r.output
    assert r.output.count("gain n/a") == 4
    r = CliRunner().invoke(app, ["explain", "--run", "uhan", "--post", world["posts"]["post_id"][5], "--out",
                                 str(tmp_path / "e"), "--runs", str(world["runs"]), "--cache", str(world["cache"]),
                                 "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["post_id"] == world["posts"]["post_id"][5]
