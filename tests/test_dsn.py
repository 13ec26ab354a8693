"""DSN and temporal windows: windows hold only strictly earlier posts and never a label,
later posts change no earlier prediction, statistics come from the training part, the
user history uses earlier training labels only; shapes of the blocks; every ablation
trains. (A run's window scope at `pipe score`: tests/test_smpd_e2e.py.)"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests import _tiny_data as tiny
import numpy as np
import polars as pl
import pytest
import torch

from heads.dsn import DSN, HCE, Adapter, TemporalFusion
from heads.lightgbm import LightGBMHead
from pipeline.core.config import build_config, parse_sets
from pipeline.data.splits import parse_split

from pipeline.store import open_store
from pipeline.train.data import History
from pipeline.train.tasks.regression import Regression
from pipeline.train.windows import UnionStore, user_history, window_index

TINY = ["max_steps=6", "eval_every=3", "patience=2", "batch_size=16", "dim=16", "window=4", "seed=0"]
STORES = {"visual": tiny.FC, "text": tiny.TEXTVEC}


def _history(n=12, users=("a", "b"), labels=None) -> History:
    t0 = datetime(2021, 1, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(0)
    posts = pl.DataFrame({"post_id": [f"q{i:02d}" for i in range(n)], "user_id": [users[i % len(users)] for i in range(n)],
                          "posted_at": [t0 + timedelta(hours=int(h)) for h in rng.integers(0, 4, n)],  # many ties
                          "score": labels if labels is not None else [float(i) for i in range(n)]})
    return History(posts.sort("posted_at", "post_id"))


@pytest.mark.parametrize("scope", ["global", "user"])
def test_a_window_holds_the_post_last_and_only_strictly_earlier_posts(scope):
    h = _history()
    key = {(r["post_id"]): (r["posted_at"], r["post_id"]) for r in h.posts.iter_rows(named=True)}
    ids, users = h.posts["post_id"].to_list(), h.posts["user_id"].to_list()
    win = window_index(h, ids, 4, scope)
    assert win.shape == (len(ids), 4)
    for pid, row in zip(ids, win):
        real = [ids[j] for j in row if j >= 0]
        assert (row[len(real):] == -1).all()  # padding only after the real posts
        assert real[-1] == pid
        assert all(key[e] < key[pid] for e in real[:-1])  # strictly earlier, ties by post_id
        assert [key[e] for e in real] == sorted(key[e] for e in real)  # oldest first
        if scope == "user":
            assert {users[ids.index(e)] for e in real} == {users[ids.index(pid)]}
    assert (window_index(h, ids, 1, scope)[:, 0] == np.arange(len(ids))).all()  # window 1: the post alone


def test_user_history_uses_only_earlier_training_labels():
    n = 12
    labels = [float(i) if i % 3 else None for i in range(n)]  # every third post: not a training post (no label)
    h = _history(n, labels=labels)
    ids = h.posts["post_id"].to_list()
    mean, count = user_history(h, ids, 2, "score")
    rows = h.posts.with_row_index("pos").to_dicts()
    for i, r in enumerate(rows):
        earlier = [x["score"] for x in rows[:i] if x["user_id"] == r["user_id"] and x["score"] is not None][-2:]
        assert count[i] == len(earlier)
        assert (np.isnan(mean[i]) if not earlier else mean[i] == pytest.approx(np.mean(earlier)))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("dsn")
    posts = tiny.make_dataset(cache, n=80, seed=3).with_columns(
        pl.Series("category", [["x", "y", "z"][i % 3] for i in range(80)]),
        pl.Series("subcategory", [f"s{i % 5}" for i in range(80)]), pl.Series("concept", [f"c{i % 7}" for i in range(80)]))
    stores = {r: open_store("tiny", e, cache) for r, e in STORES.items()}
    return cache, posts, stores


def _fit(parts, sets=(), ablate=()):
    cache, posts, stores = parts
    given = parse_sets([*TINY, *sets])
    aliased = {k: given.pop(k) for k in Regression.ALIASES if k in given}  # --set window=.. is the task's, as in pipe train
    config = build_config("dsn", DSN.Config, given, list(ablate))
    task = Regression(config=Regression.build_config(DSN, aliased))
    p = task.prepare(posts, {}, parse_split(None), {r: s for r, s in stores.items()}).data
    with torch.random.fork_rng():
        head = DSN(config).fit(p["train"], p["valid"])
    return head, p


def test_later_posts_and_any_label_change_no_earlier_prediction(parts, tmp_path, one_thread):
    cache, posts, stores = parts
    head, p = _fit(parts)
    test = p["test"]
    base = head.predict(test)
    hist = test.history
    order = hist.posts["post_id"].to_list()
    later = order[-1]  # the last post of the dataset
    # new features for the latest post (a store holding only it, read first) and new labels for every post
    tiny.write_store(cache, "tiny-later", tiny.FC, open_store("tiny", tiny.FC, cache).spec, [later],
                     np.full((1, 16), 9.0, np.float32))
    changed = {"visual": UnionStore([open_store("tiny-later", tiny.FC, cache), stores["visual"]]), "text": stores["text"]}
    shuffled = hist.posts.with_columns(pl.Series("score", np.random.default_rng(1).normal(0, 50, hist.posts.height)))
    test2 = test.with_posts(test.posts)
    test2.history = History(shuffled, changed)
    again = head.predict(test2)
    ids = test.ids
    earlier = np.array([p_ != later for p_ in ids])
    np.testing.assert_allclose(again[earlier], base[earlier], rtol=0, atol=0)  # labels never enter, later posts never
    assert later in ids and not np.allclose(again[~earlier], base[~earlier])  # the post's own features do count


def test_statistics_and_vocabularies_come_from_the_training_part(parts, one_thread):
    head, p = _fit(parts)
    train = p["train"].posts
    assert head.meta["categories"]["concept"] == sorted(set(train["concept"].to_list()))
    assert head.meta["user_cols"] == ["user_followers"]
    mean, std = head.meta["user_stats"][0]
    assert mean == pytest.approx(train["user_followers"].mean()) and std == pytest.approx(train["user_followers"].std())
    test = p["test"].with_posts(p["test"].posts)
    test.history = History(test.history.posts.with_columns(pl.lit("never-seen").alias("concept")), test.history.stores)
    cols = head.columns(test, False)
    assert (cols.cats[:, 2] == 0).all() and (cols.cats[:, 0] > 0).all()  # a value no training post had: row 0


def test_block_shapes():
    x = torch.randn(3, 5, 12)
    assert Adapter(12, 8, 0.2)(x).shape == (3, 5, 8)
    a = Adapter(12, 8, 0.2)
    y1, y2 = a(x), a(torch.cat([x[:, :3], torch.randn(3, 2, 12)], 1))
    torch.testing.assert_close(y1[:, :3], y2[:, :3])  # causal: a position never sees a later one
    codes = torch.randint(0, 4, (3, 5, 3))
    for mode in ("first", "second", "third", "concat", "sum", "hce"):
        assert HCE([3, 3, 3], 8, mode)(codes).shape == (3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    tf = TemporalFusion(24, 8, 4, True, True, 0.0).eval()
    h, alpha = tf(torch.randn(3, 5, 24), mask)
    assert h.shape == (3, 8) and alpha.shape == (3, 4, 5)
    torch.testing.assert_close(alpha[0].sum(-1), torch.ones(4))  # over the 4 earlier posts
    assert alpha[0, :, 4].abs().max() == 0 and alpha[1, :, 1:].abs().max() == 0  # never the target, never padding
    assert alpha[2].abs().max() == 0  # no earlier post: h = 0
    for short, long in ((False, True), (True, False), (False, False)):
        assert TemporalFusion(24, 8, 4, short, long, 0.0)(torch.randn(3, 5, 24), mask)[0].shape == (3, 8)


@pytest.mark.parametrize("sets,ablate", [
    ((), ("image",)), ((), ("text",)), ((), ("category",)), ((), ("short_term",)), ((), ("long_term",)),
    ((), ("user",)), ((), ("image", "text", "category")), (("window=1",), ()), (("window_scope=user",), ()),
    *[((f"hce={m}",), ()) for m in ("first", "second", "third", "concat", "sum")], (("alpha=1", "beta=0"), ()),
])
def test_every_ablation_trains(parts, sets, ablate, one_thread):
    head, p = _fit(parts, sets, ablate)
    out = head.predict(p["test"])
    assert out.shape == (len(p["test"]),) and np.isfinite(out).all()


def test_lightgbm_with_categories_and_user_history(parts, one_thread):
    cache, posts, stores = parts
    config = build_config("lightgbm", LightGBMHead.Config, {"n_estimators": 20, "n_jobs": 1, "min_child_samples": 5,
                                                            "categories": True, "user_history": 3})
    p = Regression().prepare(posts, {}, parse_split(None), stores).data
    head = LightGBMHead(config).fit(p["train"], p["valid"])
    assert {"category", "subcategory", "concept", "hist_mean", "hist_count"} <= set(head.features.names)
    assert "category" in head._categorical()
    base = head.predict(p["test"])
    # valid/test labels are not in the History: changing them changes nothing
    test = p["test"].with_posts(p["test"].posts.with_columns(pl.lit(100.0).alias("score")))
    np.testing.assert_array_equal(head.predict(test), base)


def test_synth_sequence_plants_an_effect_of_the_earlier_posts_only(tmp_path):
    from pipeline.data.synth_sequence import synth

    posts = pl.read_parquet(synth(tmp_path / "seq", 120, image_size=16, seed=1)).sort("posted_at", "post_id")
    truth = pl.read_parquet(tmp_path / "seq" / "truth.parquet")
    c = dict(zip(truth["post_id"], truth["same_category_before"]))
    cats = posts["category"].to_list()
    for i, pid in enumerate(posts["post_id"].to_list()):
        assert c[pid] == sum(x == cats[i] for x in cats[max(0, i - 7):i])  # the 7 posts before, never a later one
    effect = dict(zip(truth["post_id"], truth["sequence_effect"]))
    assert np.corrcoef([effect[p] for p in posts["post_id"]], [c[p] for p in posts["post_id"]])[0, 1] > 0.99


def test_a_dsn_saved_with_its_window_in_the_config_loads_with_that_window(parts, tmp_path, one_thread):
    """A model saved before tasks owned the window (issue 18) kept `window` in its config and
    not in its meta: it loads, and predicts with that window."""
    import json

    head, p = _fit(parts, sets=("window=3",))
    head.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "head.json").read_text())
    doc["config"]["window"], doc["config"]["window_scope"] = doc["meta"].pop("window"), doc["meta"].pop("window_scope")
    (tmp_path / "m" / "head.json").write_text(json.dumps(doc))
    old = DSN.load(tmp_path / "m")
    assert old.meta["window"] == 3 and old.meta["window_scope"] == "global"
    np.testing.assert_array_equal(old.predict(p["test"]), head.predict(p["test"]))


def test_small_data_regime_sizes_dsn_to_the_data():
    """Below 20K training posts DSN trains at dim 64, batch 64 (the paper's 256 / 512 left a
    400-post run at step 0); `regime=paper` keeps the paper's sizes."""
    from heads.dsn import DSN
    from pipeline.train.regime import resolve_regime

    small, _ = resolve_regime(DSN, DSN.Config(), 400)
    assert (small.regime, small.dim, small.batch_size) == ("small", 64, 64)
    paper, _ = resolve_regime(DSN, DSN.Config(regime="paper"), 400)
    assert (paper.dim, paper.batch_size) == (256, 512)


def test_synth_sequence_short_shape_counts_three_earlier_posts_among_more_users(tmp_path):
    """Issue 19: `pipe synth --task sequence --shape short`: 24 users, a context of 3 posts."""
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--task", "sequence", "--shape", "short",
                                   "--posts", "240", "--image-size", "16"])
    assert res.exit_code == 0, res.output
    posts = pl.read_parquet(tmp_path / "s" / "posts.parquet").sort("posted_at", "post_id")
    truth = pl.read_parquet(tmp_path / "s" / "truth.parquet")
    c = dict(zip(truth["post_id"], truth["same_category_before"]))
    cats = posts["category"].to_list()
    assert posts["user_id"].n_unique() == 24
    assert all(c[p] == sum(x == cats[i] for x in cats[max(0, i - 3):i]) for i, p in enumerate(posts["post_id"]))
