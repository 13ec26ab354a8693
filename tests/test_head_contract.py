"""The declared head contract (pipeline/head/base.py) and the typed run plan (issue 18, items 2 and 4).

Nothing outside the head base probes a head with getattr/hasattr (a source scan, shown to
catch a planted probe); the declared defaults hold; `register` refuses a duplicate name;
fine-tuning's hook wraps the model without patching the head; `fit` takes the progress
callback; `--set` strings from the command line and typed values from the API plan the
same run.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from tests import _tiny_data as tiny
import numpy as np
import pytest
import torch
from torch import nn

import heads
from pipeline.core.config import parse_sets
from pipeline.core.errors import PipeError
from pipeline.core.registry import Registry
from pipeline.head.base import Head
from pipeline.head.torch_head import ModelWrapper, TorchHead
from pipeline.run.train import TrainOptions, plan_run
from pipeline.train.data import RunSettings
from pipeline.train.regime import TRAIN_SPACE

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pipeline", "heads")
BASE = "pipeline/head/base.py"  # the one module that may read a head's (or its config's) attributes by name
# getattr/hasattr calls about other objects: (file, first argument). A new entry says why it is not a head.
NOT_HEADS = {
    ("pipeline/core/config.py", "a"), ("pipeline/core/config.py", "tp"),  # type annotations' names
    ("pipeline/extract/build.py", "types_[k]"),  # an extractor setting's type, for its error message
    ("pipeline/extract/options.py", "self"),  # extraction options checking their own fields
    ("pipeline/api.py", "r"),  # a run folder copied into the API's Run
    ("pipeline/cli/app.py", "e"),  # an exception's exit code
    ("pipeline/run/finetune.py", "net"), ("pipeline/run/finetune.py", "visual"),  # torchvision / open_clip networks
    ("pipeline/run/finetune.py", 'getattr(visual, "transformer", None)'),
    ("pipeline/serve/parse.py", "value"),  # a multipart form field: an upload has `read`
}


def probes(root: Path) -> set[tuple[str, str]]:
    """(file, first argument) of every getattr/hasattr call under `root`'s scanned packages, the base left out."""
    out = set()
    for pkg in SCANNED:
        for f in sorted((root / pkg).rglob("*.py")):
            rel = f.relative_to(root).as_posix()
            if rel == BASE:
                continue
            src = f.read_text()
            for node in ast.walk(ast.parse(src)):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("getattr", "hasattr") and node.args):
                    out.add((rel, ast.get_source_segment(src, node.args[0])))
    return out


def test_no_getattr_or_hasattr_on_heads_outside_the_base():
    assert probes(ROOT) - NOT_HEADS == set()


def test_the_scan_catches_a_planted_probe(tmp_path):
    (tmp_path / "pipeline" / "run").mkdir(parents=True)
    (tmp_path / "pipeline" / "head").mkdir()
    (tmp_path / "heads").mkdir()
    (tmp_path / "pipeline" / "head" / "base.py").write_text('def seed(c):\n    return getattr(c, "seed", 0)\n')
    (tmp_path / "pipeline" / "run" / "x.py").write_text('def f(head):\n    if hasattr(head, "progress"):\n        pass\n')
    (tmp_path / "heads" / "y.py").write_text('def g(self):\n    return getattr(self.config, "margin", 1.0)\n')
    assert probes(tmp_path) - NOT_HEADS == {("pipeline/run/x.py", "head"), ("heads/y.py", "self.config")}


class _Bare(Head):
    """The least a head writes: every other capability is the base's declared default."""

    name = "bare"

    class Config:
        pass

    def roles(self):
        return {}

    def fit(self, train, valid, progress=None):
        return self

    def predict(self, data):
        return np.zeros(len(data), np.float32)

    def save(self, directory):
        pass

    @classmethod
    def load(cls, directory):
        return cls(cls.Config())


def test_every_capability_is_declared_with_a_default():
    h = _Bare(_Bare.Config())
    assert (h.search_space, h.small_data, h.target_transform, h.on_dask) == ({}, {}, "none", False)
    assert (h.history, h.model, h.is_fitted, h.ablate, h.seed) == ([], None, False, (), 0)
    assert h.unseen_users(None) is None and h.explain(None) is None
    assert TorchHead.search_space == TRAIN_SPACE  # torch heads tune the trainer's lr and weight_decay by default
    assert heads.get("hybrid_cnn").target_transform == "max" and heads.get("lightgbm").on_dask


def test_register_refuses_a_second_class_of_the_same_name():
    reg: Registry = Registry("heads", "head")

    class A(_Bare):
        pass

    class B(_Bare):
        pass

    assert reg.register(A) is A and reg.register(A) is A  # the same class again (a re-run decorator) is fine
    with pytest.raises(PipeError, match=r"'bare' is taken: .*A and .*B"):
        reg.register(B)
    assert reg.classes["bare"] is A
    uhan = heads.get("uhan")
    with pytest.raises(PipeError, match="taken"):
        heads.register(type("Imposter", (_Bare,), {"name": "uhan"}))
    assert heads.get("uhan") is uhan


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("contract")
    tiny.make_dataset(c, n=80, seed=3)
    return c


SETS = {"max_steps": 4, "eval_every": 2, "patience": 2, "batch_size": 16, "dim": 8, "lr": 0.002,
        "word_dropout": 0.1, "device": "cpu", "threads": 1, "prefetch": 0}


def _plan(cache, sets, **kw):
    return plan_run(TrainOptions(dataset="tiny", head="uhan", stores={"visual": tiny.GRID, "text": tiny.TOKENS},
                                 sets=sets, cache=cache, **kw))


def _fit(plan, **kw):
    head = plan.head_cls(plan.config)
    head.settings = plan.settings
    return head, head.fit(plan.data["train"], plan.data["valid"], **kw)


def test_progress_is_passed_to_fit(cache, one_thread):
    seen: list[dict] = []
    head, fitted = _fit(_plan(cache, SETS), progress=seen.append)
    assert fitted is head and [e["step"] for e in seen] == [0, 2, 4]
    assert [e["step"] for e in head.history] == [0, 2, 4] and "best" in seen[-1] and "evals_left" in seen[-1]
    assert "progress" not in vars(head)  # a callback of the fit, not state of the head


class _Gain(ModelWrapper):
    """Wraps the head's model in a learned output gain with its own learning rate."""

    def __init__(self) -> None:
        self.groups = 0

    def wrap(self, model: nn.Module) -> nn.Module:
        return _Gained(model)

    def param_groups(self, wrapped, head_groups):
        self.groups += 1
        return head_groups(wrapped.head) + [{"params": [wrapped.gain], "lr": 0.05}]


class _Gained(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head, self.gain = head, nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return self.head(batch) * self.gain


def test_the_wrapper_hook_trains_the_wrapped_model_without_patching_the_head(cache, one_thread):
    plan = _plan(cache, {**SETS, "max_steps": 6})
    head = plan.head_cls(plan.config)
    head.settings, head.wrapper = plan.settings, _Gain()
    head.fit(plan.data["train"], plan.data["valid"])
    assert isinstance(head.model, _Gained) and head.wrapper.groups == 1
    assert float(head.model.gain.detach()) != 1.0  # its own group trained
    assert not {"build_model", "param_groups", "fit"} & set(vars(head))  # no method replaced on the instance
    plain = plan.head_cls(plan.config)
    plain.settings = plan.settings
    assert plain.wrapper is None and not isinstance(plain.fit(plan.data["train"], plan.data["valid"]).model, _Gained)


def test_cli_strings_and_typed_values_plan_and_train_the_same_run(cache, tmp_path, one_thread):
    from typer.testing import CliRunner

    from pipeline import api
    from pipeline.cli import _load_commands, app

    strings = parse_sets([f"{k}={v}" for k, v in SETS.items()])
    assert all(isinstance(v, str) for v in strings.values())
    a, b = _plan(cache, strings), _plan(cache, SETS)
    assert (a.config, a.settings, a.explicit) == (b.config, b.settings, b.explicit)
    assert a.settings == RunSettings(device="cpu", threads=1, prefetch=0) and a.config.lr == 0.002

    _load_commands()
    args = ["train", "--dataset", "tiny", "--head", "uhan", "--visual", tiny.GRID, "--text", tiny.TOKENS,
            "--runs", str(tmp_path), "--cache", str(cache), "--name", "cli"]
    r = CliRunner().invoke(app, [*args, *[x for k, v in SETS.items() for x in ("--set", f"{k}={v}")]])
    assert r.exit_code == 0, r.output
    typed = api.train("tiny", "uhan", config=SETS, visual=tiny.GRID, text=tiny.TOKENS, runs=tmp_path, cache=cache,
                      name="api")
    cfg = {n: json.loads((tmp_path / n / "config.json").read_text()) for n in ("cli", "api")}
    assert cfg["cli"]["config"] == cfg["api"]["config"] and cfg["cli"]["settings"] == cfg["api"]["settings"]
    cli_pred = api.load_run(tmp_path / "cli").predictions()
    assert cli_pred.equals(typed.predictions())
    with pytest.raises(PipeError, match="unknown option"):
        api.train("tiny", "uhan", sets=["lr=0.1"], runs=tmp_path, cache=cache)  # strings go through the CLI, not the API
