"""`pipe synth`: deterministic, real JPEGs, valid posts, and the planted signals as documented."""
from __future__ import annotations

import json
import math
import re
from collections import Counter

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline.core.errors import PipeError
from pipeline.data.ingest import read_posts_file
from pipeline.data.synth import SIGNAL_WORDS, SynthConfig, synth


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    path = synth(out, posts=400, image_size=32, seed=7)
    return out, pl.read_parquet(path), pl.read_parquet(out / "truth.parquet"), json.loads((out / "signals.json").read_text())


def test_same_seed_same_files_other_seed_differs(tmp_path, data):
    a, b, c = (synth(tmp_path / n, posts=50, image_size=24, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    ta, tb, tc = (pl.read_parquet(p) for p in (a, b, c))
    assert ta.equals(tb)
    assert not ta["score"].equals(tc["score"])
    for name in ta["image"]:
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()
    assert pl.read_parquet(a.parent / "truth.parquet").equals(pl.read_parquet(b.parent / "truth.parquet"))


def test_images_are_readable_jpegs_of_the_requested_size(data):
    out, df, _, _ = data
    for name in df["image"].to_list()[:50]:
        with Image.open(out / name) as im:
            assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"
            im.load()


def test_file_follows_the_posts_contract(data):
    out, df, _, _ = data
    table = read_posts_file(out / "posts.parquet")  # strict validation passes
    assert table.height == 400 and table["post_id"].n_unique() == 400
    assert table["image"][0] == str(out / df["image"][0])
    assert table["user_followers"].null_count() == 0
    assert table.select(pl.col("category", "subcategory", "concept").null_count()).row(0) == (0, 0, 0)
    # views / days agree with the score (views are rounded)
    back = np.log2(df["views"].to_numpy() / df["days"].to_numpy() + 1)
    np.testing.assert_allclose(back, df["score"].to_numpy(), atol=0.05)
    span = df["posted_at"].max() - df["posted_at"].min()
    assert 300 <= span.days <= 367


def test_planted_score_is_the_documented_sum(data):
    _, df, truth, _ = data
    cfg = SynthConfig()
    t = df.join(truth, on="post_id")
    want = (t["base"] + cfg.object_effect * t["object_hit"].cast(pl.Float64) + cfg.word_effect * t["word_hit"].cast(pl.Float64)
            + t["trend"] + t["category_effect"] + t["noise"])
    np.testing.assert_allclose(t["score"].to_numpy(), want.to_numpy(), atol=1e-9)
    assert abs(t["object_hit"].mean() - cfg.p_lucky) < 0.1 and abs(t["word_hit"].mean() - cfg.p_lucky) < 0.1
    assert t["noise"].std() == pytest.approx(cfg.noise_sd, rel=0.2)


def test_signals_are_user_conditional(data):
    _, df, truth, signals = data
    t = df.join(truth, on="post_id")
    users = signals["users"]
    assert len(users) == 10  # 400 posts / 40
    for r in t.iter_rows(named=True):
        mine = users[r["user_id"]]
        assert r["object_hit"] == (r["shown_object"] == mine["lucky_object"])
        assert r["word_hit"] == (r["signal_word"] == mine["lucky_word"])
        words = (r["title"] + " " + r["text"]).split()
        assert [w for w in words if w in SIGNAL_WORDS] == [r["signal_word"]]
    # every object is shown on posts of users it is not lucky for, where it adds nothing
    off = t.filter(~pl.col("object_hit"))
    assert off["shown_object"].n_unique() == 8


def test_hisave_leaves_most_planted_variance(data):
    """Per-user means (what HisAve learns) on the first 70 % miss the user-conditional bonuses."""
    _, df, truth, _ = data
    t = df.join(truth, on="post_id").sort("posted_at")
    cut = int(0.7 * t.height)
    train, test = t[:cut], t[cut:]
    means = train.group_by("user_id").agg(m=pl.col("score").mean())
    pred = test.join(means, on="user_id", how="left")["m"].fill_null(train["score"].mean())
    hisave = ((test["score"] - pred) ** 2).mean()
    oracle = (test["noise"] ** 2).mean()
    assert hisave > 5 * oracle


def test_vocabulary_words_appear_at_least_five_times(data):
    _, df, _, _ = data
    counts = Counter(w for s in (df["title"] + " " + df["text"]) for w in re.findall(r"[a-z]+", s.lower()))
    assert min(counts.values()) >= 5
    assert all(counts[w] >= 5 for w in SIGNAL_WORDS)


def test_near_duplicates_share_image_bytes_and_user(data):
    out, df, truth, _ = data
    dups = truth.filter(pl.col("duplicate_of").is_not_null())
    assert dups.height == round(400 * SynthConfig().near_duplicates)
    rows = {r["post_id"]: r for r in df.iter_rows(named=True)}
    for d in dups.iter_rows(named=True):
        a, b = rows[d["post_id"]], rows[d["duplicate_of"]]
        assert (out / a["image"]).read_bytes() == (out / b["image"]).read_bytes()
        assert a["user_id"] == b["user_id"] and a["post_id"] != b["post_id"]
        assert (a["title"], a["text"]) != (b["title"], b["text"])
        assert 0 < (a["posted_at"] - b["posted_at"]).total_seconds() <= 48 * 3600


def test_followers_grow_over_time_per_user(data):
    _, df, _, _ = data
    for _, g in df.sort("posted_at").group_by("user_id"):
        assert g["user_followers"].diff().drop_nulls().min() >= 0
    assert math.isfinite(df["user_followers"].max())


def test_cli_users_option_sets_the_number_of_users(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--posts", "400", "--users", "5", "--image-size", "32"])
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(tmp_path / "s" / "posts.parquet")["user_id"].n_unique() == 5


def test_text_variants_words_vocabulary_and_topic_signal(tmp_path):
    """Issue 9: --text-words, --vocab and --text-signal topic shape the text as documented."""
    from pipeline.data.synth import FILLER_WORDS, TOPICS, filler_vocab, parse_text_words

    cfg = SynthConfig(users=4, text_words=(6, 16), vocab=330, text_signal="topic")
    df = pl.read_parquet(synth(tmp_path / "v", posts=200, image_size=8, seed=1, config=cfg))
    truth = pl.read_parquet(tmp_path / "v" / "truth.parquet")
    signals = json.loads((tmp_path / "v" / "signals.json").read_text())
    vocab = filler_vocab(200, cfg)
    assert len(vocab) == len(set(vocab)) == 330 and vocab[:60] == FILLER_WORDS
    assert all(w.isalpha() for w in vocab) and not set(vocab) & {w for t in TOPICS for w in t}
    t = df.join(truth, on="post_id")
    lengths = [len((a + " " + b).split()) - 1 for a, b in zip(t["title"], t["text"])]
    assert min(lengths) >= 6 and max(lengths) <= 16 and len(set(w for s in t["text"] for w in s.split())) > 150
    for r in t.iter_rows(named=True):
        mine = signals["users"][r["user_id"]]
        assert r["word_hit"] == (r["signal_word"] in mine["lucky_topic"])
        assert r["signal_word"] in (r["title"] + " " + r["text"]).split()
    assert parse_text_words("6-16") == (6, 16) and parse_text_words("8") == (8, 8)
    with pytest.raises(PipeError):
        synth(tmp_path / "bad", posts=20, image_size=8, config=SynthConfig(text_words=(5, 2)))


def test_cli_synth_variant_flags(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "w"), "--posts", "40", "--image-size", "8", "--users", "2",
                                   "--text-words", "6-16", "--vocab", "100", "--text-signal", "topic"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "w" / "signals.json").read_text())["config"]
    assert (cfg["text_words"], cfg["vocab"], cfg["text_signal"]) == ([6, 16], 100, "topic")
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--posts", "40", "--text-words", "many"])
    assert res.exit_code == 2 and "LOW-HIGH" in res.output


def test_modality_signal_mixed_plants_image_only_and_text_only_users(tmp_path, data):
    """Issue 19: with --modality-signal mixed half the users' signal is in the image only, half in
    the text only; the posts are the default's, only the scores differ."""
    out, default_df, _, _ = data
    cfg = SynthConfig(modality_signal="mixed")
    df = pl.read_parquet(synth(tmp_path / "m", posts=400, image_size=32, seed=7, config=cfg))
    truth = pl.read_parquet(tmp_path / "m" / "truth.parquet")
    users = json.loads((tmp_path / "m" / "signals.json").read_text())["users"]
    assert Counter(u["carrier"] for u in users.values()) == {"image": 5, "text": 5}
    same = [c for c in df.columns if c not in ("score", "views")]
    assert df.select(same).equals(default_df.select(same))
    t = df.join(truth, on="post_id").with_columns(
        carrier=pl.col("user_id").replace_strict({k: v["carrier"] for k, v in users.items()}))
    total = cfg.object_effect + cfg.word_effect
    rest = t["base"] + t["trend"] + t["category_effect"] + t["noise"]
    img = (t["carrier"] == "image").cast(pl.Float64)
    want = rest + total * (img * t["object_hit"].cast(pl.Float64) + (1 - img) * t["word_hit"].cast(pl.Float64))
    np.testing.assert_allclose(t["score"].to_numpy(), want.to_numpy(), atol=1e-9)
    # the planted signal, recovered from the data alone: within a user, the score gap between
    # posts with and without the lucky object (word) is ~3 for image (text) users, ~0 otherwise
    t = t.with_columns(resid=pl.col("score") - pl.col("base") - pl.col("trend") - pl.col("category_effect"))
    for carrier, hit, other in (("image", "object_hit", "word_hit"), ("text", "word_hit", "object_hit")):
        g = t.filter(pl.col("carrier") == carrier)
        gap = lambda col: g.filter(pl.col(col))["resid"].mean() - g.filter(~pl.col(col))["resid"].mean()  # noqa: E731
        assert gap(hit) == pytest.approx(total, abs=0.4) and abs(gap(other)) < 0.4
    with pytest.raises(PipeError, match="modality-signal"):
        synth(tmp_path / "bad", posts=20, image_size=8, config=SynthConfig(modality_signal="image"))


def test_cli_modality_signal_flag(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "w"), "--posts", "40", "--image-size", "8", "--users", "4",
                                   "--modality-signal", "mixed"])
    assert res.exit_code == 0, res.output
    signals = json.loads((tmp_path / "w" / "signals.json").read_text())
    assert signals["config"]["modality_signal"] == "mixed"
    assert sorted(u["carrier"] for u in signals["users"].values()) == ["image", "image", "text", "text"]
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--posts", "40", "--task", "ranking",
                                   "--modality-signal", "mixed"])
    assert res.exit_code == 2 and "--modality-signal" in res.output
