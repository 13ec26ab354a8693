"""Ranking preparation and pair scoring partitioned on a local dask cluster equal the single
process (issue 21, the 5M-post plan of docs/scale-out.md): each partition of retweet events
builds its candidate lists on a worker, given the whole table's seen pairs and part starts;
only the counts come back for the one sequential draw; the examples are built where the
lists live."""
from __future__ import annotations

import polars as pl
import pytest

from pipeline.data.splits import PARTS, assign_split, parse_split
from pipeline.train import tasks
from pipeline.train.tasks._candidates import Candidates, Pool, seen_pairs
from pipeline.train.tasks.ranking import _events, draw_negatives, examples_of
from tests.test_scale_equality import _social


def _lists(pool, events, follows, starts, seen):
    return Candidates(pool, events, follows, starts, seen)


@pytest.mark.slow
@pytest.mark.dask
def test_ranking_prepare_and_pairs_partitioned_on_dask_equal_one_process():
    from distributed import Client, LocalCluster

    posts, side = _social(n_posts=150, seed=5)
    task = tasks.get("ranking")
    config = task.Config(negatives=3, candidates=2, seed=5)
    whole = task(config=config).prepare(posts, side, parse_split(None), {}).files["candidates"]
    events = assign_split(_events(side, posts), parse_split(None), order=("at", "user_id", "post_id"),
                          what="retweet events")
    starts = {p: events.filter(pl.col("split") == p)["at"].min() for p in PARTS}
    cuts = [0, 101, 230, events.height]  # partitions of events, cut anywhere
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        pool, seen = client.scatter(Pool(posts), broadcast=True), client.scatter(seen_pairs(events), broadcast=True)
        lists = [client.submit(_lists, pool, events[a:b], side["follows"], starts, seen, pure=False)
                 for a, b in zip(cuts, cuts[1:])]
        counts = client.gather([client.submit(lambda c: (c.count, c.train), f) for f in lists])
        draws = draw_negatives(pl.concat([pl.Series(c) for c, _ in counts]).to_numpy(),
                               pl.concat([pl.Series(t) for _, t in counts]).to_numpy(), config)
        parts = client.gather([client.submit(examples_of, events[a:b], f, draws[a:b], a)
                               for (a, b), f in zip(zip(cuts, cuts[1:]), lists)])
        new_posts = posts.head(30)
        pairs = client.gather([client.submit(task().score_examples, new_posts[a:a + 10], side, None, "run")
                               for a in range(0, 30, 10)])
    assert whole.height > 500 and pl.concat(parts).equals(whole)
    one = task().score_examples(new_posts, side, None, "run")  # a join: rows in no promised order
    assert one.height > 30 and pl.concat(pairs).sort("post_id", "user_id").equals(one.sort("post_id", "user_id"))
