"""Tiny train/valid/test parts for every task, so head tests loop over heads of any task.

`parts(task, cache, stores, head)` builds the three HeadData parts of the tiny dataset
(tests/_tiny_data.py, written under `cache` as "tiny") the way `pipe train` does for that
task and head class (`task_for`: the task config with the head's `task_defaults`): every
task gets the same labelled posts and side tables and reads what it needs, so a new task
needs no builder here. `n_outputs` is how many values `predict` returns; `stranger` is a
part whose user was never seen in training.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline.data.splits import parse_split
from pipeline.store import FeatureStore
from pipeline.train import tasks
from pipeline.train.data import HeadData

def task_for(head: type, given: dict[str, Any] | None = None, target: str = "score", **options: Any) -> tasks.Task:
    """The task a run of `head` is judged by, configured as `pipe train` configures it."""
    cls = tasks.get(head.task)
    return cls(target, cls.build_config(head, given), **options)


def _posts(cache: Path) -> pl.DataFrame:
    return pl.read_parquet(cache / "tiny" / "posts.parquet")


def social_tables(posts: pl.DataFrame, n_fans: int = 10, seed: int = 0) -> dict[str, pl.DataFrame]:
    """Follows and retweets over the tiny posts: fans r0.. (who never post) each follow 3 of
    the authors and retweet, 1-5 hours after posting, about a third of their tweets."""
    rng = np.random.default_rng(seed)
    authors = sorted(posts["user_id"].unique().to_list())
    follows = [(f"r{k}", a) for k in range(n_fans) for a in rng.choice(authors, 3, replace=False)]
    by_author = {a: g for (a,), g in posts.group_by(["user_id"])}
    events = []
    for fan, author in follows:
        for pid, at in by_author[author].select("post_id", "posted_at").iter_rows():
            if rng.random() < 0.35:
                events.append((fan, pid, at + timedelta(hours=int(rng.integers(1, 6)))))
    return {"follows": pl.DataFrame(follows, schema=["user_id", "followee_id"], orient="row"),
            "interactions": pl.DataFrame(events, schema={"user_id": pl.Utf8, "post_id": pl.Utf8,
                                                         "at": pl.Datetime("us", "UTC")}, orient="row")}


def labelled_posts(cache: Path) -> pl.DataFrame:
    """The tiny posts with labels (dog / cat by parity, sky on every third), as `tags` too."""
    posts = _posts(cache)
    labels = [["dog" if i % 2 else "cat"] + (["sky"] if i % 3 == 0 else []) for i in range(posts.height)]
    return posts.with_columns(labels=pl.Series(labels, dtype=pl.List(pl.Utf8)),
                              tags=pl.Series(labels, dtype=pl.List(pl.Utf8)))


def inputs(task: str, cache: Path) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], str | None]:
    """(posts, side tables, --split) of the tiny dataset as `pipe train` gives them to `task`:
    the same labelled posts and side tables for every task (each reads what it needs), split
    by the task's default, so a new task is tested by being registered."""
    posts = labelled_posts(cache)
    return posts, social_tables(posts), tasks.get(task).default_split


def _rows(data: HeadData) -> int:
    return data.examples.height if data.examples is not None else len(data)


def _stranger_posts(data: HeadData) -> HeadData:
    return HeadData(data.posts.head(2).with_columns(pl.lit("nobody").alias("user_id")), data.stores)


def _stranger_examples(data: HeadData) -> HeadData:
    ex = data.examples.head(2).with_columns(pl.lit("nobody").alias("user_id"))
    return HeadData(data.posts, data.stores, examples=ex, side=data.side)


def parts(task: str, cache: Path, stores: dict[str, FeatureStore], head: type) -> dict[str, HeadData]:
    """The three parts of the tiny dataset for a run of `head`, prepared by its task as `pipe train` does."""
    posts, side, split = inputs(task, cache)
    return task_for(head).prepare(posts, side, parse_split(split), stores).data


def n_outputs(task: str, data: HeadData) -> int:
    """How many values `predict` returns: one per example row (ranking pairs) or per post."""
    return _rows(data)


def stranger(task: str, data: HeadData) -> HeadData:
    """Two rows of `data` whose user is "nobody", never seen in training."""
    return (_stranger_posts if data.examples is None else _stranger_examples)(data)
