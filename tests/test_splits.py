"""Splits: chronological order, fractions, the UHAN variant, determinism, bad input."""
from __future__ import annotations

import polars as pl
import pytest
from tests._tiny_data import make_posts

from pipeline.core.errors import PipeError
from pipeline.data.splits import assign_split, parse_split


@pytest.fixture
def posts():
    df, _ = make_posts(200, seed=3)
    return df.sample(fraction=1.0, shuffle=True, seed=1)  # input order must not matter


def _part(df, name):
    return df.filter(pl.col("split") == name)


@pytest.mark.parametrize("text,fractions", [(None, (0.7, 0.1, 0.2)), ("0.8,0.1,0.1", (0.8, 0.1, 0.1))])
def test_chronological_split_orders_and_fractions(posts, text, fractions):
    spec = parse_split(text)
    out = assign_split(posts, spec)
    tr, va, te = (_part(out, p) for p in ("train", "valid", "test"))
    assert (tr.height, va.height, te.height) == tuple(round(200 * f) for f in fractions)
    assert tr["posted_at"].max() <= va["posted_at"].min()
    assert va["posted_at"].max() <= te["posted_at"].min()
    assert sorted(out["post_id"]) == sorted(posts["post_id"])


def test_uhan_split_is_time_then_random_and_seeded(posts):
    a = assign_split(posts, parse_split("uhan"))
    tr, va, te = (_part(a, p) for p in ("train", "valid", "test"))
    assert tr.height == 140 and va.height == 20 and te.height == 40
    assert tr["posted_at"].max() <= min(va["posted_at"].min(), te["posted_at"].min())
    # valid and test interleave in time (random), unlike the chronological split
    assert va["posted_at"].max() > te["posted_at"].min()
    again = assign_split(posts.reverse(), parse_split("uhan"))
    assert a.select("post_id", "split").equals(again.select("post_id", "split"))
    other = assign_split(posts, parse_split("uhan:7"))
    assert not a.select("post_id", "split").equals(other.select("post_id", "split"))


def test_ties_in_time_break_by_post_id(posts):
    same = posts.with_columns(pl.lit(posts["posted_at"][0]).alias("posted_at"))
    out = assign_split(same, parse_split(None))
    assert out["post_id"].to_list() == sorted(posts["post_id"].to_list())


@pytest.mark.parametrize("bad", ["0.5,0.5", "0.8,0.1,0.2", "a,b,c", "0.9,0,0.1", "uhan:x"])
def test_bad_split_text_is_a_pipe_error(bad):
    with pytest.raises(PipeError, match="--split"):
        parse_split(bad)


def test_too_few_posts_names_the_counts(posts):
    with pytest.raises(PipeError, match="too few"):
        assign_split(posts.head(3), parse_split(None))
