"""`pipe search` and `pipe score` with embedding runs, on a tiny store trained through `pipe train`."""
from __future__ import annotations

import json

from tests import _tiny_data as tiny
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import _load_commands, app
from pipeline.core import paths
from pipeline.core.config import parse_sets
from pipeline.search import search

_load_commands()
runner = CliRunner()
SETS = ["max_steps=8", "eval_every=4", "patience=2", "batch_size=16", "clf_epochs=5", "threads=1", "prefetch=0"]


def pipe(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset whose tags name the dominant grid channel, and a dman and a probe run on it."""
    root = tmp_path_factory.mktemp("search")
    cache, runs = root / "cache", root / "runs"
    posts = tiny.make_dataset(cache, n=80, seed=5)
    names = ["ant", "bee", "cat", "dog"]
    _, f = tiny.make_posts(80, seed=5)
    top = f["grid"][:, :, :4].max(1).argmax(1)  # (N,) the channel of 0..3 with the highest peak
    labelled = posts.with_columns(pl.Series("labels", [[names[k]] for k in top], pl.List(pl.Utf8)),
                                  pl.Series("tags", [[names[k], "photo"] for k in top], pl.List(pl.Utf8)))
    labelled.write_parquet(paths.posts_path("tiny", cache))
    for head in ("dman", "probe"):
        res = pipe("train", "--dataset", "tiny", "--head", head, "--visual", tiny.GRID, "--name", head, "-q",
                   "--cache", cache, "--runs", runs,
                   *[a for s in SETS if head == "dman" or not s.startswith("clf") for a in ("--set", s)])
        assert res.exit_code == 0, res.output
    return cache, runs, labelled


def test_search_returns_the_nearest_images_by_tag_output(trained, tmp_path):
    cache, runs, posts = trained
    out = tmp_path / "hits.parquet"
    res = search("dman", "tiny", "cat", k=5, out=out, cache=cache, runs=runs, device="cpu")
    table = pl.read_parquet(out)
    assert table.columns == ["rank", "post_id", "image", "distance", "tag_confidence", "labels"]
    assert table["rank"].to_list() == [1, 2, 3, 4, 5] and table.equals(res.table)
    assert (np.diff(table["distance"].to_numpy()) >= 0).all()
    no_image = posts["image"].is_null().sum()
    assert res.searched == posts.height - no_image and res.without_image == no_image
    assert not set(table["post_id"]) & set(posts.filter(pl.col("image").is_null())["post_id"])


def test_search_cli_table_json_and_errors(trained):
    cache, runs, _ = trained
    common = ["--run", "dman", "--dataset", "tiny", "--cache", cache, "--runs", runs, "--device", "cpu"]
    res = pipe("search", *common, "--tag", "dog", "--k", "3")
    assert res.exit_code == 0, res.output
    assert res.output.count("distance") == 3
    res = pipe("search", *common, "--tag", "dog", "--k", "2", "--json")
    doc = json.loads(res.output)
    assert doc["tag"] == "dog" and len(doc["results"]) == 2
    res = pipe("search", *common, "--tag", "dogs")
    assert res.exit_code == 2 and "not in the run's" in res.output and "dog" in res.output
    res = pipe("search", "--run", "probe", "--dataset", "tiny", "--tag", "dog", "--cache", cache, "--runs", runs)
    assert res.exit_code == 2 and "no tag outputs" in res.output
    res = pipe("search", *common[:2], "--dataset", "nothere", "--tag", "dog", *common[4:])
    assert res.exit_code == 2


@pytest.mark.slow
def test_synth_extract_train_score_and_search_end_to_end(tmp_path):
    """synth --task embedding -> ingest -> random VGG16 pool5 -> dman -> score new posts (their
    images extracted with the run's extractor) -> search the scored dataset."""
    from pipeline.data.ingest import ingest
    from pipeline.data.synth_embedding import synth
    from pipeline.extract import build_extractor, run_extract
    from pipeline.score import score
    from pipeline.run.train import TrainOptions, train

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    ingest(synth(tmp_path / "synth", 60, image_size=32, seed=0, classes=4), "emb", cache=cache)
    run_extract("emb", build_extractor("vgg16", layer="pool5", image_size=32, weights="random"), cache,
                quiet=True, num_workers=0, device="cpu")
    train(TrainOptions(dataset="emb", head="dman", sets=parse_sets(SETS), name="d", runs=runs, cache=cache))
    new = synth(tmp_path / "new", 6, image_size=32, seed=1, classes=4)
    rep = score("d", new, tmp_path / "scores.parquet", dataset="fresh", cache=cache, runs=runs, quiet=True,
                num_workers=0, device="cpu")
    table = pl.read_parquet(rep.out)
    assert table.columns[:4] == ["post_id", "embedding", "top_labels", "top_confidence"] and table.height == 6
    n_tags = len(json.loads((runs / "d" / "model" / "head.json").read_text())["meta"]["tags"])
    assert {len(e) for e in table["embedding"].to_list()} == {n_tags}
    assert all(c == sorted(c, reverse=True) for c in table["top_confidence"].to_list())
    hits = search("d", "fresh", "red-disc", k=3, cache=cache, runs=runs, device="cpu")
    assert hits.searched == 6 and hits.table.height == 3
