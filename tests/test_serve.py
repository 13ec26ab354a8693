"""`pipe serve` on tiny runs (random weights): the service's scores are `pipe score`'s
(difference 0), every error status (400 naming the field, 401, 404, 413, 415, 422) answers
as documented, a bad image fails only its own post, concurrent requests share a forward
pass without changing a score, uploads are written whole or not at all, and SIGTERM lets
a request in flight finish."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from tests._end_to_end import TINY, synth_runs

from fastapi.testclient import TestClient

from pipeline import api
from pipeline.data.contract import load_posts
from pipeline.serve.app import create_app
from pipeline.serve.batching import MicroBatcher
from pipeline.serve.engine import Engine
from pipeline.serve.uploads import Limits, Uploads

pytestmark = pytest.mark.slow  # builds runs on synth data and starts servers

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """Synth posts at 64 px, random VGG16 pool5 + tokens, tiny uhan (attention) and hisave runs."""
    root = tmp_path_factory.mktemp("serve")
    cache, runs = synth_runs(root, 64, (("uhan", "uhan", TINY), ("hisave", "hisave", [])))
    engines = [Engine(runs / n, cache=cache, device="cpu") for n in ("uhan", "hisave")]
    return {"root": root, "cache": cache, "runs": runs, "posts": load_posts("train", cache), "engines": engines}


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_app(world["engines"], limits=Limits(max_body_bytes=2_000_000, max_posts=20))) as c:
        yield c


def _b64(path: str | None) -> str | None:
    return base64.b64encode(Path(path).read_bytes()).decode() if path else None


def _new_posts(world, n: int = 12) -> pl.DataFrame:
    """Posts of the dataset as new drafts: new ids, two without their image, one of a new user."""
    p = world["posts"].head(n).with_columns(post_id="new-" + pl.col("post_id"))
    images = p["image"].to_list()
    images[1] = images[4] = None
    users = p["user_id"].to_list()
    users[2] = "someone-new"
    return p.with_columns(image=pl.Series(images, dtype=pl.String), user_id=pl.Series(users))


def _json_posts(p: pl.DataFrame) -> list[dict]:
    return [{"post_id": r["post_id"], "user_id": r["user_id"], "title": r["title"], "text": r["text"],
             "posted_at": r["posted_at"].isoformat(), "image_base64": _b64(r["image"])} for r in p.to_dicts()]


@pytest.mark.parametrize("run", ["uhan", "hisave"])
def test_service_scores_equal_pipe_score(world, client, run, tmp_path):
    p = _new_posts(world)
    f = tmp_path / "posts.parquet"
    p.write_parquet(f)
    api.score(world["runs"] / run, f, tmp_path / "scores.parquet", dataset=f"again-{run}", cache=world["cache"],
              device="cpu", quiet=True, num_workers=0)
    want = pl.read_parquet(tmp_path / "scores.parquet")
    r = client.post(f"/score?run={run}", json={"posts": _json_posts(p)})
    assert r.status_code == 200, r.text
    got = pl.DataFrame(r.json()["scores"]).select(want.columns)
    both = want.join(got, on="post_id", suffix="_served")
    assert both.height == p.height
    assert float((both["score"] - both["score_served"]).abs().max()) == 0.0
    assert both["unseen_user"].to_list() == both["unseen_user_served"].to_list()
    assert both["missing_image"].to_list() == both["missing_image_served"].to_list()
    assert both.filter(pl.col("post_id") == p["post_id"][2])["unseen_user"].item() is True
    assert sum(both["missing_image"]) == 2
    rows = {x["post_id"]: x for x in r.json()["scores"]}
    seen = rows[p["post_id"][0]]
    assert seen["user_mean"] is not None and seen["gain"] == pytest.approx(seen["score"] - seen["user_mean"])
    assert rows[p["post_id"][2]]["user_mean"] is None
    # a second request hits the feature cache and gives the same scores
    again = client.post(f"/score?run={run}", json={"posts": _json_posts(p)}).json()["scores"]
    assert [x["score"] for x in again] == [x["score"] for x in r.json()["scores"]]


def test_multipart_upload_and_rank_best_first(world, client):
    p = world["posts"].filter(pl.col("image").is_not_null()).head(3)
    user = p["user_id"][0]
    drafts = [{"post_id": f"d{i}", "title": t} for i, t in enumerate(p["title"].to_list())]
    files = [(f"image:d{i}", (f"{i}.jpg", Path(im).read_bytes(), "image/jpeg")) for i, im in enumerate(p["image"])]
    r = client.post("/rank?run=uhan", data={"user_id": user, "drafts": json.dumps(drafts)}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [d["score"] for d in body["drafts"]]
    assert scores == sorted(scores, reverse=True) and [d["rank"] for d in body["drafts"]] == [1, 2, 3]
    assert body["user_mean"] is not None and not any(d["missing_image"] for d in body["drafts"])
    one = client.post("/score?run=uhan", json={"posts": [{"post_id": "d0", "user_id": user, "title": p["title"][0],
                                                          "posted_at": "2024-01-01T00:00:00Z",
                                                          "image_base64": _b64(p["image"][0])}]})
    assert one.status_code == 200 and one.json()["scores"][0]["missing_image"] is False


def test_explain_maps_and_heads_without_attention(world, client):
    p = world["posts"].filter(pl.col("image").is_not_null() & (pl.col("title").str.len_chars() > 0)).head(1)
    body = {"posts": _json_posts(p)}
    r = client.post("/explain?run=uhan", json=body)
    assert r.status_code == 200, r.text
    x = r.json()["explanations"][0]
    assert sum(x["explanation"]["regions"]) == pytest.approx(1, abs=1e-5)
    assert all(isinstance(w[0], str) for w in x["explanation"]["words"])
    assert x["images"]["regions"].startswith("data:image/png;base64,")
    png = client.post("/explain?run=uhan&format=png&kind=regions", json=body)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    no = client.post("/explain?run=hisave", json=body)
    assert no.status_code == 422 and "attention" in no.json()["error"]


def test_error_statuses_name_the_problem(world, client):
    post = {"post_id": "x1", "user_id": "u", "title": "hello"}
    cases = [
        ({"posts": [{"post_id": "x1", "title": "no user"}]}, 400, "posts[0].user_id"),
        ({"posts": [{**post, "posted_at": "not a time"}]}, 400, "posts[0].posted_at"),
        ({"posts": []}, 400, "posts"),
        ({"posts": [{**post, "image": "/etc/passwd"}]}, 400, "posts[0].image"),
        ({"posts": [{**post, "image_base64": "%%%"}]}, 400, "posts[0].image_base64"),
        ({"posts": [dict(post, post_id=f"p{i}") for i in range(21)]}, 413, "limit"),
        ({"posts": [{**post, "image_base64": base64.b64encode(b"not an image at all").decode()}]}, 415, "not an image"),
    ]
    for body, status, words in cases:
        r = client.post("/score?run=uhan", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["status"] == status and words in r.json()["error"]
    r = client.post("/score?run=uhan", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "body" in r.json()["error"]
    r = client.post("/score?run=uhan", content=b"x" * 2_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/score?run=nope", json={"posts": [post]})
    assert r.status_code == 404 and "uhan" in r.json()["error"]
    r = client.get("/search?run=uhan&tag=cat")
    assert r.status_code == 422 and "embedding" in r.json()["error"]
    r = client.get("/search?run=uhan")
    assert r.status_code == 400 and "tag" in r.json()["error"]


def test_a_bad_image_fails_only_its_own_post(world, client):
    good = world["posts"].filter(pl.col("image").is_not_null()).head(1)
    posts = _json_posts(good) + [{"post_id": "bad", "user_id": "u", "title": "t",
                                  "image_base64": base64.b64encode(b"GIF89a broken").decode()}]
    r = client.post("/score?run=uhan", json={"posts": posts})
    assert r.status_code == 200, r.text
    rows = {x["post_id"]: x for x in r.json()["scores"]}
    assert rows["bad"]["missing_image"] is True and "image" in rows["bad"]["image_error"]
    assert rows[good["post_id"][0]]["missing_image"] is False


def test_runs_health_openapi_and_page(client):
    runs = client.get("/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["uhan", "hisave"] and runs[0]["extractors"]["visual"].startswith("vgg16")
    assert client.get("/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/score", "/rank", "/explain", "/search", "/runs", "/health", "/users"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "innerHTML" not in page.text and "textContent" in page.text


def test_token_is_required_when_set(world):
    with TestClient(create_app(world["engines"][1:], token="s3cret")) as c:
        assert c.get("/runs").status_code == 401
        assert c.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


def test_binding_beyond_loopback_needs_a_token(world):
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands
    from pipeline.cli.app import app

    _load_commands()
    res = CliRunner().invoke(app, ["serve", "--run", str(world["runs"] / "hisave"), "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "--token" in res.output


def test_concurrent_requests_share_one_pass():
    calls = []

    class D:
        def __init__(self, pid):
            self.post_id = pid

    def score(groups):
        calls.append([len(g) for g in groups])
        return [[{"post_id": d.post_id, "n": len(groups)} for d in g] for g in groups]

    async def main():
        from concurrent.futures import ThreadPoolExecutor

        b = MicroBatcher(score, ThreadPoolExecutor(1), window_s=0.05, max_posts=10)
        b.start()
        out = await asyncio.gather(*(b.submit([D(f"r{i}-a"), D(f"r{i}-b")]) for i in range(4)),
                                   b.submit([D("r0-a")]))  # collides with the first request: a pass of its own
        await b.stop()
        return out

    out = asyncio.run(main())
    assert calls == [[2, 2, 2, 2], [1]]
    assert [r["post_id"] for r in out[1]] == ["r1-a", "r1-b"] and out[0][0]["n"] == 4


def test_uploads_are_whole_or_absent(tmp_path, monkeypatch):
    up = Uploads(tmp_path, max_age_s=3600, max_bytes=25)
    a = up.save(b"0123456789", "aaa")
    assert a.read_bytes() == b"0123456789"

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        up.save(b"xxxxxxxxxx", "bbb")
    monkeypatch.undo()
    assert sorted(p.name for p in up.dir.iterdir()) == ["aaa.img"]  # no temp file, no half file
    up.save(b"y" * 10, "ccc")
    up.save(b"z" * 10, "ddd")
    os.utime(up.dir / "aaa.img", (1, 1))  # the oldest
    assert up.prune() == 1 and not (up.dir / "aaa.img").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight(world):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", "from pipeline.cli import main; main()", "serve", "--run", str(world["runs"] / "hisave"),
                             "--cache", str(world["cache"]), "--port", str(port), "--device", "cpu",
                             "--batch-window-ms", "1500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    import httpx

    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        got = {}
        t = threading.Thread(target=lambda: got.update(r=httpx.post(
            f"http://127.0.0.1:{port}/score", json={"posts": [{"post_id": "a", "user_id": "u", "title": "hi"}]},
            timeout=30)))
        t.start()
        time.sleep(0.5)  # the request waits in its 1.5 s batching window
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert got["r"].status_code == 200 and got["r"].json()["scores"][0]["post_id"] == "a"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
