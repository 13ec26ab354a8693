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
        self.codes = pl.DataFrame({"user_id": self.authors, "code": np.arange(len(self.authors), dtype=np.int64)})
        self.author = p["user_id"].rle_id().cast(pl.Int64).to_numpy()  # == code: p is sorted by user_id
        self.t = _epoch(p["posted_at"])
        self.times = np.unique(self.t)
        self.m = len(self.times) + 1
        self.key = self.author * self.m + np.searchsorted(self.times, self.t)
        self.first = np.searchsorted(self.key, np.arange(len(self.authors) + 1) * self.m)  # each author's block
        self.positions = pl.DataFrame({"post_id": p["post_id"], "q": np.arange(len(self.ids), dtype=np.int64)})

    def rank(self, t: np.ndarray) -> np.ndarray:
        """Rank of each time among the posts' times (0 for INT64_MIN): `bound`'s second argument.
        Taken per event, not per (event, followee) pair: the random searches cost most here."""
        return np.searchsorted(self.times, t, "left")

    def bound(self, author: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """First position of `author` posted at or after the time of `rank` (0: the author's first)."""
        out = self.first[author]
        later = rank > 0
        out[later] = np.searchsorted(self.key, author[later] * self.m + rank[later], "left")
        return out

    def code_of(self, frame: pl.DataFrame, column: str, name: str) -> pl.DataFrame:
        """`frame` with `name`: the author code of `column` (null for one who never posted)."""
        return frame.join(self.codes.rename({"user_id": column, "code": name}), on=column, how="left",
                          maintain_order="left")

    def position_of(self, frame: pl.DataFrame, name: str) -> pl.DataFrame:
        """`frame` with `name`: the pool position of its `post_id` (null for a post not in the pool)."""
        return frame.join(self.positions.rename({"q": name}), on="post_id", how="left", maintain_order="left")


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
        pairs = pool.code_of(ev.filter(pl.Series(has)).select("g", "user_id").join(
            fol.with_row_index("j"), on="user_id"), "followee_id", "a").drop_nulls("a").sort("g", "j")
        g, a = pairs["g"].to_numpy(), pairs["a"].to_numpy()
        lo, hi = pool.bound(a, pool.rank(self.lo_t)[g]), pool.bound(a, pool.rank(self.at)[g])
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
        # the seen posts inside those ranges (a training event sees training retweets only); only a
        # retweet of a followee's post can fall in one, so the seen pairs are cut to those first
        seen = seen_pairs(events) if seen is None else seen
        mine = pool.position_of(seen, "q").drop_nulls("q")
        mine = mine.with_columns(a=pl.Series(pool.author[mine["q"].to_numpy()])).join(
            pool.code_of(fol, "followee_id", "a").select("user_id", "a"), on=["user_id", "a"], how="semi")
        hit = ev.filter(pl.Series(has)).select("g", "user_id", "train").join(mine, on="user_id") \
            .filter(~pl.col("train") | pl.col("in_train"))
        r = pl.DataFrame({"g": g, "a": a, "lo": lo, "hi": hi, "off": off}) \
            .join(hit.select("g", "a", "q"), on=["g", "a"]) \
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
        keep[pool.position_of(seen, "q")["q"].drop_nulls().to_numpy()] = False
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
