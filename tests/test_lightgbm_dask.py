"""LightGBM through lightgbm.dask on a 2-worker local cluster: the table built per partition on the workers."""
from __future__ import annotations

from tests import _tiny_data as tiny
import numpy as np
import pytest

from heads.lightgbm import LightGBMHead, _valid_sq_errors
from pipeline.core.errors import PipeError
from pipeline.train.data import RunSettings


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny.split_parts(tmp_path_factory.mktemp("cache"), 240, 3, tiny.GRID, tiny.TEXTVEC)


@pytest.mark.slow
@pytest.mark.dask
def test_trains_on_a_local_cluster_and_round_trips(parts, tmp_path):
    cfg = LightGBMHead.Config(n_estimators=40, learning_rate=0.1, min_child_samples=5,
                              partition_rows=50)  # train 168 posts -> 4 partitions over 2 workers
    head = LightGBMHead(cfg)
    head.settings = RunSettings(dask_workers=2)  # a run setting, not saved with the model
    head.fit(parts["train"], parts["valid"])
    assert len(head.history) == 40  # every round trained; the best one kept
    best = int(np.argmin([h["valid_mse"] for h in head.history])) + 1
    assert head.booster.current_iteration() == best
    assert head.booster.feature_name()[-1] == "user_id"
    valid_mse = np.mean((head.predict(parts["valid"]) - parts["valid"].y) ** 2)
    assert np.isclose(valid_mse, head.history[best - 1]["valid_mse"], rtol=1e-4)  # the curve is the real one
    pred = head.predict(parts["test"])
    assert pred.shape == (len(parts["test"]),) and np.isfinite(pred).all()
    assert np.mean((pred - parts["test"].y) ** 2) < np.var(parts["test"].y)  # it learned something
    head.save(tmp_path / "m")
    assert (tmp_path / "m" / "lightgbm.txt").read_text().startswith("tree")  # LightGBM's booster text format
    again = LightGBMHead.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(parts["test"]), pred)


def test_valid_curve_sums_leaves_to_the_prediction(parts):
    head = LightGBMHead(LightGBMHead.Config(n_estimators=15, min_child_samples=5, n_jobs=1, early_stopping_rounds=100))
    head.fit(parts["train"], parts["valid"])  # local: LightGBM's own valid l2 per round
    curve = _valid_sq_errors(head.booster.model_to_string(), head, parts["valid"], rows=7) / len(parts["valid"])
    np.testing.assert_allclose(curve, [h["valid_mse"] for h in head.history], rtol=1e-5)


def test_unreachable_scheduler_is_a_clear_error(parts):
    with pytest.raises(PipeError, match="unknown host"):
        head = LightGBMHead()
        head.settings = RunSettings(scheduler="tcp://no-such-host.invalid:8786")
        head.fit(parts["train"], parts["valid"])


def test_train_plumbing(tmp_path):
    from pipeline.run.train import TrainOptions, train

    cache = tmp_path / "cache"
    tiny.make_dataset(cache, n=40)
    with pytest.raises(PipeError, match="--dask-workers are for heads that train on dask"):
        train(TrainOptions(dataset="tiny", head="hisave", dask_workers=2, cache=cache, runs=tmp_path / "runs"))
    with pytest.raises(PipeError, match="not both"):
        train(TrainOptions(dataset="tiny", head="lightgbm", dask_workers=2, scheduler="tcp://h:1", cache=cache))
    with pytest.raises(PipeError, match="dask_workers must be at least 1"):
        train(TrainOptions(dataset="tiny", head="lightgbm", dask_workers=0, cache=cache, runs=tmp_path / "runs"))
