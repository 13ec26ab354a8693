"""SMPD end to end, through the CLI: a layout-faithful fixture (official file names and JSON
shapes of ../shared/SMPD.md, real JPEGs) -> `pipe ingest --format smpd` -> clip, clip_text
(random ViT-S-32: no internet) -> `pipe train --head dsn` -> `pipe evaluate` -> `pipe
score` of the unlabelled test part with `--submission`, which validates against the
documented format. A second run with `--task-set window_scope=user` scores with that scope."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import _load_commands
from pipeline.cli.app import app
from pipeline.submission import validate

pytestmark = [pytest.mark.slow, pytest.mark.smpd]

_load_commands()
T0 = 1_446_000_000
CATS = {"Travel": {"Lake": ["lake", "pier"], "City": ["street", "tower"]}, "Animal": {"Pet": ["cat", "dog"]}}


def make_smpd_fixture(d: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Both splits of an SMPD folder: the test part later in time and without labels."""
    rng = np.random.default_rng(seed)
    users = [f"{10 + k}@N{k:02d}" for k in range(10)]
    times = np.sort(rng.integers(0, 200 * 86400, n_train + n_test)) + T0
    for split, rows in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        recs = []
        for i in rows:
            u = users[int(rng.integers(len(users)))]
            cat = list(CATS)[int(rng.integers(len(CATS)))]
            sub = list(CATS[cat])[int(rng.integers(len(CATS[cat])))]
            concept = CATS[cat][sub][int(rng.integers(2))]
            pid = str(700 + i)
            img = d / split / u / f"{pid}.jpg"
            img.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img, quality=85)
            recs.append(dict(Uid=u, Pid=pid, cat=cat, sub=sub, concept=concept, t=int(times[i]),
                             score=float(6 + users.index(u) / 3 + (cat == "Travel") + rng.normal(0, 0.3))))
        files = {
            "img_filepath.txt": "".join(f"{split}/{r['Uid']}/{r['Pid']}.jpg\n" for r in recs),
            "category.json": [{"Uid": r["Uid"], "Pid": int(r["Pid"]), "Category": r["cat"], "Subcategory": r["sub"],
                               "Concept": r["concept"]} for r in recs],
            "text.json": [{"Uid": r["Uid"], "Pid": int(r["Pid"]), "Title": f"{r['concept']} photo",
                           "Mediatype": "photo", "Alltags": f"{r['concept']} {r['sub'].lower()}"} for r in recs],
            "temporalspatial_information.json": [{"Uid": r["Uid"], "Pid": int(r["Pid"]), "Postdate": str(r["t"]),
                                                  "Latitude": "0", "Longitude": "0", "Geoaccuracy": "0"} for r in recs],
            "additional_information.json": [{"Uid": r["Uid"], "Pid": int(r["Pid"]), "Pathalias": "None",
                                             "Ispublic": 1, "Mediastatus": "ready"} for r in recs],
            "user_data.json": [{"Uid": r["Uid"], "Pid": int(r["Pid"]), "photo_count": 100 + users.index(r["Uid"]),
                                "ispro": users.index(r["Uid"]) % 2, "timezone_offset": "+08:00",
                                "user_description": "photos"} for r in recs],
        }
        if split == "train":
            files["label.txt"] = "".join(f"{r['score']:.4f}\n" for r in recs)
        for name, body in files.items():
            (d / f"{split}_{name}").write_text(body if isinstance(body, str) else json.dumps(body))
    return d


def _pipe(*args: str) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("smpd")
    smpd, cache, runs = make_smpd_fixture(root / "SMPD"), root / "cache", root / "runs"
    c = ["--cache", cache]
    _pipe("ingest", smpd, "--name", "smpd", "--format", "smpd", *c)
    for backbone in ("clip", "clip_text"):
        _pipe("extract", "--dataset", "smpd", "--backbone", backbone, "--model", "ViT-S-32", "--weights", "random",
              "--device", "cpu", "--num-workers", "0", "-q", *c)
    tiny = ["max_steps=8", "eval_every=4", "patience=2", "batch_size=32", "dim=16", "device=cpu"]
    for name, extra in (("dsn", []), ("dsn-user", ["--task-set", "window_scope=user"])):
        _pipe("train", "--dataset", "smpd", "--head", "dsn", "--name", name, *[a for s in tiny for a in ("--set", s)],
              *extra, "--runs", runs, *c)
    return root, smpd, cache, runs


def test_smpd_goes_through_the_whole_chain(chain):
    root, smpd, cache, runs = chain
    run = runs / "dsn"
    assert "dsn" in _pipe("evaluate", run, "--runs", runs, "--out", root / "eval")
    notes = json.loads((run / "config.json").read_text())["notes"]
    assert any("crawled user statistics" in n and "user_photo_count" in n for n in notes)  # the leak is stated
    sub = root / "submission.json"
    _pipe("score", "--run", run, "--posts", smpd / "test_img_filepath.txt", "--format", "smpd", "--dataset", "smpd-test",
          "--out", root / "scores.parquet", "--submission", sub, "--device", "cpu", "--num-workers", "0", "-q",
          "--runs", runs, "--cache", cache)
    test_pids = [Path(p).stem for p in (smpd / "test_img_filepath.txt").read_text().split()]
    doc = json.loads(sub.read_text())
    assert validate(doc, test_pids) == []
    assert [r["post_id"] for r in doc["result"]] == test_pids  # one entry per test post, in the file's order
    assert doc["external_data"]["used"] == "false" and "random" in doc["external_data"]["details"]
    assert validate({**doc, "version": "1.0"}) and validate({**doc, "result": doc["result"] + doc["result"][:1]})
    # the first test post's window reaches back into the run's dataset (features only)
    win = pl.read_parquet(root / "scores.windows.parquet")
    train_ids = set(pl.read_parquet(cache / "smpd" / "posts.parquet")["post_id"].to_list())
    first = win.filter(pl.col("post_id") == test_pids[0])["window"].to_list()[0]
    assert len(first) == 8 and first[-1] == test_pids[0] and set(first[:-1]) <= train_ids


def test_a_run_scores_with_its_own_window_scope(chain):
    root, smpd, cache, runs = chain
    run = runs / "dsn-user"
    config = json.loads((run / "config.json").read_text())
    assert config["task"]["config"] == {"window": 8, "window_scope": "user"} and "window_scope" not in config["config"]
    _pipe("score", "--run", run, "--posts", smpd / "test_img_filepath.txt", "--format", "smpd", "--dataset", "smpd-test",
          "--out", root / "user.parquet", "--device", "cpu", "--num-workers", "0", "-q", "--runs", runs, "--cache", cache)
    posts = pl.concat([pl.read_parquet(cache / d / "posts.parquet").select("post_id", "user_id")
                       for d in ("smpd", "smpd-test")])
    user = dict(zip(posts["post_id"], posts["user_id"]))
    for kind in ("windows.parquet", "user.windows.parquet"):
        path = run / kind if kind == "windows.parquet" else root / kind
        for pid, w in pl.read_parquet(path).iter_rows():
            assert w[-1] == pid and {user[p] for p in w} == {user[pid]}
