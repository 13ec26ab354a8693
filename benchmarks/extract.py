"""`pipe extract` end to end against the bare forward pass, per backbone, in one run.

For each backbone a fresh process measures
- start-up: imports (torch, pipeline, every registered extractor module, as `pipe extract`
  does), weights hashing (the extractor id), model build (`ExtractReport.load_seconds`);
- `pipe` images/s: steady state of `run_extract` (read, decode, resize, forward, store) over
  ~500x375 JPEGs, from the first finished shard to the last (shard = batch, so the
  DataLoader's start and the first batch do not count), with the default decoding workers;
- bare images/s: the extractor's forward alone on the same images decoded and resized
  beforehand (on the device for CUDA), same batch size, same torch threads.
`pixels` has no model, so its baseline is decode + resize + forward in one process;
`tokens` (text) compares `run_extract` with `transform` on the same texts.

    python benchmarks/extract.py                         # CPU default set (a few minutes on 2 cores)
    python benchmarks/extract.py --backbones vgg16-448 --images 64
    python benchmarks/extract.py --device cuda --images 20000 --batch-size 256

Weights are random state-dict files written once per run (loading and hashing a file is
what a real start-up does); features are not checked here (tests do that).
Goals: CPU ratio >= 0.95 and start-up < 10 s; one H100: vgg16 448 >= 2,000 images/s and
clip ViT-B/32 >= 6,000 images/s end to end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out" / "extract.json"

# name -> (extractor, config overrides, images per batch on CPU, batches on CPU)
BACKBONES = {
    "vgg16-224": ("vgg16", {"layer": "pool5", "image_size": 224}, 16, 5),
    "vgg16-448": ("vgg16", {"layer": "pool5", "image_size": 448}, 8, 4),
    "clip": ("clip", {"model": "ViT-B-32"}, 32, 6),
    "inception_v3": ("inception_v3", {"image_size": 299}, 16, 6),
    "pixels": ("pixels", {"image_size": 64}, 64, 8),
    "tokens": ("tokens", {"min_count": 1}, 8192, 6),  # 8192: the default shard of text extractors
}
DEFAULT = ["vgg16-224", "clip", "inception_v3", "pixels", "tokens"]
GOALS = {"vgg16-448": 2000.0, "clip": 6000.0}  # images/s end to end on one H100


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n distinct 500x375 JPEGs (quality 90) that compress like photos: gradients, shapes, mild noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        t = np.linspace(0, 1, 375, dtype=np.float32)[:, None, None]  # (375, 1, 1)
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = c0 * (1 - t) + c1 * t + 8 * rng.standard_normal((375, 500, 3))  # (375, 500, 3)
        im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x, y, s = rng.uniform(0, 450), rng.uniform(0, 330), rng.uniform(20, 160)
            draw.ellipse((x, y, x + s, y + s * 0.7), fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
        p = folder / f"{i:05d}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
    return paths


def _weights(name: str, over: dict, folder: Path) -> dict:
    """Random weights saved as a state dict, so start-up reads and hashes a real file."""
    import torch

    from pipeline.nn.weights import seeded

    if name == "vgg16":
        import torchvision

        with seeded(0):
            sd = torchvision.models.vgg16().features.state_dict()
        sd = {f"features.{k}": v for k, v in sd.items()}
    elif name == "inception_v3":
        from extractors.inception_v3 import _architecture

        with seeded(0):
            sd = _architecture().state_dict()
    elif name == "clip":
        import open_clip

        with seeded(0):
            sd = open_clip.create_model(over["model"], pretrained=None).state_dict()
    else:
        return over
    path = folder / f"{name}.pt"
    if not path.exists():
        torch.save(sd, path)
    return {**over, "weights": str(path)}


def _shard_rate(store: Path) -> float:
    """Rows per second between the first and the last shard file landing (mtimes)."""
    import h5py

    shards = sorted(store.glob("shard-*.h5"))
    if len(shards) < 2:
        return float("nan")
    times = [p.stat().st_mtime_ns / 1e9 for p in shards]
    rows = 0
    for p in shards[1:]:
        with h5py.File(p, "r") as f:
            rows += len(f["post_id"])
    return rows / max(times[-1] - times[0], 1e-9)


def measure(key: str, device: str, images: int | None, batch: int | None, work: Path) -> dict:
    """One backbone, in this (fresh) process."""
    t0 = time.perf_counter()
    import polars as pl
    import torch

    import extractors
    from pipeline.data.ingest import ingest
    from pipeline.extract import RunOptions, build_extractor, run_extract

    extractors.names()  # `pipe extract` imports every registered extractor's module
    name, over, cpu_batch, cpu_batches = BACKBONES[key]
    imports_s = time.perf_counter() - t0
    batch = batch or (cpu_batch if device == "cpu" else 256)
    n = images or batch * cpu_batches
    n -= n % batch  # whole batches: every shard is one batch
    over = _weights(name, over, work)
    text_only = extractors.get(name).modality == "text"
    paths = [None] * n if text_only else make_images(work / "images", n)  # texts need no JPEGs
    texts = [f"photo {i} of a lake at dawn, mist over the water #{i % 50} travel nature" for i in range(n)]
    cache = work / f"cache-{key}"
    raw = work / f"posts-{key}.parquet"
    pl.DataFrame({"post_id": [f"p{i:05d}" for i in range(n)], "user_id": [f"u{i % 7}" for i in range(n)],
                  "posted_at": [1_600_000_000 + 3600 * i for i in range(n)], "image": paths, "title": texts,
                  "text": [""] * n, "score": [float(i % 5) for i in range(n)]}).write_parquet(raw)
    ingest(raw, "bench", cache=cache)  # as `pipe ingest` would

    t1 = time.perf_counter()
    ex = build_extractor(name, **over)
    if ex.needs_fit:
        ex.fit(texts)  # the vocabulary: a text extractor's start-up (run_extract then skips it)
    ex.extractor_id()  # hashes a weights file (once per process)
    id_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    ex.load(device)
    load_s = time.perf_counter() - t2
    threads = torch.get_num_threads()
    bare, baseline = _bare(ex, name, device, paths, texts, batch)
    half = max(1, n // batch // 2)  # baseline batches before and after the run: load drift cancels
    bare_s = bare(half)
    r = run_extract("bench", ex, cache=cache, batch_size=batch, shard_size=batch, device=device, quiet=True)
    bare_s += bare(half)
    pipe_rate = _shard_rate(r.store)
    bare_rate = 2 * half * batch / bare_s
    return {
        "backbone": key, "extractor_id": r.extractor_id, "device": device, "images": n, "batch_size": batch,
        "torch_threads": threads, "decode_workers": RunOptions().resolved_workers(),
        "startup_s": {"imports": round(imports_s, 2), "weights_hash_or_fit": round(id_s, 2),
                      "model_build": round(load_s, 2), "total": round(imports_s + id_s + load_s, 2)},
        "pipe_images_per_s": round(pipe_rate, 2), "pipe_images_per_s_incl_warmup": round(r.images_per_s, 2),
        "bare_images_per_s": round(bare_rate, 2), "baseline": baseline, "ratio": round(pipe_rate / bare_rate, 3),
    }


def _bare(ex, name: str, device: str, paths: list[str], texts: list[str], batch: int):
    """(k -> seconds for k batches of the bare work, its label), on the first batch's inputs."""
    import torch

    from pipeline.nn.device import autocast
    from pipeline.extract.images import load_image

    def timed(step) -> float:
        t = time.perf_counter()
        step()
        return time.perf_counter() - t

    if ex.modality == "text":
        ex.transform(texts[:batch])  # warm-up
        return (lambda k: timed(lambda: [ex.transform(texts[:batch]) for _ in range(k)])), "transform"
    if name == "pixels":
        def whole(k: int) -> float:
            return timed(lambda: [ex.forward(torch.stack([ex.preprocess(load_image(p)[0]) for p in paths[:batch]]))
                                  for _ in range(k)])
        return whole, "decode+resize+forward, 1 process"
    x = torch.stack([ex.preprocess(load_image(p)[0]) for p in paths[:batch]]).to(device)  # (B, 3, s, s) uint8
    with autocast(device):
        ex.forward(x)  # warm-up (cudnn autotuning, lazy init)

    def forward(k: int) -> float:
        with autocast(device):
            return timed(lambda: [ex.forward(x) for _ in range(k)])
    return forward, "forward on decoded tensors"


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=",".join(DEFAULT), help=f"comma list of {', '.join(BACKBONES)}")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--images", type=int, default=None, help="images per backbone (default: a few CPU batches)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: per backbone on CPU, 256 on CUDA")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one backbone in this process
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one, a.device, a.images, a.batch_size, a.work)))
        return 0
    keys = [k.strip() for k in a.backbones.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BACKBONES]
    if unknown:
        ap.error(f"unknown backbones {unknown}; known: {', '.join(BACKBONES)}")
    load_before = _load_average()
    results = []
    with tempfile.TemporaryDirectory(prefix="pipe-bench-") as tmp:
        for k in keys:
            cmd = [sys.executable, __file__, "--one", k, "--device", a.device, "--work", tmp]
            cmd += ["--images", str(a.images)] if a.images else []
            cmd += ["--batch-size", str(a.batch_size)] if a.batch_size else []
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode:
                print(f"{k}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
            print(_row(results[-1]), flush=True)
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": a.device, "cpus": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": _load_average(),
              "goals": {"cpu_ratio": 0.95, "startup_s": 10.0, "h100_images_per_s": GOALS}, "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    print(f"\nload average before/after: {load_before} / {report['load_average_after']}; wrote {a.out}")
    return 0


def _row(r: dict) -> str:
    s = r["startup_s"]
    return (f"{r['backbone']:<13} {r['device']:<5} batch {r['batch_size']:>4}  pipe {r['pipe_images_per_s']:>9.1f}/s  "
            f"bare {r['bare_images_per_s']:>9.1f}/s  ratio {r['ratio']:.2f}  start-up {s['total']:.1f} s "
            f"(imports {s['imports']:.1f}, hash/fit {s['weights_hash_or_fit']:.1f}, build {s['model_build']:.1f})  [{r['baseline']}]")


if __name__ == "__main__":
    sys.exit(main())
