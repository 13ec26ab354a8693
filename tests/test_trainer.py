"""The shared trainer: early stopping, best-weight restore, determinism, the loader thread."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.errors import PipeError
from pipeline.train.data import RunSettings
from pipeline.train.loop import Prefetcher, Source, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Linear(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, 1)

    def forward(self, b):
        return self.lin(b["x"]).squeeze(-1)


def source(x: np.ndarray, y: np.ndarray, log: list | None = None) -> Source:
    def assemble(rows):
        if log is not None:
            log.append(threading.current_thread().name)
        return {"x": x[rows], "y": y[rows]}

    return Source(len(x), assemble, y)


def data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = np.arange(1, d + 1, dtype=np.float32)
    return x, (x @ w).astype(np.float32)


def fit(cfg, train, valid, seed=0, settings=None):
    torch.manual_seed(seed)
    model = Linear(train[0].shape[1])
    res = Trainer(cfg, settings or RunSettings()).fit(model, source(*train), source(*valid))
    return model, res


def test_fits_and_records_the_curve():
    cfg = TrainConfig(lr=0.05, batch_size=16, eval_every=5, patience=3, max_steps=200)
    model, res = fit(cfg, data(), data(seed=1))
    h = res.history
    assert h[0]["step"] == 0 and h[0]["train_loss"] is None
    assert [e["step"] for e in h] == list(range(0, res.steps + 1, 5))
    assert all(set(e) == {"step", "valid_mse", "train_loss", "seconds"} for e in h)
    assert h[-1]["valid_mse"] < 0.05 * h[0]["valid_mse"]
    assert res.samples_per_s > 0 and res.steps <= 200


def test_early_stopping_restores_best_weights():
    """Valid targets are the negated train targets: training only makes valid worse after a while."""
    x, y = data()
    xv, yv = data(seed=1)
    cfg = TrainConfig(lr=0.05, batch_size=16, eval_every=4, patience=3, max_steps=500)
    model, res = fit(cfg, (x, y), (xv, -yv))
    mses = [e["valid_mse"] for e in res.history]
    assert res.stop_reason == "patience"
    assert res.best_valid == min(mses) < mses[-1]
    # stopped exactly `patience` evaluations after the best one
    assert res.steps == res.best_step + cfg.patience * cfg.eval_every
    pred = Trainer(cfg).predict(model, source(xv, -yv))
    assert np.mean((pred.astype(np.float64) - (-yv)) ** 2) == pytest.approx(res.best_valid, rel=1e-6)


def test_max_steps_evaluates_at_the_cap():
    cfg = TrainConfig(lr=0.05, batch_size=16, eval_every=5, patience=100, max_steps=7)
    _, res = fit(cfg, data(), data(seed=1))
    assert res.steps == 7 and res.stop_reason == "max_steps"
    assert [e["step"] for e in res.history] == [0, 5, 7]


def test_deterministic_for_a_seed_and_prefetch_independent():
    cfg = TrainConfig(lr=0.05, batch_size=8, eval_every=5, patience=2, max_steps=40, seed=3)
    m1, r1 = fit(cfg, data(), data(seed=1))
    m2, r2 = fit(cfg, data(), data(seed=1))
    m3, r3 = fit(cfg, data(), data(seed=1), settings=RunSettings(prefetch=0))
    for a, b in ((m1, m2), (m1, m3)):
        for p, q in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(p, q)
    assert [e["valid_mse"] for e in r1.history] == [e["valid_mse"] for e in r2.history]
    _, r4 = fit(TrainConfig(**{**cfg.__dict__, "seed": 4}), data(), data(seed=1))
    assert [e["valid_mse"] for e in r4.history] != [e["valid_mse"] for e in r1.history]


def test_batches_are_assembled_in_the_loader_thread():
    log: list[str] = []
    x, y = data()
    before = threading.active_count()
    torch.manual_seed(0)
    Trainer(TrainConfig(batch_size=16, eval_every=3, max_steps=6)).fit(Linear(4), source(x, y, log), source(*data(seed=1)))
    assert log and set(log) == {"pipe-loader"}
    assert threading.active_count() == before  # every loader thread joined


def test_loader_errors_reach_the_caller_and_the_thread_stops():
    def bad(rows):
        if rows[0] >= 16:
            raise ValueError("corrupt row 16")
        return {"x": np.zeros((len(rows), 2), np.float32)}

    before = threading.active_count()
    batches = (np.arange(i, i + 8) for i in range(0, 64, 8))
    with pytest.raises(ValueError, match="corrupt row 16"):
        list(Prefetcher(Source(64, bad), batches, torch.device("cpu"), depth=2))
    pf = Prefetcher(Source(64, bad), (np.arange(8) for _ in range(10**6)), torch.device("cpu"), depth=2)
    for _ in zip(range(3), pf):  # the consumer stops early
        pass
    pf.close()
    assert threading.active_count() == before


def test_materialize_gives_the_same_batches():
    x, y = data()
    src = source(x, y)
    mem = src.materialize()
    rows = np.array([5, 1, 9])
    np.testing.assert_array_equal(mem.assemble(rows)["x"], src.assemble(rows)["x"])


def test_bad_settings_and_empty_parts_are_clear_errors():
    with pytest.raises(PipeError, match="eval_every"):
        Trainer(TrainConfig(eval_every=0))
    with pytest.raises(PipeError, match="validation part 0"):
        x, y = data()
        Trainer(TrainConfig()).fit(Linear(4), source(x, y), source(x[:0], y[:0]))


def test_threads_setting_applies_while_training_and_is_restored():
    seen = []

    class Spy(Linear):
        def forward(self, b):
            seen.append(torch.get_num_threads())
            return super().forward(b)

    x, y = data()
    torch.set_num_threads(2)
    try:
        Trainer(TrainConfig(batch_size=16, eval_every=2, max_steps=2), RunSettings(threads=1)).fit(Spy(4), source(x, y), source(x, y))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_a_non_finite_evaluation_never_counts_as_best():
    class NanFirst(Linear):  # the step-0 evaluation is NaN, later ones are finite
        calls = 0

        def forward(self, b):
            out = super().forward(b)
            if not self.training and NanFirst.calls == 0:
                return out * float("nan")
            NanFirst.calls += self.training
            return out

    x, y = data()
    torch.manual_seed(0)
    res = Trainer(TrainConfig(lr=0.05, batch_size=16, eval_every=2, patience=2, max_steps=20)).fit(
        NanFirst(4), source(x, y), source(*data(seed=1)))
    assert res.history[0]["valid_mse"] is None  # recorded as JSON null
    assert res.best_step > 0 and res.best_valid < float("inf")


def test_build_optimizer_names_and_checks():
    """Each optimizer name builds its torch class with the config's settings; bad settings are PipeErrors."""
    from pipeline.train.optim import build_optimizer

    w = [torch.nn.Parameter(torch.zeros(2))]
    assert type(build_optimizer(w, TrainConfig())) is torch.optim.Adam  # the default: pinned runs unchanged
    ada = build_optimizer(w, TrainConfig(optimizer="adagrad", lr=0.01, weight_decay=0.1))
    assert type(ada) is torch.optim.Adagrad and ada.param_groups[0]["lr"] == 0.01
    assert ada.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer(w, TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    for bad in (TrainConfig(optimizer="rmsprop"), TrainConfig(optimizer="sgd", nesterov=True)):
        with pytest.raises(PipeError):
            build_optimizer(w, bad)
    with pytest.raises(PipeError, match="optimizer"):
        Trainer(TrainConfig(optimizer="lbfgs"))


@pytest.mark.slow
def test_what_a_fit_finds_goes_to_the_runs_notes(tmp_path, monkeypatch):
    """Issue 19: a head's fit_notes (DMAN: dead tag outputs, the sized patience) reach config.json's notes."""
    import json

    import heads
    from pipeline.run.train import TrainOptions, train
    from tests import _tiny_data as tiny

    tiny.make_dataset(tmp_path, n=40, seed=1)
    cls = heads.get("hisave")
    monkeypatch.setattr(cls, "fit_notes", lambda self: ["3 of 9 outputs ended constant"], raising=False)
    said: list[str] = []
    run = train(TrainOptions(dataset="tiny", head="hisave", repeats=2, runs=tmp_path / "runs", cache=tmp_path), say=said.append)
    assert json.loads((run / "config.json").read_text())["notes"][-1] == "3 of 9 outputs ended constant"
    assert [n for n in said if "ended constant" in n] == ["repeat 1: 3 of 9 outputs ended constant",
                                                          "repeat 2: 3 of 9 outputs ended constant"]
    from pipeline.head.base import Head

    assert Head.fit_notes(cls.__new__(cls)) == []  # the base default: nothing to say
