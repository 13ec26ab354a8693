"""The Python API drives the whole loop (ingest -> extract -> train -> predict -> evaluate), the
CLI's `--json` summaries parse, and extraction of tokens / tfidf and ingest never import torch."""
from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import api
from pipeline.cli import _load_commands, app
from pipeline.core.errors import PipeError
from pipeline.data.synth import synth

_load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """synth posts (a DataFrame with image paths relative to its folder) through the API."""
    root = tmp_path_factory.mktemp("api")
    posts = synth(root / "syn", posts=240, image_size=16, seed=3)
    cache, runs = root / "cache", root / "runs"
    df = pl.read_parquet(posts)
    rep = api.ingest(df, "flickr", cache=cache, base=posts.parent)
    assert rep.rows == 240
    tok = api.extract("flickr", "tokens", cache=cache, quiet=True)
    run = api.train("flickr", "lightgbm", text="tokens", config={"n_estimators": 30, "n_jobs": 1}, name="g",
                    runs=runs, cache=cache)
    return root, cache, runs, run, tok


def test_api_loop_end_to_end(loop):
    root, cache, runs, run, tok = loop
    assert isinstance(run, api.Run) and run.name == "g" and run.head == "lightgbm"
    assert set(run.metrics["test"]) >= {"mse", "mae", "src", "medae"}
    assert run.stores == {"text": tok.extractor_id} and api.open_store("flickr", "tokens", cache).spec.kind == "tokens"
    before = (cache / "flickr" / "posts.parquet").read_bytes()

    new = pl.read_parquet(synth(root / "new", posts=60, image_size=16, seed=4))
    scores = run.predict(new.to_pandas(), base=root / "new", quiet=True)  # pandas in, pandas out
    assert type(scores).__name__ == "DataFrame" and type(scores).__module__.startswith("pandas")
    assert list(scores.columns) == ["post_id", "score", "unseen_user", "missing_image"]
    assert sorted(scores["post_id"]) == sorted(new["post_id"].to_list()) and scores["score"].notna().all()
    again = api.load_run("g", runs).predict(new, base=root / "new", quiet=True)  # cached: same scores
    assert isinstance(again, pl.DataFrame) and again.sort("post_id")["score"].to_list() == pytest.approx(
        pl.from_pandas(scores).sort("post_id")["score"].to_list())
    assert (cache / "flickr" / "posts.parquet").read_bytes() == before  # the run's dataset is untouched
    assert (cache / "g-predict" / "posts.parquet").exists()

    rows = api.evaluate([run, runs / "g"], out=root / "cmp")
    assert [r["run"] for r in rows] == ["g", "g"] and rows[0]["ablate"] == [] and rows[0]["stores"] == run.stores
    csv = pl.read_csv(root / "cmp.csv")
    assert csv["store_text"].to_list() == [tok.extractor_id] * 2 and "stores" not in csv.columns


def test_api_errors_are_pipe_errors(loop):
    _, cache, runs, _, _ = loop
    with pytest.raises(PipeError, match="unknown option"):
        api.train("flickr", "hisave", cache=cache, runs=runs, epochs=3)
    with pytest.raises(PipeError, match="unknown backbone"):
        api.extract("flickr", "nope", cache=cache)
    with pytest.raises(PipeError, match="DataFrame"):
        api.ingest([1, 2], "x", cache=cache)


def test_cli_json_outputs_parse_and_ids_stay_whole(loop, monkeypatch):
    root, cache, runs, run, tok = loop
    monkeypatch.setenv("COLUMNS", "30")  # a narrow terminal width must not cut ids in piped output
    res = runner.invoke(app, ["store", "ls", "--dataset", "flickr", "--cache", str(cache), "--json"])
    assert res.exit_code == 0, res.output
    assert [s["extractor_id"] for s in json.loads(res.stdout)] == [tok.extractor_id]
    res = runner.invoke(app, ["store", "ls", "--cache", str(cache)])
    assert tok.extractor_id in res.stdout
    res = runner.invoke(app, ["evaluate", "g", "--runs", str(runs), "--json", "--out", str(root / "ev")])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows[0]["run"] == "g" and rows[0]["test_mse"] == pytest.approx(run.metrics["test"]["mse"])
    res = runner.invoke(app, ["score", "--run", str(run.dir), "--posts", str(root / "new" / "posts.parquet"),
                              "--dataset", "cli-new", "--out", str(root / "s.parquet"), "--cache", str(cache), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["posts"] == 60 and summary["dataset"] == "cli-new" and set(summary["metrics"]) >= {"mse"}


def test_quiet_and_verbose(loop, tmp_path):
    root = loop[0]
    res = runner.invoke(app, ["ingest", str(root / "syn" / "posts.parquet"), "--name", "q", "--cache", str(tmp_path), "-q"])
    assert res.exit_code == 0 and res.output.strip() == ""
    res = runner.invoke(app, ["ingest", str(tmp_path / "absent.csv"), "--name", "q", "--cache", str(tmp_path), "-q"])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output  # errors survive --quiet
    res = runner.invoke(app, ["ingest", str(tmp_path / "absent.csv"), "--name", "q", "--cache", str(tmp_path), "-v"])
    assert res.exit_code == 2 and "Traceback" in res.output and "error:" in res.output


def test_synth_users_exact_or_refused(tmp_path):
    res = runner.invoke(app, ["synth", str(tmp_path / "a"), "--posts", "120", "--users", "12", "--image-size", "8"])
    assert res.exit_code == 0, res.output
    signals = json.loads((tmp_path / "a" / "signals.json").read_text())
    assert signals["n_users"] == 12 == len(signals["users"])
    assert pl.read_parquet(tmp_path / "a" / "posts.parquet")["user_id"].n_unique() == 12
    res = runner.invoke(app, ["synth", str(tmp_path / "b"), "--posts", "100", "--users", "24", "--image-size", "8"])
    assert res.exit_code == 2 and "at least 240 posts" in res.output and not (tmp_path / "b" / "posts.parquet").exists()
    default = json.loads((synth(tmp_path / "c", posts=100, image_size=8) and tmp_path / "c" / "signals.json").read_text())
    assert default["n_users"] == 2 == len(default["users"])  # one per 40 posts, at least 2


@pytest.mark.slow
def test_tokens_tfidf_extraction_and_ingest_without_torch(loop, tmp_path):
    root = loop[0]
    code = f"""
import sys
from pipeline import api
api.ingest({str(root / 'syn' / 'posts.parquet')!r}, "t", cache={str(tmp_path)!r})
assert "torch" not in sys.modules, "ingest imported torch"
for b in ("tokens", "tfidf"):
    assert api.extract("t", b, cache={str(tmp_path)!r}, quiet=True).extracted == 240
print(sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
