"""Engagement targets: transforms fitted on the training part only and inverted exactly,
`--min-target` counts, counts metrics named apart; the hybrid CNN's layer shapes."""
from __future__ import annotations

from tests import _tiny_data as tiny
import numpy as np
import polars as pl
import pytest
import torch

from heads.hybrid_cnn import HybridCNNConfig, HybridCNNModel
from pipeline.core.errors import PipeError
from pipeline.data.splits import parse_split
from pipeline.train import tasks
from pipeline.train.targets import TargetTransform


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    p = tiny.make_dataset(tmp_path_factory.mktemp("cache"), n=80, seed=3)
    return p.with_columns(retweets=(pl.col("score") * 100).round(0))


def _prepare(posts, transform="none", min_target=None):
    task = tasks.get("regression")("retweets", transform=transform, min_target=min_target)
    return task, task.prepare(posts, {}, parse_split(None), {})


def _raw(posts, ids):
    by_id = dict(posts.select("post_id", "retweets").iter_rows())
    return np.array([by_id[p] for p in ids], np.float64)


@pytest.mark.parametrize("kind", ["max", "log1p"])
def test_transform_fitted_on_train_only_and_inverted_exactly(posts, kind):
    task, parts = _prepare(posts, kind)
    train, test = parts.data["train"], parts.data["test"]
    raw_train = _raw(posts, train.ids)
    if kind == "max":  # the training maximum, not the dataset's
        assert task.transform.scale == raw_train.max() != posts["retweets"].max()
        np.testing.assert_allclose(train.y, raw_train / raw_train.max(), rtol=1e-6)
    else:
        np.testing.assert_allclose(train.y, np.log1p(raw_train), rtol=1e-6)
    pred = task.predictions(test, test.y, "test")  # a perfect head: y and yhat back in counts
    np.testing.assert_allclose(pred["y"].to_numpy(), _raw(posts, test.ids), rtol=1e-12)
    np.testing.assert_allclose(pred["yhat"].to_numpy(), _raw(posts, test.ids), rtol=1e-6)
    m = task.metrics(test, test.y)
    assert m["mse"] < 1e-10 and m["mse_counts"] < 1e-3 and set(task.metrics_names) == set(m)  # float32 y
    assert task.scores(test, np.asarray(test.y))["score"].to_numpy() == pytest.approx(_raw(posts, test.ids), rel=1e-6)
    again = tasks.get("regression")("retweets")
    again.restore(task.describe())  # what pipe score rebuilds from config.json
    assert again.transform == task.transform
    np.testing.assert_allclose(again.label(posts)["retweets"].to_numpy(), task.transform.forward(posts["retweets"]))


def test_no_transform_keeps_the_plain_metrics(posts):
    task, parts = _prepare(posts)
    assert task.metrics_names == ("mse", "mae", "src", "medae")
    assert set(task.metrics(parts.data["test"], parts.data["test"].y)) == set(task.metrics_names)


def test_min_target_drops_and_counts(posts):
    n_below = int((posts["retweets"] < 500).sum())
    _task, parts = _prepare(posts, "max", 500)
    assert parts.counts["below_min_target"] == n_below > 0
    assert sum(len(d) for d in parts.data.values()) == posts.height - n_below
    assert any(f"{n_below} posts" in n for n in parts.notes)
    assert all((d.y > 0).all() for d in parts.data.values())


def test_bad_transforms_refused():
    with pytest.raises(PipeError, match="one of none, log1p, max"):
        TargetTransform("sqrt")
    with pytest.raises(PipeError, match="negative"):
        TargetTransform("log1p").fit(np.array([1.0, -2.0]))
    with pytest.raises(PipeError, match="not positive"):
        TargetTransform("max").fit(np.zeros(3))


def test_hybrid_cnn_layer_shapes():
    m = HybridCNNModel(HybridCNNConfig(), 64, 0.0)
    px = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert m.conv1.weight.shape == (32, 3, 5, 5) and m.conv2.weight.shape == (64, 32, 5, 5)
    assert m.maps(px).shape == (2, 64, 16, 16)  # "same" padding: 16 x 16 x 64 = 16,384
    assert m.fc1.in_features == 16_386 and m.fc1.out_features == 100
    assert (m.fc2.in_features, m.fc2.out_features, m.out.in_features, m.out.out_features) == (100, 60, 60, 1)
    assert m({"pixels": px, "context": torch.rand(2, 2)}).shape == (2,)
    context_only = HybridCNNModel(HybridCNNConfig(ablate=("visual",)), None, 0.0)
    assert context_only.fc1.in_features == 2 and not hasattr(context_only, "conv1")
