"""Vectorized code paths (issue 21) against the Python loops they replaced, kept here as the
reference: the same outputs for the same seed on small data, edge cases included."""
from __future__ import annotations

import bisect
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from pipeline.data.splits import PARTS, assign_split, parse_split
from pipeline.train import tasks
from pipeline.train.tasks.ranking import EXAMPLE_SCHEMA, _events


def _old_ranking_examples(posts, side, split, negatives, candidates, seed):
    """Ranking.prepare's candidate lists before issue 21: a Python loop over events, each
    filtering the author pool by time, then `rng.choice` over the eligible list."""
    events = assign_split(_events(side, posts), split, order=("at", "user_id", "post_id"), what="retweet events")
    by_author = {}
    for (author,), g in posts.sort("posted_at", "post_id").group_by(["user_id"], maintain_order=True):
        by_author[author] = (g["posted_at"].to_list(), g["post_id"].to_list())
    every = sorted(by_author)

    def between(authors, start, end):
        out = []
        for a in authors:
            times, ids = by_author.get(a, ([], []))
            lo = 0 if start is None else bisect.bisect_left(times, start)
            out += ids[lo:bisect.bisect_left(times, end)]
        return out

    def draw(rng, cands, k):
        return [cands[i] for i in np.sort(rng.choice(len(cands), min(k, len(cands)), replace=False))] if cands else []

    followees = {}
    if side.get("follows") is not None:
        for u, f in side["follows"].select("user_id", "followee_id").iter_rows():
            followees.setdefault(u, []).append(f)
    lists = np.random.default_rng(seed)
    training = np.random.default_rng([seed, 1]) if negatives != candidates else None
    train_ev = events.filter(pl.col("split") == "train")
    seen_train = set(zip(train_ev["user_id"].to_list(), train_ev["post_id"].to_list()))
    seen_all = set(zip(events["user_id"].to_list(), events["post_id"].to_list()))
    starts = {p: events.filter(pl.col("split") == p)["at"].min() for p in PARTS}
    rows = []
    for g, (u, p, at, part) in enumerate(events.select("user_id", "post_id", "at", "split").iter_rows()):
        authors = followees.get(u) or every
        seen = seen_train if part == "train" else seen_all
        start = None if part == "train" else starts[part]
        cands = [q for q in between(authors, start, at) if q != p and (u, q) not in seen]
        negs = draw(lists, cands, candidates)
        if part == "train" and training is not None:
            negs = draw(training, cands, negatives)
        if not negs and part == "train":
            continue
        rows.append((u, p, 1, g, at, part))
        rows += [(u, n, 0, g, at, part) for n in negs]
    return pl.DataFrame(rows, schema={**EXAMPLE_SCHEMA, "split": pl.Utf8}, orient="row")


def _social(n_posts=120, n_authors=9, n_fans=14, seed=0):
    """Posts with tied times, fans following 1-4 authors (one twice, one who never posts),
    two fans following no one, retweets of every part."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    authors = [f"a{i}" for i in range(n_authors)]
    posts = pl.DataFrame({"post_id": [f"p{i:03d}" for i in rng.permutation(n_posts)],
                          "user_id": rng.choice(authors, n_posts).tolist(),
                          "posted_at": [t0 + timedelta(hours=int(h)) for h in rng.integers(0, 60, n_posts)]},
                         schema={"post_id": pl.Utf8, "user_id": pl.Utf8, "posted_at": pl.Datetime("us", "UTC")})
    follows = []
    for k in range(n_fans - 2):
        follows += [(f"r{k}", a) for a in rng.choice(authors, int(rng.integers(1, 5)), replace=False)]
    follows += [("r0", follows[0][1]), ("r1", "ghost")]
    ev = []
    for k in range(n_fans):
        for pid, at in posts.select("post_id", "posted_at").sample(25, seed=k).iter_rows():
            ev.append((f"r{k}", pid, at + timedelta(hours=int(rng.integers(0, 8)))))
    ev.append(ev[0])  # a duplicate event
    return posts, {"follows": pl.DataFrame(follows, schema=["user_id", "followee_id"], orient="row"),
                   "interactions": pl.DataFrame(ev, schema={"user_id": pl.Utf8, "post_id": pl.Utf8,
                                                            "at": pl.Datetime("us", "UTC")}, orient="row")}


@pytest.mark.parametrize("negatives,candidates,seed", [(2, 2, 0), (3, 2, 7), (1, 5, 3), (40, 40, 1)])
def test_ranking_candidates_equal_the_old_loop(negatives, candidates, seed):
    posts, side = _social(seed=seed)
    split = parse_split(None)
    task = tasks.get("ranking")
    parts = task(config=task.Config(negatives=negatives, candidates=candidates, seed=seed)).prepare(
        posts, side, split, {})
    old = _old_ranking_examples(posts, side, split, negatives, candidates, seed)
    new = parts.files["candidates"]
    assert old.filter(pl.col("label") == 0).height > 100
    assert new.schema == old.schema and new.equals(old)


def test_ranking_candidates_without_follows_table_equal_the_old_loop():
    posts, side = _social(n_posts=60, seed=2)
    side = {"interactions": side["interactions"]}
    task = tasks.get("ranking")
    new = task(config=task.Config(seed=4)).prepare(posts, side, parse_split(None), {}).files["candidates"]
    assert new.equals(_old_ranking_examples(posts, side, parse_split(None), 2, 2, 4))


def _old_window_index(history, post_ids, length, scope):
    """window_index before issue 21: a Python loop, np.searchsorted on a list per post."""
    pos = {p: i for i, p in enumerate(history.posts["post_id"].to_list())}
    at = np.array([pos[p] for p in post_ids], np.int64)
    out = np.full((len(at), length), -1, np.int64)
    if scope == "global":
        for k, i in enumerate(at):
            rows = np.arange(max(0, i - length + 1), i + 1)
            out[k, : len(rows)] = rows
        return out
    users = history.posts["user_id"].to_list()
    by_user = {}
    for j, u in enumerate(users):
        by_user.setdefault(u, []).append(j)
    for k, i in enumerate(at):
        rows = by_user[users[i]]
        e = int(np.searchsorted(rows, i)) + 1
        take = rows[max(0, e - length):e]
        out[k, : len(take)] = take
    return out


def _old_user_history(history, post_ids, k, target):
    """user_history before issue 21: the same loop over posts."""
    pos = {p: i for i, p in enumerate(history.posts["post_id"].to_list())}
    at = np.array([pos[p] for p in post_ids], np.int64)
    y = history.posts[target].cast(pl.Float64).to_numpy()
    users = history.posts["user_id"].to_list()
    labelled = {}
    for j, u in enumerate(users):
        if np.isfinite(y[j]):
            labelled.setdefault(u, []).append(j)
    mean, count = np.full(len(at), np.nan), np.zeros(len(at))
    for n, i in enumerate(at):
        rows = labelled.get(users[i], [])
        e = int(np.searchsorted(rows, i))
        take = rows[max(0, e - k):e]
        if take:
            mean[n], count[n] = float(np.mean(y[take])), len(take)
    return mean, count


def _history(n=400, seed=0):
    from pipeline.train.data import History

    rng = np.random.default_rng(seed)
    y = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, n)  # sums whose rounding depends on the order
    y[rng.random(n) < 0.3] = np.nan  # unlabelled (valid/test, scored) posts
    posts = pl.DataFrame({"post_id": [f"p{i}" for i in range(n)], "user_id": rng.choice([f"u{i}" for i in range(23)], n),
                          "score": y})
    return History(posts, {})


@pytest.mark.parametrize("length,scope", [(1, "user"), (4, "user"), (30, "user"), (1, "global"), (6, "global")])
def test_window_index_equals_the_old_loop(length, scope):
    from pipeline.train.windows import window_index

    hist = _history()
    ids = hist.posts["post_id"].sample(150, seed=1).to_list()
    new, old = window_index(hist, ids, length, scope), _old_window_index(hist, ids, length, scope)
    assert (old >= 0).sum() >= len(ids) * min(length, 2) and new.dtype == old.dtype and np.array_equal(new, old)


@pytest.mark.parametrize("k", [1, 5, 12])
def test_user_history_equals_the_old_loop(k):
    from pipeline.train.windows import user_history

    hist = _history(seed=k)
    ids = hist.posts["post_id"].to_list()
    (m1, c1), (m0, c0) = user_history(hist, ids, k, "score"), _old_user_history(hist, ids, k, "score")
    assert (c0 == k).sum() > 10 and np.array_equal(c1, c0) and np.array_equal(m1, m0, equal_nan=True)


def _old_sample_links(labels, per_post, seed):
    """dman.sample_links before issue 21 (numpy calls per draw)."""
    rng = np.random.default_rng(seed)
    by_label = [np.flatnonzero(labels[:, j]) for j in range(labels.shape[1])]
    out = []
    for i in range(len(labels)):
        mine = np.flatnonzero(labels[i])
        sizes = np.array([len(by_label[j]) for j in mine], np.int64)
        if len(mine) == 0 or sizes.max() <= per_post + 1:
            pool = np.setdiff1d(np.concatenate([by_label[j] for j in mine]) if len(mine) else np.zeros(0, np.int64), [i])
            out.append(np.sort(rng.choice(pool, size=min(per_post, len(pool)), replace=False)) if len(pool) else pool)
            continue
        chosen = set()
        while len(chosen) < per_post:
            j = mine[rng.choice(len(mine), p=sizes / sizes.sum())]
            x = int(by_label[j][rng.integers(len(by_label[j]))])
            if x != i and rng.random() < 1.0 / int((labels[x, mine] > 0).sum()):
                chosen.add(x)
        out.append(np.array(sorted(chosen), np.int64))
    return out


@pytest.mark.parametrize("per_post,seed", [(3, 0), (8, 5), (50, 1)])
def test_dman_links_equal_the_old_loop(per_post, seed):
    from heads.dman import sample_links

    rng = np.random.default_rng(seed)
    labels = (rng.random((300, 12)) < rng.uniform(0.005, 0.3, 12)).astype(np.float32)
    labels[:5] = 0  # posts without a label
    labels[5, :] = 0
    labels[5, 0] = 1
    new, old = sample_links(labels, per_post, seed), _old_sample_links(labels, per_post, seed)
    assert sum(len(x) for x in old) > 300 and len(new) == len(old)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(new, old))


def test_draws_resume_the_generator_exactly():
    from pipeline.core.draws import Draws

    a, b = np.random.default_rng(3), np.random.default_rng(3)
    draws = Draws(b)
    for n in (7, 2 ** 31 + 5, 1, 3):
        a.integers(5)  # leaves half a word buffered: the emulation must take it first
        draws.sync()
        b.integers(5)
        assert [a.integers(n), a.random(), a.integers(n)] == [draws.integers(n), draws.random(), draws.integers(n)]
    draws.sync()
    assert a.bit_generator.state == b.bit_generator.state and a.random() == b.random()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tag_query_distance_matches_the_broadcast_norm(dtype):
    from pipeline.train.tasks.embedding import tag_query_distance

    conf = np.random.default_rng(0).random((300, 17)).astype(dtype)
    q = [0, 5, 16, 5]
    onehot = np.zeros((len(q), 17))
    onehot[np.arange(len(q)), q] = 1.0
    old = np.linalg.norm(onehot[:, None, :] - conf[None, :, :], axis=2)  # before issue 21: (Q, N, T) in memory
    new = tag_query_distance(conf, q)
    assert new.shape == old.shape and np.allclose(new, old, rtol=0, atol=1e-12)
    assert np.array_equal(np.argsort(new, axis=1, kind="stable"), np.argsort(old, axis=1, kind="stable"))


def test_embedding_predictions_equal_the_python_lists():
    from pipeline.train.data import HeadData
    from pipeline.train.tasks.embedding import EmbeddingOutput

    rng = np.random.default_rng(0)
    n, labels = 40, ["a", "b", "c", "d"]
    out = EmbeddingOutput(rng.random((n, 6)).astype(np.float32), labels, rng.random((n, 4)).astype(np.float32))
    out.confidence[0] = 0.5  # ties keep the label order
    posts = pl.DataFrame({"post_id": [f"p{i}" for i in range(n)], "labels": [["a"]] * n})
    data = HeadData(posts)
    task = tasks.get("embedding")()
    order = np.argsort(-out.confidence, axis=1, kind="stable")[:, :3]
    every = pl.DataFrame(out.confidence.astype(np.float64), schema=labels, orient="row")
    old = pl.DataFrame({"post_id": data.ids, "split": ["test"] * n, "labels": posts["labels"],
                        "top_labels": [[labels[j] for j in row] for row in order],
                        "top_confidence": [[float(out.confidence[i, j]) for j in row] for i, row in enumerate(order)],
                        "embedding": out.vectors.astype(np.float32).tolist()}).with_columns(every.to_struct("confidence"))
    new = task.predictions(data, out, "test")
    assert new.schema == old.schema and new.equals(old)
    assert task.scores(data, out).equals(old.select("post_id", "embedding", "top_labels", "top_confidence"))


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_amnl_fc7_stats_in_chunks_equal_the_whole_matrix(chunk):
    from heads.amnl import column_stats

    rng = np.random.default_rng(chunk)
    x = (rng.normal(size=(50, 9)) * 10.0 ** rng.integers(-4, 5, 9) + 3.0).astype(np.float32)
    ids = [f"p{i}" for i in range(50)]
    read = lambda some: x[[int(p[1:]) for p in some]]  # noqa: E731 (a store's read)
    mean, sd = column_stats(read, ids, chunk)
    whole = x.astype(np.float64)
    assert np.array_equal(mean, whole.mean(0)) and np.array_equal(sd, whole.std(0))


def test_draws_choice_equals_numpy_choice():
    from pipeline.core.draws import Draws

    a, b = np.random.default_rng(11), np.random.default_rng(11)
    draws, sizes = Draws(b), np.random.default_rng(0)
    for _ in range(3000):
        n = int(sizes.choice([1, 2, 3, 7, 50, 10_001, 2 ** 31 + 9, 30_000]))
        k = min(n, int(sizes.choice([1, 2, 5, 40, 700])))  # 700 of 30_000: numpy's tail shuffle
        assert draws.choice(b, n, k) == sorted(a.choice(n, k, replace=False).tolist()), (n, k)
    draws.sync()
    assert a.random() == b.random()


def _old_tabular(features, data, leave_one_out):
    """TabularFeatures.transform before issue 21: each store block read whole, pooled, then
    `np.hstack`-ed with its missing flag and the other blocks (3-4 full copies)."""
    from pipeline.head.tabular import token_stats

    blocks = []
    for role in ("visual", "text"):
        if role in features.roles:
            rows, ok = data.features(role)
            kind = data.stores[role].spec.kind
            rows = rows.astype(np.float32).mean(axis=1) if kind == "grid" else (
                token_stats(rows, features.text_buckets) if kind == "tokens" else rows)
            blocks.append(np.hstack([rows.astype(np.float32).reshape(len(rows), -1), (~ok).astype(np.float32)[:, None]]))
    if features.use_user:
        blocks.append(features._user_block(data, leave_one_out)[0])
    for on, make in ((features.categories, features._category_block), (features.user_history > 0, features._history_block),
                     (bool(features.context), features._context_block)):
        if on:
            blocks.append(make(data)[0])
    return np.hstack(blocks)


@pytest.mark.parametrize("text", ["tokens", "vector"])
def test_tabular_table_in_chunks_equals_the_stacked_blocks(tmp_path, monkeypatch, text):
    from pipeline.head import tabular
    from tests import _tiny_data as tiny

    monkeypatch.setattr(tabular, "CHUNK", 7)  # several chunks, the last one short
    monkeypatch.setattr(tabular, "RELEASE_ROWS", 10)  # the stores unmapped and mapped again as the table is read
    parts = tiny.split_parts(tmp_path, 120, 3, tiny.GRID, tiny.TOKENS if text == "tokens" else tiny.TEXTVEC)
    f = tabular.TabularFeatures(True, True, True, 8, categories=True, context=("user_followers",)).fit(parts["train"])
    for name, loo in (("train", True), ("test", False)):
        data = parts[name]
        extra = np.arange(len(data), dtype=np.float32)[:, None]
        new = f.transform(data, loo, extra=extra)
        old = _old_tabular(f, data, loo)
        assert new.dtype == np.float32 and new.flags.c_contiguous and len(f.names) == old.shape[1]
        assert np.array_equal(new[:, :-1], old, equal_nan=True) and np.array_equal(new[:, -1], extra[:, 0])


@pytest.mark.parametrize("sizes", [(40, 9, 0), (0, 0, 0)])
def test_embedding_predictions_streamed_equal_the_concatenated_file(tmp_path, monkeypatch, sizes):
    from pipeline.core.io import atomic_write_parquet
    from pipeline.train.data import HeadData
    from pipeline.train.tasks import embedding
    from pipeline.train.tasks.embedding import EmbeddingOutput

    monkeypatch.setattr(embedding, "PREDICTION_ROWS", 7)  # several chunks a part, the last one short
    rng, labels, task = np.random.default_rng(1), ["a", "b", "c", "d", "e"], tasks.get("embedding")()
    data, outs = {}, {}
    for part, n in zip(PARTS, sizes):
        posts = pl.DataFrame({"post_id": [f"{part}{i}" for i in range(n)],
                              "labels": [[labels[i % 5]] for i in range(n)]}, schema={"post_id": pl.Utf8,
                                                                                       "labels": pl.List(pl.Utf8)})
        data[part] = HeadData(posts)
        outs[part] = EmbeddingOutput(rng.random((n, 6), dtype=np.float32), labels, rng.random((n, 5), dtype=np.float32),
                                     ["t"], rng.random((n, 1), dtype=np.float32))
    old = pl.concat([task.predictions(data[p], outs[p], p) for p in PARTS], how="diagonal_relaxed")
    chunks = [c for p in PARTS for c in task.prediction_chunks(data[p], outs[p], p)]
    assert len(chunks) == (6 + 2 + 1 if sum(sizes) else 3)  # PREDICTION_ROWS at a time, one for an empty part
    atomic_write_parquet(tmp_path / "predictions.parquet", iter(chunks))
    new = pl.read_parquet(tmp_path / "predictions.parquet")
    assert new.schema == old.schema and new.equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.parquet"]  # no temp file left


def _old_lightgbm_fit(head, train, valid):
    """LightGBMHead.fit before issue 21's Sequence path: the whole table as one float32
    matrix per part, trained through LGBMRegressor. Returns (model text, valid l2 curve)."""
    import lightgbm as lgb

    head._fit_features(train)
    xt, xv = head._table(train, leave_one_out=True), head._table(valid)
    model = lgb.LGBMRegressor(**head._params())
    model.fit(xt, train.y, eval_X=(xv,), eval_y=(valid.y,), eval_names=["valid"], eval_metric="l2",
              feature_name=head._names(), categorical_feature=head._categorical() or "auto",
              callbacks=[lgb.early_stopping(head.config.early_stopping_rounds, verbose=False)])
    return model.booster_.model_to_string(), model.evals_result_["valid"]["l2"]


@pytest.mark.slow
@pytest.mark.parametrize("text,options", [("tokens", {}), ("vector", {"categories": True, "n_jobs": 1}),
                                          ("vector", {"user_categorical": False, "ablate": ("visual",)})])
def test_lightgbm_from_the_stores_equals_the_matrix_fit(tmp_path, monkeypatch, text, options):
    """The head's Dataset read through `lgb.Sequence` in batches (its bin sample in chunks)
    grows the same trees, byte for byte, as LGBMRegressor on the whole matrix."""
    from heads import lightgbm as head_module
    from pipeline.head import tabular
    from tests import _tiny_data as tiny

    for module in (tabular, head_module):
        monkeypatch.setattr(module, "CHUNK", 7)  # several batches and sample blocks, the last one short
    monkeypatch.setattr(head_module.TableSequence, "batch_size", 7)
    monkeypatch.setattr(tabular, "RELEASE_ROWS", 10)
    parts = tiny.split_parts(tmp_path, 160, 5, tiny.GRID, tiny.TOKENS if text == "tokens" else tiny.TEXTVEC)
    cfg = head_module.LightGBMHead.Config(n_estimators=40, early_stopping_rounds=5, min_child_samples=3, **options)
    old_text, old_curve = _old_lightgbm_fit(head_module.LightGBMHead(cfg), parts["train"], parts["valid"])
    head = head_module.LightGBMHead(cfg).fit(parts["train"], parts["valid"])
    assert [h["valid_mse"] for h in head.history] == old_curve
    best = int(np.argmin(old_curve)) + 1
    assert head.booster.model_to_string() == head_module.lgb.Booster(model_str=old_text).model_to_string(num_iteration=best)


@pytest.mark.parametrize("rows,sample", [(300, 200_000), (300, 50)])
def test_lightgbm_chunked_bin_sample_equals_the_matrix_bins(monkeypatch, rows, sample):
    """StoreDataset's sample (chunked, zeros dropped) bins a table as `lgb.Dataset(matrix)`
    does, also when LightGBM samples fewer rows than it has; zeros, tiny values and NaN included."""
    import lightgbm as lgb

    from heads import lightgbm as head_module

    monkeypatch.setattr(head_module, "CHUNK", 16)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.5] = 0.0
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 2] = np.where(rng.random(rows) < 0.5, np.float32(1e-35), np.float32(2e-35))  # either side of LightGBM's zero
    x[:, 5] = rng.integers(0, 4, rows)
    y = rng.normal(size=rows)

    class Rows:
        width = x.shape[1]

        def __len__(self):
            return rows

        def __getitem__(self, idx):
            return x[idx]

    params = {"bin_construct_sample_cnt": sample, "min_data_in_leaf": 3, "seed": 7, "verbose": -1, "deterministic": True,
              "force_row_wise": True, "num_threads": 1}
    sets = [lgb.Dataset(x, y, params=params, categorical_feature=[5]),
            head_module.StoreDataset(head_module.TableSequence(Rows()), y, params=params, categorical_feature=[5])]
    models = [lgb.train(params, d, 15).model_to_string() for d in sets]
    assert models[0] == models[1]


_OLD_MAPS: dict = {}


def _old_store_read(store, post_ids):
    """FeatureStore.read before issue 21: a (shard, row) per id in Python, runs of consecutive
    rows copied as one np.memmap slice, every other row as a slice of its own."""
    if id(store) not in _OLD_MAPS:  # opened once per store, as the old reader cached its maps
        _OLD_MAPS[id(store)] = [np.memmap(path, dtype=store._dtype, mode="r", offset=offset,
                                          shape=(rows, *store.spec.shape)) for path, offset, rows in store._shards]
    maps = _OLD_MAPS[id(store)]
    starts = store._starts.tolist()
    loc = []
    for p in post_ids:
        g = store._index[p]
        si = bisect.bisect_right(starts, g) - 1
        loc.append((si, g - starts[si]))
    out, n, k = np.empty((len(post_ids), *store.spec.shape), store._dtype), len(post_ids), 0
    while k < n:
        si, row = loc[k]
        end = k + 1
        while end < n and loc[end] == (si, row + end - k):
            end += 1
        out[k:end] = maps[si][row : row + end - k]
        k = end
    return out


@pytest.mark.parametrize("shape,dtype", [((3,), np.float32), ((70, 64), np.float16)])  # below / above ROW_LOOP
def test_store_read_equals_the_old_loop(tmp_path, shape, dtype):
    """Runs, scattered rows, repeats, one shard or many, a newer shard overriding an older
    row, an `out` that is a strided view, and the per-shard store a test helper reads."""
    from pipeline.core.specs import FeatureSpec
    from pipeline.store import FeatureStore, StoreWriter

    rng = np.random.default_rng(0)
    spec = FeatureSpec("grid" if len(shape) == 2 else "vector", shape, np.dtype(dtype).name)
    with StoreWriter(tmp_path / "s", "x-00000000", "x", spec, {}) as w:
        for s in range(0, 50, 8):  # 7 shards, the last one short
            k = min(8, 50 - s)
            w.write_shard([f"p{i}" for i in range(s, s + k)], rng.normal(size=(k, *shape)).astype(dtype), [""] * k)
        w.write_shard(["p3", "p40"], rng.normal(size=(2, *shape)).astype(dtype), ["", ""])  # newer rows win
    store = FeatureStore(tmp_path / "s")
    ids = store.ids
    cases = [ids, ids[5:30], [ids[i] for i in rng.permutation(len(ids))], [ids[i] for i in rng.integers(0, 50, 80)],
             ["p3", "p40", "p2", "p3"], ids[10:12] + ids[3:9] + ids[20:21], [], ["p1"], [f"p{i}" for i in range(8)],
             ["p5", "p1", "p7", "p0", "p6"]]  # the last: scattered rows of one shard
    for case in cases:
        new = store.read(case)
        assert new.dtype == np.dtype(dtype) and np.array_equal(new, _old_store_read(store, case)), case
    big = np.zeros((80, 2, *shape), dtype)
    view, case = big[:, 1], cases[3]
    assert store.read(case, out=view) is view and not view.flags.c_contiguous
    assert np.array_equal(view, _old_store_read(store, case)) and not big[:, 0].any()
    for chunk, rows in store.iter_batches(9, shuffle=True, seed=2):  # rows located once, read batch by batch
        assert np.array_equal(rows, _old_store_read(store, chunk))
    assert np.array_equal(store.contains(["p1", "zz", "p49"]), [True, False, True])
    with pytest.raises(KeyError, match="1 post ids not in"):
        store.read(["p1", "nope"])
