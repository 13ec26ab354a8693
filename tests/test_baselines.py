"""The classic baselines: hisave, svr, lightgbm, and their shared feature table."""
from __future__ import annotations

from tests import _tiny_data as tiny
import numpy as np
import polars as pl
import pytest
from sklearn.svm import SVR

from heads import HeadData
from pipeline.head.tabular import TabularFeatures, token_stats
from heads.hisave import HisAve
from heads.lightgbm import LightGBMHead
from heads.svr import SVRHead
from pipeline.core.errors import PipeError
from pipeline.train.data import RunSettings
from pipeline.train.metrics import regression_metrics


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny.split_parts(tmp_path_factory.mktemp("cache"), 300, 1, tiny.GRID, tiny.TOKENS)


def _mse(head, data):
    return regression_metrics(data.y, head.predict(data))["mse"]


def test_hisave_user_mean_then_global_mean(parts):
    tr = parts["train"]
    h = HisAve().fit(tr, parts["valid"])
    means = pl.DataFrame({"u": tr.posts["user_id"], "y": tr.y}).group_by("u").agg(pl.col("y").mean())
    want = dict(zip(means["u"], means["y"]))
    new = HeadData(pl.DataFrame({"post_id": ["n1", "n2"], "user_id": [tr.posts["user_id"][0], "stranger"],
                                 "score": [None, None]}, schema_overrides={"score": pl.Float64}), {})
    got = h.predict(new)
    assert got[0] == pytest.approx(want[tr.posts["user_id"][0]], rel=1e-6)
    assert got[1] == pytest.approx(float(tr.y.astype(np.float64).mean()), rel=1e-6)
    assert h.unseen_users(new).tolist() == [False, True]


def test_tabular_leave_one_out_user_mean(parts):
    tr = parts["train"]
    f = TabularFeatures(False, False, True).fit(tr)
    x = f.transform(tr, leave_one_out=True)
    col = f.names.index("user_mean")
    u0 = tr.posts["user_id"][0]
    mine = (tr.posts["user_id"] == u0).to_numpy()
    others = tr.y[mine][1:].astype(np.float64)
    assert x[0, col] == pytest.approx(others.mean(), rel=1e-5)  # own label left out
    assert f.transform(tr)[0, col] == pytest.approx(tr.y[mine].astype(np.float64).mean(), rel=1e-5)


def test_token_stats_counts_and_ignores_padding():
    ids = np.array([[5, 1, 10, 0, 0], [0, 0, 0, 0, 0]])
    s = token_stats(ids, buckets=4)
    assert s[0, 0] == 3 and s[0, 1] == pytest.approx(1 / 3)
    assert s[0, 2 + 5 % 4] == 1 and s[0, 2 + 10 % 4] == 1 and s[0, 2:].sum() == 2
    assert not s[1].any()


def test_svr_kernel_expansion_matches_sklearn(parts):
    h = SVRHead(SVRHead.Config(C=3.0)).fit(parts["train"], parts["valid"])
    a = h.arrays
    # refit scikit-learn on the same standardized table and compare predictions
    xt = (h.features.transform(parts["train"], leave_one_out=True) - a["x_mean"]) / a["x_scale"]
    ref = SVR(C=3.0, epsilon=0.1, gamma=float(a["gamma"][0])).fit(xt, (parts["train"].y - a["y_mean"][0]) / a["y_std"][0])
    xs = (h.features.transform(parts["test"]) - a["x_mean"]) / a["x_scale"]
    want = ref.predict(xs) * a["y_std"][0] + a["y_mean"][0]
    np.testing.assert_allclose(h.predict(parts["test"]), want, rtol=1e-4, atol=1e-4)
    # balanced blocks: each block adds about the same variance to the kernel distance
    var, raw = xt.var(axis=0), h.features.transform(parts["train"], leave_one_out=True).var(axis=0)
    for b in ("visual", "text", "user"):
        cols = [i for i, o in enumerate(h.features.blocks) if o == b]
        varying = int((raw[cols] > 0).sum())
        assert var[cols].sum() == pytest.approx(varying / len(cols), rel=1e-4), b  # block total <= 1


def test_svr_ablations_drop_roles_and_cost_accuracy(parts):
    full = SVRHead(SVRHead.Config(C=3.0)).fit(parts["train"], parts["valid"])
    no_v = SVRHead(SVRHead.Config(C=3.0, ablate=("visual",)))
    no_t = SVRHead(SVRHead.Config(C=3.0, ablate=("text",)))
    assert set(full.roles()) == {"visual", "text"}
    assert set(no_v.roles()) == {"text"} and set(no_t.roles()) == {"visual"}
    no_v.fit(parts["train"], parts["valid"])
    no_t.fit(parts["train"], parts["valid"])
    assert not any(n.startswith("visual") for n in no_v.features.names)
    assert "n_tokens" not in no_t.features.names
    full_mse = _mse(full, parts["test"])
    assert full_mse < _mse(no_v, parts["test"]) and full_mse < _mse(no_t, parts["test"])
    assert full_mse < _mse(HisAve().fit(parts["train"], parts["valid"]), parts["test"])
    with pytest.raises(PipeError, match="knows visual, text, user"):
        SVRHead(SVRHead.Config(ablate=("colour",)))  # checked by the head, as for every head


def test_svr_subsamples_training_rows(parts):
    h = SVRHead(SVRHead.Config(max_train_rows=50, seed=4)).fit(parts["train"], parts["valid"])
    assert h.history[0]["train_rows"] == 50
    assert len(h.arrays["support_vectors"]) <= 50
    assert h.features.user_count and sum(h.features.user_count.values()) == len(parts["train"])  # stats: all rows


def test_lightgbm_early_stops_with_user_category(parts):
    cfg = LightGBMHead.Config(n_estimators=400, learning_rate=0.1, min_child_samples=5, early_stopping_rounds=10,
                              n_jobs=1)
    h = LightGBMHead(cfg).fit(parts["train"], parts["valid"])
    assert 0 < h.booster.current_iteration() < 400
    assert len(h.history) == h.booster.current_iteration() + 10  # best round, then the patience
    assert h.booster.feature_name()[-1] == "user_id"
    assert _mse(h, parts["test"]) < _mse(HisAve().fit(parts["train"], parts["valid"]), parts["test"])
    stranger = parts["test"].posts.head(3).with_columns(pl.lit("nobody").alias("user_id"))
    data = HeadData(stranger, parts["test"].stores)
    assert np.isfinite(h.predict(data)).all() and h.unseen_users(data).all()


def test_lightgbm_scheduler_is_a_clear_error(parts):
    with pytest.raises(PipeError, match="scheduler"):
        head = LightGBMHead()
        head.settings = RunSettings(scheduler="tcp://x:8786")
        head.fit(parts["train"], parts["valid"])


def test_saved_files_are_data_not_code(parts, tmp_path):
    for head in (SVRHead(SVRHead.Config(max_train_rows=60)), LightGBMHead(LightGBMHead.Config(n_estimators=20, n_jobs=1)),
                 HisAve()):
        d = tmp_path / head.name
        head.fit(parts["train"], parts["valid"]).save(d)
        suffixes = {p.suffix for p in d.iterdir()}
        assert suffixes <= {".json", ".npz", ".txt"}, suffixes
        if (d / "svr.npz").exists():
            with np.load(d / "svr.npz", allow_pickle=False) as z:
                assert all(z[k].dtype != object for k in z.files)
