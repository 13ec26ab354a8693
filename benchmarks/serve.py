"""`pipe serve` under load against the bare forward of the same model, in one run.

Two runs are trained on synth posts (random weights where a backbone is involved):
- image head: uhan on VGG16 pool5 at 224 px (random weights) + tokens;
- text head: lightgbm on tokens (`--ablate visual`).
A `pipe serve` process (loopback, both runs, CPU) is started, then for each head:
- bare: in this process, with the run's own extractors and head, one post and a batch of
  32 through decode + preprocess + extractor forward + head predict (no HTTP, no posts
  contract, no History): median seconds per call, posts/s for the batch;
- served: a bounded load generator (httpx, a fixed number of `POST /score` requests of one
  post each, every one a distinct draft: a new image and caption, so no cache hit) at
  concurrency 1, 8 and 32: p50/p99 latency, requests/s, failures.

    python benchmarks/serve.py                     # ~3-5 minutes on 2 CPU cores
    python benchmarks/serve.py --requests 64

Goals (2 CPU cores): image head p50 at c=1 within 20 ms of the bare single-post forward;
throughput at c=32 >= 0.8 of the bare batched forward; text head p50 <= 30 ms at c=1;
zero failed requests. Written to benchmarks/out/serve.json.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "serve.json"
WORDS = "river evening sky beach city night food dog cat mountain snow sun party friends coffee street".split()


def _jpeg(rng: np.random.Generator, size: int = 320) -> bytes:
    from PIL import Image

    a = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _post(i: int, rng: np.random.Generator, user: str, image: bool) -> dict:
    p = {"post_id": f"b{i}", "user_id": user, "title": " ".join(rng.choice(WORDS, 4)) + f" {i}",
         "posted_at": "2024-06-01T12:00:00Z"}
    if image:
        p["image_base64"] = base64.b64encode(_jpeg(rng)).decode()
    return p


def build(work: Path) -> tuple[Path, Path]:
    from pipeline import api
    from pipeline.data.synth import synth

    cache, runs = work / "cache", work / "runs"
    api.ingest(synth(work / "synth", posts=120, image_size=224, seed=0), "bench", cache=cache)
    opts = dict(cache=cache, quiet=True, device="cpu", num_workers=0)
    api.extract("bench", "vgg16", layer="pool5", image_size=224, weights="random", **opts)
    api.extract("bench", "tokens", **opts)
    api.train("bench", "uhan", config={"max_steps": 4, "eval_every": 2, "batch_size": 16, "device": "cpu"},
              stores={"visual": "vgg16-pool5-224", "text": "tokens"}, name="image-uhan", runs=runs, cache=cache)
    api.train("bench", "lightgbm", config={"n_estimators": 50, "n_jobs": 1}, ablate=["visual"],
              stores={"text": "tokens"}, name="text-lightgbm", runs=runs, cache=cache)
    return cache, runs


def bare(run: Path, cache: Path, image: bool, repeats: int, rng: np.random.Generator) -> dict:
    """decode + preprocess + extractor forward + head predict, without the service around it."""
    from pipeline.extract.inline import image_features, preprocess_image, text_features
    from pipeline.serve.engine import Draft, Engine
    from pipeline.serve.features import MemoryStore
    from pipeline.train.data import HeadData

    e = Engine(run, cache=cache, device="cpu", cache_bytes=0)
    user = next(iter(e.user_stats))

    def once(n: int, k: int) -> float:
        drafts = [Draft(_post(10_000 * k + i, rng, user, image)) for i in range(n)]
        for d in drafts:
            d.image = base64.b64decode(d.fields.pop("image_base64")) if image else None
        posts = e.posts(drafts)  # outside the timing: the bare forward starts from a table
        t0 = time.perf_counter()
        stores = {}
        for role, ex in e.extractors.items():
            if ex.modality == "image":
                feats = image_features(ex, [preprocess_image(ex, d.image) for d in drafts], "cpu")
            else:
                feats = text_features(ex, [d.fields["title"] for d in drafts], "cpu")
            stores[role] = MemoryStore(e.base[role], dict(zip(posts["post_id"].to_list(), feats)))
        e.head.predict(HeadData(e.ctx.task.label(posts), stores, e.ctx.task.target, task_config=e.ctx.task.config))
        return time.perf_counter() - t0

    once(1, 0), once(32, 1)  # warm-up
    single = statistics.median(once(1, 2 + k) for k in range(repeats))
    batch = statistics.median(once(32, 100 + k) for k in range(max(2, repeats // 4)))
    return {"single_ms": single * 1000, "batch32_ms": batch * 1000, "batch32_posts_per_s": 32 / batch}


async def load(url: str, run: str, posts: list[dict], concurrency: int) -> dict:
    import httpx

    lat, failures = [], 0
    queue = list(posts)

    async def worker(client):
        nonlocal failures
        while queue:
            p = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/score?run={run}", json={"posts": [p]})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t0)
            failures += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {"concurrency": concurrency, "requests": len(posts), "failures": failures,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "requests_per_s": len(posts) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=96, help="Requests per concurrency level (and head).")
    ap.add_argument("--repeats", type=int, default=12, help="Bare single-post forwards timed.")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="pipe-bench-serve-") as tmp:
        work = Path(tmp)
        cache, runs = build(work)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        server = subprocess.Popen([sys.executable, "-c", "from pipeline.cli import main; main()", "serve",
                                   "--run", str(runs / "image-uhan"), "--run", str(runs / "text-lightgbm"),
                                   "--cache", str(cache), "--port", str(port), "--device", "cpu", "-q"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            results = {}
            for name, image in (("image-uhan", True), ("text-lightgbm", False)):
                b = bare(runs / name, cache, image, a.repeats, rng)
                user = json.loads(httpx.get(f"{url}/users?run={name}&limit=1").read())["users"][0]["user_id"]
                levels = []
                for c in (1, 8, 32):
                    posts = [_post(1_000_000 * c + i, rng, user, image) for i in range(a.requests)]
                    levels.append(asyncio.run(load(url, name, posts, c)))
                results[name] = {"bare": b, "served": levels}
        finally:
            server.terminate()
            server.wait(60)
    img, txt = results["image-uhan"], results["text-lightgbm"]
    goals = {
        "image_p50_c1_minus_bare_single_ms": img["served"][0]["p50_ms"] - img["bare"]["single_ms"],
        "image_p50_c1_within_20ms": img["served"][0]["p50_ms"] - img["bare"]["single_ms"] <= 20,
        "image_c32_throughput_ratio": img["served"][2]["requests_per_s"] / img["bare"]["batch32_posts_per_s"],
        "image_c32_ratio_at_least_0.8": img["served"][2]["requests_per_s"] >= 0.8 * img["bare"]["batch32_posts_per_s"],
        "text_p50_c1_ms": txt["served"][0]["p50_ms"], "text_p50_c1_at_most_30ms": txt["served"][0]["p50_ms"] <= 30,
        "zero_failures": all(lv["failures"] == 0 for r in results.values() for lv in r["served"]),
    }
    report = {"cpus": os.cpu_count(), "requests": a.requests, "results": results, "goals": goals}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    for name, r in results.items():
        print(f"{name}: bare single {r['bare']['single_ms']:.1f} ms, bare batch of 32 "
              f"{r['bare']['batch32_posts_per_s']:.1f} posts/s")
        for lv in r["served"]:
            print(f"  c={lv['concurrency']:>2}  p50 {lv['p50_ms']:7.1f} ms  p99 {lv['p99_ms']:7.1f} ms  "
                  f"{lv['requests_per_s']:6.1f} req/s  failures {lv['failures']}")
    print(json.dumps(goals, indent=1))


if __name__ == "__main__":
    main()
