"""Every registered head fits and predicts on a tiny store; save/load predicts identically.

A new head is tested by being registered; its task builds the parts (tests/_tiny_tasks.py)
and checks its outputs (`Task.check`). Trainer and size fields are shrunk through the
same `key=value` path as `pipe train --set`, only where the head's Config has them.
"""
from __future__ import annotations

import dataclasses

from tests import _tiny_data as tiny
from tests import _tiny_tasks
import numpy as np
import pytest

import heads
from pipeline.core.config import build_config
from pipeline.train import tasks
from pipeline.run.roles import resolve_roles

TINY = {"max_steps": "6", "eval_every": "2", "patience": "2", "batch_size": "16", "device": "cpu", "dim": "16",
        "n_estimators": "20", "n_jobs": "1", "max_train_rows": "60", "min_child_samples": "5"}
PREFERRED = {"visual": tiny.VISUAL_STORES, "text": tiny.TEXT_STORES}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=80, seed=5)
    return c


def _choices(roles: dict, cache) -> dict[str, str]:
    """Per role, the first tiny store of the right modality and a kind the role accepts."""
    from pipeline.store import open_store

    out = {}
    for role, spec in roles.items():
        for eid in PREFERRED.get(role, tiny.VISUAL_STORES + tiny.TEXT_STORES):
            if open_store("tiny", eid, cache).spec.kind in spec.kinds:
                out[role] = eid
                break
    return out


@pytest.mark.parametrize("name", heads.names())
def test_head_fits_predicts_and_round_trips(name, cache, tmp_path):
    cls = heads.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = build_config(name, cls.Config, {k: v for k, v in TINY.items() if k in fields})
    head = cls(config)
    stores, _ = resolve_roles(head.roles(), "tiny", cache, _choices(head.roles(), cache))
    assert {r for r, s in head.roles().items() if s.required} <= set(stores)
    task = tasks.get(cls.task)()
    part = _tiny_tasks.parts(cls.task, cache, stores, cls)

    assert head.fit(part["train"], part["valid"]) is head
    yhat = task.check(head.predict(part["test"]), part["test"], name, "test")  # shape and finiteness, per task
    for a in _arrays(yhat):
        assert a.dtype == np.float32 and len(a) == _tiny_tasks.n_outputs(cls.task, part["test"])

    head.save(tmp_path / "model")
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "model").rglob("*"))
    again = cls.load(tmp_path / "model")
    for a, b in zip(_arrays(again.predict(part["test"])), _arrays(yhat)):
        np.testing.assert_array_equal(a, b)

    # a user never seen in training still gets finite outputs, and is flagged
    stranger = _tiny_tasks.stranger(cls.task, part["test"])
    task.check(again.predict(stranger), stranger, name, "stranger")
    unseen = again.unseen_users(stranger)  # None: the head keeps no users (pipe score judges from the run)
    if unseen is not None:
        assert unseen.tolist() == [True, True]
        assert not again.unseen_users(part["train"]).any()


@pytest.mark.slow
def test_optimizer_reaches_the_shared_trainer(cache, monkeypatch, one_thread):
    """`--set optimizer=sgd momentum=... nesterov=true` trains every registered torch head with
    that SGD (the first optimizer its fit builds; DMAN's evaluation classifier keeps Adam after)."""
    import torch
    from pipeline.head.torch_head import TorchHead
    from pipeline.train import loop

    built: list[torch.optim.Optimizer] = []

    def spy(params, config):
        built.append(real(params, config))
        return built[-1]

    real = loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", spy)
    torch_heads = [n for n in heads.names() if issubclass(heads.get(n), TorchHead)]
    assert {"amnl", "dman", "uhan", "dsn", "bpr"} <= set(torch_heads)
    for name in torch_heads:
        cls = heads.get(name)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        sets = {**{k: v for k, v in TINY.items() if k in fields}, "max_steps": "1", "optimizer": "sgd",
                "momentum": "0.7", "nesterov": "true", "lr": "0.05"}
        head = cls(build_config(name, cls.Config, sets))
        stores, _ = resolve_roles(head.roles(), "tiny", cache, _choices(head.roles(), cache))
        part = _tiny_tasks.parts(cls.task, cache, stores, cls)
        built.clear()
        head.fit(part["train"], part["valid"])
        assert built, name
        opt = built[0]
        assert type(opt) is torch.optim.SGD, (name, type(opt))
        assert all(g["momentum"] == 0.7 and g["nesterov"] and g["lr"] == 0.05 for g in opt.param_groups), name


def _arrays(out) -> list[np.ndarray]:
    """The arrays of a task's output: itself, or an EmbeddingOutput's vectors and confidences."""
    return [out] if isinstance(out, np.ndarray) else [out.vectors, out.confidence]
