"""`pipe train` / `pipe evaluate`: config building, role resolution, run folders, the CLI."""
from __future__ import annotations

import json
from dataclasses import dataclass

from tests import _tiny_data as tiny
import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.head.base import Role
from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.core.config import build_config, config_from_dict, config_to_dict, parse_sets
from pipeline.core.errors import PipeError
from pipeline.run.roles import resolve_roles
from pipeline.run.train import TrainOptions, train
from pipeline.run.rundir import load_run

_load_commands()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=120, seed=2, stores=(tiny.GRID, tiny.FC, tiny.TOKENS, tiny.TEXTVEC))  # no pixels store
    return c


@dataclass
class Cfg:
    steps: int = 3  # an int
    lr: float = 0.1  # a float
    name: str | None = None  # optional
    flag: bool = False  # a bool
    dims: tuple[int, ...] = (4,)  # a tuple
    ablate: tuple[str, ...] = ()  # ablations


def test_build_config_converts_and_names_bad_keys():
    c = build_config("toy", Cfg, parse_sets(["steps=7", "lr=2e-3", "name=none", "flag=yes", "dims=1,2,3"]), ["a", "b", "a"])
    assert (c.steps, c.lr, c.name, c.flag, c.dims, c.ablate) == (7, 0.002, None, True, (1, 2, 3), ("a", "b"))
    assert config_from_dict(Cfg, json.loads(json.dumps(config_to_dict(c)))) == c
    with pytest.raises(PipeError, match="valid keys: steps, lr, name, flag, dims, ablate"):
        build_config("toy", Cfg, {"stepz": 1})
    with pytest.raises(PipeError, match="steps='x'"):
        build_config("toy", Cfg, {"steps": "x"})
    with pytest.raises(PipeError, match="key=value"):
        parse_sets(["steps"])

    @dataclass
    class NoAblate:
        k: int = 1  # one field

    with pytest.raises(PipeError, match="no ablations"):
        build_config("toy", NoAblate, {}, ["user"])


def test_resolve_roles_defaults_choices_and_errors(cache):
    roles = {"visual": Role(("grid", "vector"), "vgg16-pool5", False), "text": Role(("vector", "tokens"), None, False)}
    with pytest.raises(PipeError, match="several stores") as e:
        resolve_roles(roles, "tiny", cache)
    assert tiny.TOKENS in str(e.value) and tiny.TEXTVEC in str(e.value)
    stores, _ = resolve_roles(roles, "tiny", cache, {"text": "tokens"})
    assert {r: s.extractor_id for r, s in stores.items()} == {"visual": tiny.GRID, "text": tiny.TOKENS}
    stores, _ = resolve_roles({"visual": Role(("grid",))}, "tiny", cache)  # the only grid store
    assert stores["visual"].extractor_id == tiny.GRID
    with pytest.raises(PipeError, match="holds grid rows"):
        resolve_roles({"text": Role(("tokens",))}, "tiny", cache, {"text": "vgg16-pool5"})
    with pytest.raises(PipeError, match="several stores"):
        resolve_roles(roles, "tiny", cache, {"visual": "vgg16"})
    with pytest.raises(PipeError, match="needs a pixels store"):
        resolve_roles({"img": Role(("pixels",))}, "tiny", cache)
    stores, notes = resolve_roles({"img": Role(("pixels",), required=False)}, "tiny", cache, {"text": "tokens"})
    assert stores == {} and any("left out" in n for n in notes) and any("--text" in n for n in notes)


def test_train_writes_a_complete_run(cache, tmp_path):
    opts = TrainOptions(dataset="tiny", head="svr", stores={"text": "tokens"}, sets={"C": 2, "max_train_rows": 60},
                        ablate=["visual"], repeats=2, runs=tmp_path, cache=cache, split="0.6,0.2,0.2")
    d = train(opts)
    assert d.parent == tmp_path and d.name.startswith("svr-no-visual-")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["config"]["C"] == 2.0 and cfg["config"]["ablate"] == ["visual"] and cfg["seeds"] == [0, 1]
    assert list(cfg["stores"]) == ["text"] and cfg["stores"]["text"]["extractor_id"] == tiny.TOKENS
    assert cfg["split"]["fractions"] == [0.6, 0.2, 0.2] and cfg["split"]["parts"]["train"]["posts"] == 72
    assert cfg["versions"]["numpy"] and "revision" in cfg["git"]
    m = json.loads((d / "metrics.json").read_text())
    assert set(m) == {"valid", "test", "std", "repeats", "never_improved", "constant"} and len(m["repeats"]) == 2
    for part in ("valid", "test"):
        assert set(m[part]) == {"mse", "mae", "src", "medae"}
        vals = [r[part]["mse"] for r in m["repeats"]]
        assert m[part]["mse"] == pytest.approx(sum(vals) / 2)
        assert m["std"][part]["mse"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    p = pl.read_parquet(d / "predictions.parquet")
    assert p.columns == ["post_id", "split", "user_id", "y", "yhat"] and p.height == 120
    assert p["split"].value_counts().sort("split")["count"].to_list() == [24, 72, 24]  # test, train, valid
    test_p = p.filter(pl.col("split") == "test")
    first = m["repeats"][0]["test"]["mse"]
    assert ((test_p["y"] - test_p["yhat"]) ** 2).mean() == pytest.approx(first, rel=1e-5)  # repeat 0's model
    log = [json.loads(line) for line in (d / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and log[-1]["event"] == "end"
    assert [e["repeat"] for e in log if e["event"] == "repeat_end"] == [0, 1]
    head = load_run(d).load_head()
    assert head.config.C == 2.0 and head.config.seed == 0


def test_train_refuses_bad_requests(cache, tmp_path):
    base = dict(dataset="tiny", runs=tmp_path, cache=cache)
    with pytest.raises(PipeError, match="unknown head 'nope'; known heads: .*hisave"):
        train(TrainOptions(head="nope", **base))
    with pytest.raises(PipeError, match="knows visual, text, user"):
        train(TrainOptions(head="svr", ablate=["colour"], **base))
    with pytest.raises(PipeError, match="no ablations"):
        train(TrainOptions(head="hisave", ablate=["user"], **base))
    with pytest.raises(PipeError, match="valid keys"):
        train(TrainOptions(head="hisave", sets={"lr": 1}, **base))
    with pytest.raises(PipeError, match="--scheduler"):
        train(TrainOptions(head="hisave", scheduler="tcp://h:1", **base))
    with pytest.raises(PipeError, match="no posts table"):
        train(TrainOptions(head="hisave", dataset="absent", runs=tmp_path, cache=cache))
    train(TrainOptions(head="hisave", name="same", **base))
    with pytest.raises(PipeError, match="already exists"):
        train(TrainOptions(head="hisave", name="same", **base))


def test_cli_train_then_evaluate(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner()
    runs = tmp_path / "runs"
    res = r.invoke(app, ["train", "--dataset", "tiny", "--head", "hisave", "--name", "h", "--runs", str(runs),
                         "--cache", str(cache), "--split", "uhan:3"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["train", "--dataset", "tiny", "--head", "lightgbm", "--text", "tokens", "--name", "g",
                         "--set", "n_estimators=30", "--set", "n_jobs=1", "--runs", str(runs), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert json.loads((runs / "g" / "config.json").read_text())["stores"]["visual"]["extractor_id"] == tiny.GRID
    res = r.invoke(app, ["train", "--dataset", "tiny", "--head", "svr", "--runs", str(runs), "--cache", str(cache)])
    assert res.exit_code == 2 and "choose one with --text" in res.output and "Traceback" not in res.output
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text(json.dumps({"head": "svr", "ablate": [], "stores": {}}))
    res = r.invoke(app, ["evaluate", str(runs / "h"), "g", "broken", "--runs", str(runs)])
    assert res.exit_code == 0, res.output
    csv = pl.read_csv(runs / "evaluate.csv")
    assert csv["run"].to_list() == ["h", "g", "broken"] and csv["status"].to_list() == ["done", "done", "running"]
    g = json.loads((runs / "g" / "metrics.json").read_text())
    assert csv["test_mse"][1] == pytest.approx(g["test"]["mse"])
    md = (runs / "evaluate.md").read_text()
    assert md.startswith("## regression") and "| run | dataset | target | head |" in md and "| g | tiny | score | lightgbm |" in md
    res = r.invoke(app, ["evaluate", *map(str, sorted(runs.iterdir())), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0 and "skipping" in res.output and (tmp_path / "cmp.md").exists()
    res = r.invoke(app, ["evaluate", "missing-run", "--runs", str(runs)])
    assert res.exit_code == 2 and "no run at" in res.output


def test_default_names_never_collide(cache, tmp_path, monkeypatch):
    a = train(TrainOptions(dataset="tiny", head="hisave", runs=tmp_path, cache=cache))
    assert a.name.startswith("hisave-2")  # head, then the timestamp
    monkeypatch.setattr("pipeline.run.train.default_run_name", lambda head, ablate: "same-second")
    b = train(TrainOptions(dataset="tiny", head="hisave", runs=tmp_path, cache=cache))
    c = train(TrainOptions(dataset="tiny", head="hisave", runs=tmp_path, cache=cache))
    assert (b.name, c.name) == ("same-second", "same-second-2") and (c / "metrics.json").exists()
