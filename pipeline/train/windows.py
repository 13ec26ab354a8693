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
    q = pl.DataFrame({"post_id": list(post_ids)}, schema={"post_id": pl.Utf8})
    pos = q.join(history.posts.select(pl.col("post_id").cast(pl.Utf8)).with_row_index("i"), on="post_id",
                 how="left", maintain_order="left")["i"]
    if pos.null_count():
        missing = q.filter(pos.is_null())["post_id"]
        raise PipeError(f"{len(missing)} posts are not in the history, e.g. {missing.head(5).to_list()}")
    return pos.to_numpy().astype(np.int64)


def window_index(history: History, post_ids: Sequence[str], length: int, scope: str = "global") -> np.ndarray:
    """(N, length) int64 rows of `history.posts`: earlier posts oldest first, the post itself
    last, then -1 padding. Every post must be in the history."""
    check_scope(scope)
    if length < 1:
        raise PipeError(f"window must be at least 1 (the post alone), got {length}")
    at = _positions(history, post_ids)
    if scope == "global":
        first = np.zeros(len(at), np.int64)  # every post of the history is one sequence
        order, rank = np.arange(history.posts.height), at
    else:
        order, first, rank = _by_user(history.posts["user_id"], at)
    n = np.minimum(rank + 1, length)  # the window's posts, the post itself included
    d = np.arange(length)
    out = order[first[:, None] + (rank - n + 1)[:, None] + np.minimum(d, n[:, None] - 1)]
    out[d >= n[:, None]] = -1
    return out


def _by_user(users: pl.Series, at: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """History rows grouped by user (each user's in history order), and for each post at
    history row `at`: its user's first place in that order and the post's rank among them.
    `rows` limits the grouping to those rows (rank: how many of them come before the post)."""
    code = users.cast(pl.Categorical).to_physical().to_numpy()  # a code per user (any order)
    order = np.argsort(code, kind="stable")  # rows grouped by user, in history order within a user
    p = np.empty(len(code), np.int64)
    p[order] = np.arange(len(code))  # each row's place in that order
    sc = code[order]
    start = np.maximum.accumulate(np.where(np.r_[True, sc[1:] != sc[:-1]], np.arange(len(code)), 0))
    keep = np.ones(len(code), bool) if rows is None else np.isin(order, rows)
    before = np.r_[0, np.cumsum(keep)]  # kept rows before each place
    first = before[start[p[at]]]
    return order[keep], first, before[p[at]] - first


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
    order, first, before = _by_user(history.posts["user_id"], at, np.flatnonzero(np.isfinite(y)))
    n = np.minimum(before, k)  # labelled rows of the user strictly before the post, the last k
    mean, count = np.full(len(at), np.nan), n.astype(np.float64)
    for m in range(1, k + 1):  # one block per count: np.mean over rows of m, as over each slice
        sel = np.flatnonzero(n == m)
        if sel.size:
            mean[sel] = np.mean(y[order[(first[sel] + before[sel] - m)[:, None] + np.arange(m)]], axis=1)
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
