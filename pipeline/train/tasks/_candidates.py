"""The ranking task's candidate lists, built without a Python pass over the candidate pool.

An event's eligible negatives are, in order, the posts of each of its user's followees (in
the follows table's row order; every author in sorted order when the user has none), each
author's posts by (posted_at, post_id), posted in [start, at), less the post itself and the
user's seen posts. Listing them costs events x pool (the pool grows with the data: N^1.6);
drawing k of them needs only their count and k positions. So each (event, followee) pair
is one range of an author-major array of posts (two searchsorted bounds), the seen posts
falling in those ranges are found by a join, and a draw maps back to a post through those
ranges and exclusions: linear in events x (followees + seen + k). The draw itself stays one
`rng.choice(n, min(k, n), replace=False)` per event in event order, the stream of the
lists before this module, so the lists are the same for the same seed.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl


def _epoch(s: pl.Series) -> np.ndarray:
    return s.dt.epoch("us").to_numpy().astype(np.int64)


class Pool:
    """Posts in author-major order (author, posted_at, post_id) with a sortable (author, time) key."""

    def __init__(self, posts: pl.DataFrame) -> None:
        p = posts.select("post_id", "user_id", "posted_at").sort("user_id", "posted_at", "post_id")
        self.ids = p["post_id"].to_numpy()
        self.authors = p["user_id"].unique(maintain_order=True)  # sorted
        self.code = dict(zip(self.authors.to_list(), range(len(self.authors))))
        self.author = p["user_id"].replace_strict(self.code, return_dtype=pl.Int64).to_numpy()
        self.t = _epoch(p["posted_at"])
        self.times = np.unique(self.t)
        self.m = len(self.times) + 1
        self.key = self.author * self.m + np.searchsorted(self.times, self.t)
        self.pos = dict(zip(self.ids.tolist(), range(len(self.ids))))

    def bound(self, author: np.ndarray, t: np.ndarray) -> np.ndarray:
        """First position of `author` posted at or after `t` (t = INT64_MIN: the author's first)."""
        return np.searchsorted(self.key, author * self.m + np.searchsorted(self.times, t), "left")


def _lookup(col: pl.Series, mapping: dict) -> pl.Series:
    return col.replace_strict(mapping, default=None, return_dtype=pl.Int64)


def seen_pairs(events: pl.DataFrame) -> pl.DataFrame:
    """(user_id, post_id, in_train) of every retweet: never a negative of that user."""
    return events.select("user_id", "post_id", (pl.col("split") == "train").alias("in_train")) \
        .group_by("user_id", "post_id").agg(pl.col("in_train").any())


class Candidates:
    """Each event's eligible negatives as ranges of the pool: `count[g]`, and `take(g, idx)`
    for the posts at sorted positions `idx` of event g's list."""

    def __init__(self, pool: Pool, events: pl.DataFrame, follows: pl.DataFrame | None,
                 starts: dict[str, Any], seen: pl.DataFrame | None = None) -> None:
        """`events` may be a slice of the event table (a partition), given `starts` and
        `seen` of the whole table: each event's list depends on nothing else."""
        self.pool = pool
        n = events.height
        lo_t = np.full(n, np.iinfo(np.int64).min)
        part = events["split"].to_numpy()
        for p, s in starts.items():
            if p != "train" and s is not None:
                lo_t[part == p] = _epoch(pl.Series([s], dtype=events["at"].dtype))[0]
        self.lo_t, self.at = lo_t, _epoch(events["at"])
        ev = events.select(pl.int_range(n, dtype=pl.Int64).alias("g"), "user_id", "post_id",
                           (pl.col("split") == "train").alias("train"))
        fol = pl.DataFrame(schema={"user_id": pl.Utf8, "followee_id": pl.Utf8}) if follows is None else \
            follows.select("user_id", "followee_id")
        has = ev["user_id"].is_in(fol["user_id"].implode()).to_numpy()
        self.fallback = ~has  # users without followees: every author (explicit, per event)
        self.no_followees = set(ev.filter(~pl.Series(has))["user_id"].to_list())
        # (event, followee) ranges in event order, then follows-row order
        pairs = ev.filter(pl.Series(has)).select("g", "user_id").join(
            fol.with_row_index("j"), on="user_id").with_columns(a=_lookup(pl.col("followee_id"), pool.code)) \
            .drop_nulls("a").sort("g", "j")
        g, a = pairs["g"].to_numpy(), pairs["a"].to_numpy()
        lo, hi = pool.bound(a, self.lo_t[g]), pool.bound(a, self.at[g])
        keep = hi > lo
        g, a, lo, hi = g[keep], a[keep], lo[keep], hi[keep]
        size = hi - lo
        first = np.searchsorted(g, np.arange(n + 1))  # each event's block of ranges
        cum = np.cumsum(size)
        off = cum - size - np.repeat(np.r_[0, cum][first[:-1]], np.diff(first))  # offset within the event
        raw = np.zeros(n, np.int64)
        np.add.at(raw, g, size)
        self.span = int(raw.max(initial=0)) + 1
        self.g, self.a, self.lo, self.off = g, a, lo, off
        self.rkey = g * self.span + off
        # the seen posts inside those ranges (a training event sees training retweets only)
        seen = seen_pairs(events) if seen is None else seen
        hit = ev.filter(pl.Series(has)).select("g", "user_id", "train").join(seen, on="user_id") \
            .filter(~pl.col("train") | pl.col("in_train")) \
            .with_columns(q=_lookup(pl.col("post_id"), pool.pos)).drop_nulls("q")
        hg, hq = hit["g"].to_numpy(), hit["q"].to_numpy().astype(np.int64)
        r = pl.DataFrame({"g": g, "a": a, "lo": lo, "hi": hi, "off": off}) \
            .join(pl.DataFrame({"g": hg, "a": pool.author[hq],
                                "q": hq}), on=["g", "a"]) \
            .filter((pl.col("q") >= pl.col("lo")) & (pl.col("q") < pl.col("hi"))) \
            .select("g", (pl.col("off") + pl.col("q") - pl.col("lo")).alias("x")).sort("g", "x")
        xg, x = r["g"].to_numpy(), r["x"].to_numpy()
        xfirst = np.searchsorted(xg, np.arange(n + 1))
        rank = np.arange(len(x)) - np.repeat(xfirst[:-1], np.diff(xfirst))
        self.xkey = xg * self.span + (x - rank)  # y_j = x_j - j: a filtered index i maps to i + #{y <= i}
        self.xfirst = xfirst
        self.count = raw - np.diff(xfirst)
        self.seen_by_user = seen
        self.train = ev["train"].to_numpy()
        self.user = ev["user_id"].to_numpy()
        for i in np.flatnonzero(self.fallback):
            self.count[i] = len(self._every_author(i))

    def _every_author(self, g: int) -> np.ndarray:
        """Positions of event g's list when its user follows no one: every author's posts in the window."""
        pool, keep = self.pool, (self.pool.t >= self.lo_t[g]) & (self.pool.t < self.at[g])
        seen = self.seen_by_user.filter((pl.col("user_id") == self.user[g]) & (pl.col("in_train") | pl.lit(not self.train[g])))
        q = [pool.pos[p] for p in seen["post_id"].to_list() if p in pool.pos]
        keep[q] = False
        return np.flatnonzero(keep)

    def take(self, g: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Post ids at filtered positions `idx` of events `g` (followee events; vectorized)."""
        base = g * self.span
        v = idx + np.searchsorted(self.xkey, base + idx, "right") - self.xfirst[g]
        r = np.searchsorted(self.rkey, base + v, "right") - 1
        return self.pool.ids[self.lo[r] + v - self.off[r]]

    def take_one(self, g: int, idx: np.ndarray) -> np.ndarray:
        """Post ids at positions `idx` of a fallback event's list."""
        return self.pool.ids[self._every_author(g)[idx]]
