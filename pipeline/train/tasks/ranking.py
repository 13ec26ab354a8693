"""Ranking (AMNL): which of the tweets a user sees will the user retweet?

One example is a user with a positive (a retweet event of the `interactions` side table)
and its negatives: tweets of the user's followees (the `follows` side table; every author
when there is none) posted before the positive's time that the user did not retweet in the
training period. Split: retweet events in time order (`--split` fractions, chronological
0.7/0.1/0.2 by default). Valid and test candidates are each positive plus sampled
negatives posted in the same split period and before the positive, never retweeted by the
user; they are saved as the run's `candidates.parquet`.

Task config (`--task-set`; `--set negatives=N` is an alias): `negatives` per training
positive (2), `candidates` negatives per valid/test positive (2) and `seed` (0) of the
lists. The draw: one stream, `default_rng(seed)`, draws `candidates` negatives for every
event in event order (training events first, the split being chronological); valid and
test take those draws, so their lists depend on the dataset, the split and these two
settings only, never on the head (its `seed`, `--repeats`) nor on `negatives`: every head
of the task is judged on the same lists. Training takes the same draws when `negatives ==
candidates` (the lists of runs before the task config existed), otherwise its own draws of
`negatives` per positive from a second stream, `default_rng([seed, 1])`.
Heads score user-post pairs: `predict(data)` returns one float per row of `data.examples`
(user_id, post_id, label, group, at). Loss: pairwise hinge max(0, c - F(z+) + F(z-)) on a
(B, 1 + K) output whose column 0 is the positive (c = 1 unless a head overrides `loss`).
Early stopping on valid AUC; metrics P@1, P@3, AUC, averaged over users. Heads see the
training events only (`data.side["interactions"]`) and the follow graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.draws import Draws
from pipeline.core.errors import PipeError
from pipeline.data.splits import PARTS, SplitSpec, assign_split, split_summary
from pipeline.store import FeatureStore
from pipeline.train.data import HeadData
from pipeline.train.metrics import RANKING, ranking_metrics
from pipeline.train.tasks import register
from pipeline.train.tasks._candidates import Candidates, Pool
from pipeline.train.tasks.base import Parts, Task, finite_1d

EXAMPLE_SCHEMA = {"user_id": pl.Utf8, "post_id": pl.Utf8, "label": pl.Int8, "group": pl.Int64,
                  "at": pl.Datetime("us", "UTC")}


@dataclass
class RankingConfig:
    negatives: int = 2  # negatives per training positive (AMNL's paper: 2)
    candidates: int = 2  # negatives per positive in the valid/test candidate lists
    seed: int = 0  # seed of the candidate lists (and of the training negatives); never the head's

    def __post_init__(self) -> None:
        if self.negatives < 1 or self.candidates < 1:
            raise ValueError(f"negatives and candidates must be at least 1, got {self.negatives} and {self.candidates}")


def _events(side: dict[str, pl.DataFrame], posts: pl.DataFrame) -> pl.DataFrame:
    if "interactions" not in side:
        raise PipeError("the ranking task needs an interactions side table (user_id, post_id, at); "
                        "ingest it with `pipe ingest POSTS --name NAME --interactions FILE`")
    ev = side["interactions"]
    missing = [c for c in ("user_id", "post_id", "at") if c not in ev.columns]
    if missing:
        raise PipeError(f"interactions table lacks column(s) {missing}")
    unknown = ev.filter(~pl.col("post_id").is_in(posts["post_id"].implode()))
    if unknown.height:
        raise PipeError(f"{unknown.height} interactions name posts not in the posts table, e.g. "
                        f"{unknown['post_id'].head(5).to_list()}")
    return ev.select("user_id", "post_id", "at").unique(maintain_order=True)


def draw_negatives(count: np.ndarray, train: np.ndarray, c: RankingConfig) -> list[list[int]]:
    """Per event, in event order: sorted(rng.choice(n, min(k, n), replace=False)) over its
    `count` eligible negatives (the streams of the module docstring). Sequential, but on
    counts only: the lists themselves can be built by partition (`Candidates`)."""
    lists = np.random.default_rng(c.seed)  # every event's candidates, in event order
    training = np.random.default_rng([c.seed, 1]) if c.negatives != c.candidates else None  # their own
    draw_lists, draw_training = Draws(lists), Draws(training) if training is not None else None
    draws: list[list[int]] = []
    for n, t in zip(count.tolist(), train.tolist()):
        if not n:
            draws.append([])
            continue
        d = draw_lists.choice(lists, n, min(c.candidates, n))
        if draw_training is not None and t:
            d = draw_training.choice(training, n, min(c.negatives, n))
        draws.append(d)
    return draws


def examples_of(events: pl.DataFrame, cands: Candidates, draws: list[list[int]], offset: int = 0) -> pl.DataFrame:
    """Each event's positive then its drawn negatives (a training event without one left out);
    `offset`: the first event's number (its `group`) when `events` is a partition."""
    k = np.array([len(d) for d in draws], np.int64)
    keep = (k > 0) | ~cands.train
    g = np.repeat(np.arange(len(draws)), k)
    idx = np.fromiter((i for d in draws for i in d), np.int64, int(k.sum()))
    neg = np.empty(len(g), object)
    fb = cands.fallback[g]
    neg[~fb] = cands.take(g[~fb], idx[~fb])
    for e in np.unique(g[fb]):
        neg[g == e] = cands.take_one(int(e), idx[g == e])
    ev = events.select("user_id", "post_id", "at", "split").with_columns(
        group=pl.int_range(offset, offset + events.height, dtype=pl.Int64))
    pos = ev.filter(pl.Series(keep)).with_columns(label=pl.lit(1, pl.Int8), slot=pl.lit(0, pl.Int64))
    negs = ev[g].with_columns(post_id=pl.Series(neg, dtype=pl.Utf8), label=pl.lit(0, pl.Int8),
                              slot=pl.Series(np.arange(len(g)) - np.repeat(np.cumsum(k) - k, k) + 1))
    cols = [*EXAMPLE_SCHEMA, "split"]
    out = pl.concat([pos.select(*cols, "slot"), negs.select(*cols, "slot")]).sort("group", "slot")
    return out.select(*(pl.col(n).cast(t) for n, t in EXAMPLE_SCHEMA.items()), "split")


@register
class Ranking(Task):
    name = "ranking"
    summary = "a score per user-post pair (retweet prediction); P@1, P@3, AUC per user"
    metrics_names = RANKING
    criterion = "auc"
    higher_is_better = True
    Config = RankingConfig
    ALIASES = ("negatives",)
    plots = "precision_at_k"
    constant_predictor = "a random ranking"

    def prepare(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], split: SplitSpec,
                stores: dict[str, FeatureStore]) -> Parts:
        if split.kind != "chrono":
            raise PipeError(f"--split {split.text}: the ranking task splits retweet events in time order; give fractions")
        events = assign_split(_events(side, posts), split, order=("at", "user_id", "post_id"), what="retweet events")
        follows = side.get("follows")
        c = self.config
        train_ev = events.filter(pl.col("split") == "train")
        starts = {p: events.filter(pl.col("split") == p)["at"].min() for p in PARTS}
        cands = Candidates(Pool(posts), events, follows, starts)
        draws = draw_negatives(cands.count, cands.train, c)
        ex = examples_of(events, cands, draws)
        no_followees = cands.no_followees
        no_negatives = int((cands.count == 0).sum())
        known = {"follows": follows} if follows is not None else {}
        known["interactions"] = train_ev.drop("split")
        data = {}
        for part in PARTS:
            e = ex.filter(pl.col("split") == part).drop("split")
            used = posts.filter(pl.col("post_id").is_in(e["post_id"].unique().implode()))
            data[part] = HeadData(used, stores, self.target, examples=e, side=known, task_config=c)
        notes = []
        if no_followees:
            notes.append(f"{len(no_followees)} users without followees: negatives drawn from every author; "
                         "followee attention (amnl) uses h = 1 for them")
        if no_negatives:
            notes.append(f"{no_negatives} positives had no eligible negative (training ones left out)")
        counts = {"events": events.height, "examples": ex.height, "negatives_per_positive": c.negatives,
                  "candidates_per_positive": c.candidates}
        return Parts(data, split_summary(events, "at", "events"), counts, notes, {"candidates": ex})

    def loss(self, pred: Any, batch: dict[str, Any]) -> Any:
        import torch

        return torch.relu(1.0 - pred[:, :1] + pred[:, 1:]).mean()  # (B, K) hinges, column 0 the positive

    def training_units(self, data: HeadData) -> int:
        """(positive, negatives) groups: a training batch holds groups, so an epoch is this many
        groups, not example rows (1 + negatives per group; counting rows made the small-data rule
        see 35K "examples" in 11.8K groups and train a 3,000-tweet AMNL at the paper's sizes)."""
        return 0 if data.examples is None else int(data.examples["group"].n_unique())

    @property
    def judged_on(self) -> str:
        return "retweets"

    def check_data(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], head: str, dataset: str) -> None:
        events = side.get("interactions")
        if events is None or events.height == 0:
            raise self.wrong_data(head, dataset, "has none" if events is None else "has an empty one",
                                  "retweet events (an interactions side table: user_id, post_id, at)",
                                  "make one with `pipe synth --task ranking`, or ingest the events with `pipe ingest "
                                  "POSTS --name NAME --interactions FILE [--follows FILE]`")

    def constant_criterion(self, train: HeadData, valid: HeadData) -> float | None:
        """A constant score ties every pair: AUC 0.5 for every user, whatever the candidates."""
        return 0.5

    def check(self, out: Any, data: HeadData, head: str, what: str) -> np.ndarray:
        n = data.examples.height if data.examples is not None else len(data)
        return finite_1d(out, n, head, what)

    def metrics(self, data: HeadData, out: np.ndarray) -> dict[str, float]:
        ex = data.examples
        return ranking_metrics(ex["user_id"].to_list(), ex["label"].to_numpy(), out)

    def predictions(self, data: HeadData, out: np.ndarray, part: str) -> pl.DataFrame:
        ex = data.examples
        return ex.select("post_id", pl.lit(part).alias("split"), "user_id", "label", "group").with_columns(
            score=pl.Series(out.astype(np.float64)))

    def score_examples(self, posts: pl.DataFrame, side: dict[str, pl.DataFrame], users: list[str] | None,
                       run: str) -> pl.DataFrame:
        """Each new post for every follower of its author in the run's dataset (its follows
        table), or for each of `users` (`--users`: every post for every user given)."""
        if users is not None:
            pairs = pl.DataFrame({"user_id": list(dict.fromkeys(users))}, schema={"user_id": pl.Utf8}).join(
                posts.select("post_id", pl.col("posted_at").alias("at")), how="cross")
        elif "follows" not in side:
            raise PipeError(f"run {run} ranks posts for users, and its dataset has no follows table to find "
                            "who sees the new posts")
        else:
            pairs = posts.select("post_id", pl.col("user_id").alias("followee_id"), pl.col("posted_at").alias("at")
                                 ).join(side["follows"].select("user_id", "followee_id"), on="followee_id")
        return pairs.select("user_id", "post_id", pl.lit(0, pl.Int8).alias("label"), pl.lit(0, pl.Int64).alias("group"),
                            "at")

    def scores(self, data: HeadData, out: np.ndarray) -> pl.DataFrame:
        ex = data.examples.select("user_id", "post_id").with_columns(score=pl.Series(out.astype(np.float64)))
        return ex.with_columns(rank=pl.col("score").rank("ordinal", descending=True).over("user_id").cast(pl.Int64)) \
                 .select("post_id", "user_id", "score", "rank")
