"""The ranking task end to end: side tables at ingest (each validation error named), training
negatives that never leak, tie-neutral P@k, AMNL's pieces, `pipe synth --task ranking`,
`pipe score --users`. Negative sampling basics live in tests/test_contract.py."""
from __future__ import annotations

import json
from datetime import timedelta

from tests import _tiny_data as tiny
from tests import _tiny_tasks
import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import pipeline.cli as cli
from heads.amnl import AMNLModel, sentences
from pipeline.core.errors import PostsError
from pipeline.data.contract import load_side_tables
from pipeline.data.ingest import ingest
from pipeline.data.splits import parse_split
from pipeline.train import tasks
from pipeline.train.metrics import ranking_metrics

cli._load_commands()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "posts.csv").write_text("post_id,user_id,posted_at,score\na,u1,2024-01-01,1\nb,u2,2024-01-02,2\n")
    (tmp_path / "rt.csv").write_text("user_id,post_id,at\nu3,a,2024-01-03\nu4,b,2024-01-05\n")
    (tmp_path / "fo.csv").write_text("user_id,followee_id\nu3,u1\nu4,u2\n")
    return tmp_path


def _ingest(d, rt="rt.csv", fo="fo.csv", **kw):
    return ingest(d / "posts.csv", "x", cache=d / "cache", interactions=d / rt if rt else None,
                  follows=d / fo if fo else None, **kw)


BAD_INTERACTIONS = [  # (row, column named, reason)
    ("u3,zz,2024-01-04", "post_id", "unknown post"),
    ("u4,b,2024-01-01", "at", "before its post was published"),
    ("u3,a,2024-01-03", "user_id,post_id,kind", "duplicate row (first at line 2)"),
    ("u5,b,yesterday", "at", "unparsable timestamp"),
    ("u5,,2024-01-05", "post_id", "missing post id"),
    (",b,2024-01-05", "user_id", "missing user id"),
]


@pytest.mark.parametrize("row,column,reason", BAD_INTERACTIONS)
def test_each_bad_interaction_is_named(files, row, column, reason):
    (files / "bad.csv").write_text(f"user_id,post_id,at\nu3,a,2024-01-03\n{row}\n")
    with pytest.raises(PostsError) as e:
        _ingest(files, rt="bad.csv")
    msg = str(e.value)
    assert "interactions table" in msg and "bad.csv" in msg and f"column {column}: {reason}" in msg and "line 3" in msg
    assert not (files / "cache" / "x" / "posts.parquet").exists()  # nothing written


@pytest.mark.parametrize("row,column,reason", [("u3,u3", "followee_id", "self-follow"),
                                               ("u3,u1", "user_id,followee_id", "duplicate row")])
def test_each_bad_follow_is_named(files, row, column, reason):
    (files / "bad.csv").write_text(f"user_id,followee_id\nu3,u1\n{row}\n")
    with pytest.raises(PostsError, match=f"(?s)follows table .*column {column}: {reason}"):
        _ingest(files, fo="bad.csv")


def test_missing_side_columns_are_named(files):
    (files / "bad.csv").write_text("user_id,post\nu3,a\n")
    with pytest.raises(PostsError, match=r"bad.csv \(interactions\): missing required column\(s\) post_id, at"):
        _ingest(files, rt="bad.csv")


def test_skip_invalid_keeps_the_rest_and_reingest_replaces(files):
    (files / "bad.csv").write_text("user_id,post_id,at,kind\nu3,a,2024-01-03,\nu3,zz,2024-01-04,\nu9,b,2024-01-06,like\n")
    rep = _ingest(files, rt="bad.csv", skip_invalid=True)
    side = load_side_tables("x", files / "cache")
    assert rep.side == {"interactions": 2, "follows": 2}
    assert side["interactions"]["kind"].to_list() == ["retweet", "like"]  # default kind; users who never post allowed
    rej = pl.read_parquet(rep.side_rejected["interactions"])
    assert rej["line"].to_list() == [3] and "unknown post" in rej["reason"][0]
    rep = _ingest(files, fo=None)  # a re-ingest replaces the side tables, removing those not given
    assert rep.side_removed == ["follows"] and set(load_side_tables("x", files / "cache")) == {"interactions"}
    assert not (files / "cache" / "x" / "interactions.rejected.parquet").exists()


def test_cli_ingest_side_tables_exit_2(files):
    r = CliRunner().invoke(cli.app, ["ingest", str(files / "posts.csv"), "--name", "x", "--cache", str(files / "cache"),
                                     "--interactions", str(files / "fo.csv")])
    assert r.exit_code == 2 and "missing required column(s) post_id, at" in r.output


def test_training_negatives_never_retweeted_in_training_nor_after_the_cut(tmp_path):
    posts = tiny.make_dataset(tmp_path)
    side = _tiny_tasks.social_tables(posts, n_fans=12, seed=3)

    task = tasks.get("ranking")
    parts = task(config=task.Config(negatives=2, seed=7)).prepare(posts, side, parse_split(None), {})
    train = parts.data["train"]
    cut = train.side["interactions"]["at"].max()
    retweeted = set(train.side["interactions"].select("user_id", "post_id").iter_rows())
    posted = dict(posts.select("post_id", "posted_at").iter_rows())
    neg = train.examples.filter(pl.col("label") == 0)
    assert neg.height > 0
    for u, p in neg.select("user_id", "post_id").iter_rows():
        assert (u, p) not in retweeted and posted[p] <= cut
    # the user's later training retweets count too: a tweet retweeted after this positive is never its negative
    later = {(u, p) for u, p, at in train.side["interactions"].iter_rows() if at > train.examples["at"].min()}
    assert not later & set(neg.select("user_id", "post_id").iter_rows())


def test_ties_count_their_mean_not_their_listing_order():
    # a constant scorer: the positive listed first must not win P@1
    m = ranking_metrics(["u"] * 3, np.array([1, 0, 0]), np.zeros(3))
    assert m["p@1"] == pytest.approx(1 / 3) and m["auc"] == 0.5
    # ranked: 1 (0.9), then a tie of {0, 0, 1} at 0.5 -> P@3 = (1 + 1/3 + 1/3) / 3
    m = ranking_metrics(["u"] * 4, np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.5, 0.5]))
    assert m["p@1"] == 1.0 and m["p@3"] == pytest.approx(5 / 9) and m["auc"] == pytest.approx(0.75)


def test_sentences_split_at_the_separator():
    t = np.array([[5, 6, 9, 7, 9, 8, 0], [5, 0, 0, 0, 0, 0, 0]], np.int32)
    s = sentences(t, 9)
    assert s.shape == (2, 3, 7)
    assert s[0, 0, :2].tolist() == [5, 6] and s[0, 1, :1].tolist() == [7] and s[0, 2, :1].tolist() == [8]
    assert s[1, 0, 0] == 5 and not s[1, 1:].any()
    assert sentences(t, None).shape == (2, 1, 7)


def test_amnl_score_is_f_times_followee_attention():
    torch.manual_seed(0)
    m = AMNLModel(n_users=4, dim=3, visual_dim=2, text=None, text_dim=1, followees=[[], [2, 3], [], []])
    b = {"user": torch.tensor([1, 2]), "visual": torch.randn(2, 2, 2), "visual_present": torch.ones(2, 2, dtype=torch.bool)}
    with torch.no_grad():
        z = m.tweets(b)
        u = m.U.weight
        out = m(b)
        # user 2 has no followees: h = 1, F = f
        torch.testing.assert_close(out[1], z[1] @ u[2])
        s = m.p(torch.tanh(m.W_s(u[1]) + m.W_n(u[[2, 3]]))).squeeze(-1)
        h = (torch.softmax(s, 0)[:, None] * (u[[2, 3]] @ z[0].T)).sum(0)
        torch.testing.assert_close(out[0], (z[0] @ u[1]) * h)


def _synth_ranking(out, *options: str) -> dict:
    """`pipe synth OUT --task ranking OPTIONS`, checked to succeed; its signals.json."""
    r = CliRunner().invoke(cli.app, ["synth", str(out), "--task", "ranking", *options])
    assert r.exit_code == 0, r.output
    return json.loads((out / "signals.json").read_text())


def test_synth_ranking_cli_writes_ingestable_files(tmp_path):
    out = tmp_path / "syn"
    sig = _synth_ranking(out, "--posts", "60", "--users", "40", "--image-size", "32")
    assert sig["task"] == "ranking" and len(sig["users"]) == 40 and sig["n_events"] > 0
    rep = ingest(out / "posts.parquet", "syn", cache=tmp_path / "c", interactions=out / "interactions.parquet",
                 follows=out / "follows.parquet")
    assert rep.rows == 60 and rep.side["interactions"] == sig["n_events"]


def test_synth_ranking_taste_follows_the_influencer(tmp_path):
    from pipeline.data.synth_ranking import synth

    synth(tmp_path, 60, image_size=16, seed=1)
    sig = json.loads((tmp_path / "signals.json").read_text())
    topic = {a: v["topic"] for a, v in sig["accounts"].items()}
    share = np.mean([v["taste"] == topic[v["influencer"]] for v in sig["users"].values()])
    assert share > 0.7  # 0.85 + chance
    posted = dict(pl.read_parquet(tmp_path / "posts.parquet").select("post_id", "posted_at").iter_rows())
    ev = pl.read_parquet(tmp_path / "interactions.parquet")
    assert all(at > posted[p] and at <= posted[p] + timedelta(hours=48) for p, at in ev.select("post_id", "at").iter_rows())


def test_score_ranks_new_posts_for_followers_or_given_users(tmp_path):
    from pipeline import api

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    posts = tiny.make_dataset(cache)
    for name, table in _tiny_tasks.social_tables(posts).items():
        table.write_parquet(cache / "tiny" / f"{name}.parquet")
    run = api.train("tiny", "popularity", cache=cache, runs=runs)
    new = posts.head(3).select("user_id", "posted_at", "score").with_columns(post_id=pl.Series(["n1", "n2", "n3"]))
    new.write_parquet(tmp_path / "new.parquet")
    api.score(run, tmp_path / "new.parquet", tmp_path / "s.parquet", cache=cache, runs=runs)
    s = pl.read_parquet(tmp_path / "s.parquet")
    follows = pl.read_parquet(cache / "tiny" / "follows.parquet")
    want = {(u, p) for p, a in new.select("post_id", "user_id").iter_rows()
            for u in follows.filter(pl.col("followee_id") == a)["user_id"]}
    assert set(s.select("user_id", "post_id").iter_rows()) == want
    assert s.columns == ["post_id", "user_id", "score", "rank", "unseen_user", "missing_image"]
    api.score(run, tmp_path / "new.parquet", tmp_path / "s2.parquet", cache=cache, runs=runs, dataset="again",
              users=["r0", "stranger"])
    s2 = pl.read_parquet(tmp_path / "s2.parquet").sort("user_id", "rank")
    assert s2.height == 6 and s2.filter(pl.col("user_id") == "r0")["rank"].to_list() == [1, 2, 3]


def test_synth_ranking_followee_shape_has_more_users_and_followee_driven_tastes(tmp_path):
    """Issue 19: `--shape followee` (300 users, 1,500 tweets by default): tastes follow the influencer."""
    from pipeline.data.synth_ranking import SHAPES

    sig = _synth_ranking(tmp_path / "f", "--shape", "followee", "--posts", "120", "--image-size", "8")
    assert len(sig["users"]) == 300 and len(sig["accounts"]) == 60 and SHAPES["followee"][1] == 1500
    topic = {a: v["topic"] for a, v in sig["accounts"].items()}
    assert np.mean([v["taste"] == topic[v["influencer"]] for v in sig["users"].values()]) > 0.9  # 0.95 + chance
    r = CliRunner().invoke(cli.app, ["synth", str(tmp_path / "x"), "--task", "ranking", "--shape", "noisy"])
    assert r.exit_code == 2 and "default, followee" in r.output


def test_a_ranking_run_is_sized_in_groups_not_example_rows(tmp_path):
    """The small-data rule and the schedule count what a training batch holds: a ranking part's
    (positive, negatives) groups. Counting its example rows (1 + negatives each) put a 3,000-tweet
    AMNL over the 20K threshold at 11.8K groups (issue 19: the paper's sizes, minutes a fit)."""
    from pipeline.run.train import TrainOptions, plan_run

    cache = tmp_path / "cache"
    posts = tiny.make_dataset(cache)
    for name, table in _tiny_tasks.social_tables(posts).items():
        table.write_parquet(cache / "tiny" / f"{name}.parquet")
    plan = plan_run(TrainOptions(dataset="tiny", head="amnl", cache=cache, runs=tmp_path / "runs",
                                 stores={"visual": tiny.FC, "text": tiny.TOKENS}))
    ex = plan.data["train"].examples
    assert plan.n_train == ex["group"].n_unique() < ex.height
