"""Temporal context: the one definition of a post's window, for training, evaluation and
`pipe score` alike (DSN, dsn.md eq 2), and the user-history statistic of the SMP winners.

A window of length `l` is the post and the `l - 1` posts published just before it in the
`History` (ordered by posted_at, ties by post_id, strictly earlier; `scope="user"` keeps
the post's own user's posts only). It is returned as row indices into `history.posts`,
oldest first and the post itself last, left-aligned and padded with -1 on the right, so a
post with fewer earlier posts gets a shorter, masked window. Only indices leave here: a
head reads the features of those rows from `history.stores`, never a label.

`user_history` is the mean and count of the user's last `k` labels strictly before the
post; the History holds labels of training posts only, so no other label can enter.

For `pipe score`, `scoring_history` joins the run's dataset (labels of its training part
only) and the scored file (labels dropped) into one History, and `UnionStore` reads a
role's features from the scored file's store first, then the run's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError
from pipeline.store import FeatureStore
from pipeline.train.data import History

SCOPES = ("global", "user")


class UnionStore:
    """Read-only view over several stores of one spec; the first store holding an id wins."""

    def __init__(self, stores: Sequence[FeatureStore]) -> None:
        self.stores = list(stores)
        self.spec = self.stores[0].spec
        for s in self.stores[1:]:
            if s.spec != self.spec:
                raise PipeError(f"stores {self.stores[0].extractor_id} and {s.extractor_id} hold different features")

    @property
    def extractor_id(self) -> str:
        return self.stores[0].extractor_id

    def __contains__(self, post_id: object) -> bool:
        return any(post_id in s for s in self.stores)

    def __len__(self) -> int:
        return len(set().union(*(s.ids for s in self.stores)))

    def read(self, post_ids: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(post_ids), *self.spec.shape), np.dtype(self.spec.dtype))
        todo = np.ones(len(post_ids), bool)
        for s in self.stores:
            take = [i for i in np.flatnonzero(todo) if post_ids[i] in s]
            if take:
                out[take] = s.read([post_ids[i] for i in take])
                todo[take] = False
        if todo.any():
            raise KeyError(f"{int(todo.sum())} post ids in none of the stores: {[post_ids[i] for i in np.flatnonzero(todo)[:5]]}")
        return out


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise PipeError(f"window_scope must be one of {', '.join(SCOPES)}, got {scope!r}")


def _positions(history: History, post_ids: Sequence[str]) -> np.ndarray:
    pos = {p: i for i, p in enumerate(history.posts["post_id"].to_list())}
    missing = [p for p in post_ids if p not in pos]
    if missing:
        raise PipeError(f"{len(missing)} posts are not in the history, e.g. {missing[:5]}")
    return np.array([pos[p] for p in post_ids], np.int64)


def window_index(history: History, post_ids: Sequence[str], length: int, scope: str = "global") -> np.ndarray:
    """(N, length) int64 rows of `history.posts`: earlier posts oldest first, the post itself
    last, then -1 padding. Every post must be in the history."""
    check_scope(scope)
    if length < 1:
        raise PipeError(f"window must be at least 1 (the post alone), got {length}")
    at = _positions(history, post_ids)
    out = np.full((len(at), length), -1, np.int64)
    if scope == "global":
        for k, i in enumerate(at):
            rows = np.arange(max(0, i - length + 1), i + 1)
            out[k, : len(rows)] = rows
        return out
    users = history.posts["user_id"].to_list()
    by_user: dict[str, list[int]] = {}
    for j, u in enumerate(users):
        by_user.setdefault(u, []).append(j)
    for k, i in enumerate(at):
        rows = by_user[users[i]]
        e = int(np.searchsorted(rows, i)) + 1  # rows[e - 1] == i
        take = rows[max(0, e - length):e]
        out[k, : len(take)] = take
    return out


def window_table(history: History, post_ids: Sequence[str], length: int, scope: str) -> pl.DataFrame:
    """What a run records: each post's window as post ids (oldest first, the post last)."""
    ids = history.posts["post_id"].to_list()
    win = window_index(history, post_ids, length, scope)
    return pl.DataFrame({"post_id": list(post_ids), "window": [[ids[j] for j in row if j >= 0] for row in win]},
                        schema={"post_id": pl.Utf8, "window": pl.List(pl.Utf8)})


def user_history(history: History, post_ids: Sequence[str], k: int, target: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, count) of the user's last `k` labels strictly before each post, from the
    History's labels (training posts only); mean NaN where the count is 0."""
    at = _positions(history, post_ids)
    y = history.posts[target].cast(pl.Float64).to_numpy() if target in history.posts.columns else np.full(
        history.posts.height, np.nan)
    users = history.posts["user_id"].to_list()
    labelled: dict[str, list[int]] = {}
    for j, u in enumerate(users):
        if np.isfinite(y[j]):
            labelled.setdefault(u, []).append(j)
    mean, count = np.full(len(at), np.nan), np.zeros(len(at))
    for n, i in enumerate(at):
        rows = labelled.get(users[i], [])
        e = int(np.searchsorted(rows, i))  # labelled rows strictly before i
        take = rows[max(0, e - k):e]
        if take:
            mean[n], count[n] = float(np.mean(y[take])), len(take)
    return mean, count


def part_history(posts: pl.DataFrame, stores: dict, target: str) -> History:
    """A History of one part's own posts, labels dropped: the window of a head given no
    dataset History (a bare HeadData) comes from the posts it is given, features only."""
    known = posts.with_columns(pl.lit(None, pl.Float64).alias(target)) if target in posts.columns else posts
    return History(known.sort("posted_at", "post_id"), stores)


def scoring_history(run_posts: pl.DataFrame, train_ids: Sequence[str], new_posts: pl.DataFrame,
                    run_stores: dict[str, FeatureStore], new_stores: dict[str, FeatureStore],
                    target: str) -> tuple[History, int]:
    """The History a scored post's window (and user history) comes from: the run's dataset,
    labels of its training posts only, and the scored posts, labels dropped. A scored post
    whose id is also in the run's dataset replaces it (counted in the second value)."""
    new_ids = new_posts["post_id"].implode()
    old = run_posts.filter(~pl.col("post_id").is_in(new_ids))
    keep = pl.col("post_id").is_in(pl.Series(list(train_ids), dtype=pl.Utf8).implode())
    if target in old.columns:
        old = old.with_columns(pl.when(keep).then(pl.col(target)).otherwise(None).cast(pl.Float64).alias(target))
    new = new_posts.with_columns(pl.lit(None, pl.Float64).alias(target))
    posts = pl.concat([old, new], how="diagonal_relaxed").sort("posted_at", "post_id")
    stores = {r: UnionStore([new_stores[r], run_stores[r]]) if r in run_stores else new_stores[r] for r in new_stores}
    return History(posts, stores), run_posts.height - old.height
