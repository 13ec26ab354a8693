"""The GPU path, measured in one run: extraction, decoding, training from a store, fine-tuning.

Prepared for a short lease of one GPU (a few minutes, no network, the machine's own
Python and torch): it makes its own ~500x375 JPEGs, uses random weights, is sized for
under 4 minutes on one H100/H200 (estimated: not run on one yet), prints a one-screen
summary and writes JSON. On CPU it
runs the same code at reduced sizes, so CI checks it (tests/test_bench_gpu.py).

Per backbone (vgg16 pool5 448, vgg16 fc7 224, clip ViT-B-32, inception_v3 299):
- `pipe extract` images/s end to end (`run_extract`, steady state from the first to the
  last shard, as benchmarks/extract.py) vs the bare forward on pre-decoded tensors on
  the device (same batch), with GPU utilisation sampled over the same steady state and
  peak GPU memory;
- where the time goes: a second run with pipe's stages timed (benchmarks/_gpu_probes.py).
Then nvjpeg decode (and decode + resize) vs PIL; UHAN training samples/s from a 196x512
store vs memory (benchmarks/train_loader.py); and the fine-tuning step rate of UHAN
through VGG16 pool5 (last conv block trainable) vs a bare forward + backward.

    benchmarks/gpu.sh                        # on the GPU machine (see README, Benchmarks)
    python benchmarks/gpu.py                 # CPU: reduced sizes (--quick): ~1 min of CPU time, 1 thread
    python benchmarks/gpu.py --tiny          # CPU: smallest inputs, for the test

Goals on one H100/H200-class GPU: vgg16 pool5 448 >= 2,000 images/s and clip ViT-B/32 >=
6,000 images/s end to end, each backbone >= 0.9 of its bare forward, fine-tuning >= 0.8
of the bare forward + backward. On CPU goals are not judged (null).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download, ever

# label -> (extractor, config, config with --tiny: the smallest input each accepts)
BACKBONES = {
    "vgg16-pool5-448": ("vgg16", {"layer": "pool5", "image_size": 448}, {"layer": "pool5", "image_size": 64}),
    "vgg16-fc7-224": ("vgg16", {"layer": "fc7", "image_size": 224}, {"layer": "fc7", "image_size": 32}),
    "clip-ViT-B-32": ("clip", {"model": "ViT-B-32"}, {"model": "ViT-S-32"}),
    "inception_v3-299": ("inception_v3", {"image_size": 299}, {"image_size": 75}),
}
# images: per backbone, distinct: JPEGs drawn (the rest are copies), batch: per forward (= shard),
# decode/pil: images decoded on the device / with PIL, posts/steps/rounds/train_batch: train_loader,
# ft_*: fine-tuning
SIZES = {
    "full": dict(images=4096, distinct=256, batch=256, decode=2048, pil=256, posts=2048, steps=20, rounds=3,
                 train_batch=128, ft_size=448, ft_batch=64, ft_steps=10),
    "quick": dict(images=8, distinct=8, batch=4, decode=16, pil=16, posts=256, steps=2, rounds=2,
                  train_batch=64, ft_size=448, ft_batch=2, ft_steps=2),
    "tiny": dict(images=4, distinct=2, batch=2, decode=4, pil=4, posts=48, steps=1, rounds=1,
                 train_batch=16, ft_size=64, ft_batch=2, ft_steps=1),
}
GOALS = {"vgg16-pool5-448_images_per_s": 2000.0, "clip-ViT-B-32_images_per_s": 6000.0, "ratio_to_bare": 0.9,
         "finetune_ratio": 0.8}


def make_inputs(folder: Path, n: int, distinct: int) -> list[str]:
    """n ~500x375 JPEGs: `distinct` drawn by benchmarks/extract.py's make_images, the rest copies of them
    (decoding costs the same; drawing thousands would take a minute of the lease)."""
    from extract import make_images

    drawn = make_images(folder, min(n, distinct))
    paths = list(drawn)
    for i in range(len(drawn), n):
        paths.append(str(folder / f"copy-{i:05d}.jpg"))
        shutil.copyfile(drawn[i % len(drawn)], paths[-1])
    return paths


def measure_backbone(label: str, config: dict, posts, work: Path, device: str, batch: int) -> dict:
    """pipe vs bare images/s, utilisation, peak memory (an untimed run), then the stage breakdown (a timed run)."""
    from _gpu_probes import UtilSampler, peak_gib, reset_peak, stage_timers
    from extract import _bare, _shard_rate

    from pipeline.extract import RunOptions, build_extractor, run_extract
    from pipeline.extract.reader import decodes_on_device

    name = BACKBONES[label][0]
    t = time.perf_counter()
    ex = build_extractor(name, weights="random", **config)
    ex.load(device)
    build_s = time.perf_counter() - t
    paths = posts["image"].to_list()
    n = len(paths)
    bare, _ = _bare(ex, name, device, paths, [], batch)  # its warm-up also runs cudnn's autotuning
    half = max(1, n // batch // 2)  # bare batches before and after the pipe run: drift cancels
    opts = dict(batch_size=batch, shard_size=batch, device=device, quiet=True)
    bare_s = bare(half)
    reset_peak(device)
    with UtilSampler(device) as util:
        r = run_extract("bench", ex, cache=work / f"{label}-a", posts=posts, **opts)
    peak = peak_gib(device)
    bare_s += bare(half)
    pipe_rate, bare_rate = _shard_rate(r.store), 2 * half * batch / bare_s
    landed = sorted(f.stat().st_mtime for f in r.store.glob("shard-*.h5"))  # the window _shard_rate's rate covers
    with stage_timers(ex, device) as timers:
        t = time.perf_counter()
        timed = run_extract("bench", ex, cache=work / f"{label}-b", posts=posts, **opts)
        timed_s = time.perf_counter() - t
    for d in ("a", "b"):
        shutil.rmtree(work / f"{label}-{d}", ignore_errors=True)  # a 4096-image vgg16 448 store is 0.8 GB
    if r.extracted != n or timed.extracted != n:
        raise RuntimeError(f"{label}: extracted {r.extracted} and {timed.extracted} of {n} images")
    return {"backbone": label, "extractor_id": r.extractor_id, "config": config, "images": n, "batch_size": batch,
            "decode_on": "device" if decodes_on_device(ex, device, "auto") else "cpu workers (PIL)",
            "decode_workers": RunOptions().resolved_workers(), "model_build_s": round(build_s, 2),
            "pipe_images_per_s": round(pipe_rate, 1), "pipe_images_per_s_incl_warmup": round(r.images_per_s, 1),
            "bare_images_per_s": round(bare_rate, 1), "ratio": round(pipe_rate / bare_rate, 3),
            **util.summary((landed[0], landed[-1])), "peak_gpu_mem_gib": peak,
            "stages_ms_per_image": timers.ms_per_image(timed_s, n), "stages_run_images_per_s": round(n / timed_s, 1)}


def train_from_store(device: str, s: dict) -> dict:
    """benchmarks/train_loader.py in this process (its own table silenced; one screen here)."""
    import train_loader

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        out = Path(tmp) / "train_loader.json"
        train_loader.main(["--posts", str(s["posts"]), "--steps", str(s["steps"]), "--rounds", str(s["rounds"]),
                           "--batch", str(s["train_batch"]), "--device", device, "--out", str(out)])
        r = json.loads(out.read_text())
    return {"posts": r["posts"], "grid": r["grid"], "batch": r["batch"], "dim": r["dim"], "device": r["device"],
            "store_samples_per_s": round(r["samples_per_s"]["store"], 1),
            "memory_samples_per_s": round(r["samples_per_s"]["memory"], 1),
            "ratio": round(r["ratio_store_vs_memory"], 3)}


def judge(report: dict) -> dict:
    """Each goal: met (bool), or None where not judged (CPU) or not measured."""
    if not report["device"].startswith("cuda"):
        return {k: None for k in ("vgg16-pool5-448", "clip-ViT-B-32", "ratio_to_bare", "finetune_ratio")}
    by = {r["backbone"]: r for r in report["extract"]}
    return {"vgg16-pool5-448": by["vgg16-pool5-448"]["pipe_images_per_s"] >= GOALS["vgg16-pool5-448_images_per_s"],
            "clip-ViT-B-32": by["clip-ViT-B-32"]["pipe_images_per_s"] >= GOALS["clip-ViT-B-32_images_per_s"],
            "ratio_to_bare": {k: r["ratio"] >= GOALS["ratio_to_bare"] for k, r in by.items()},
            "finetune_ratio": report["finetune"]["ratio"] >= GOALS["finetune_ratio"]}


def _fmt(v: object, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _shown(r: dict) -> str:
    """The row's name from what ran (with --tiny: the smallest inputs, not the label's)."""
    c = r["config"]
    parts = (r["backbone"].split("-")[0], c.get("layer"), c.get("model"), c.get("image_size"))
    return "-".join(str(v) for v in parts if v)


def summary(rep: dict) -> str:
    """The one-screen table printed at the end."""
    lines = [f"pipe GPU benchmark on {rep['device_name']} ({rep['device']}, size {rep['size']}), torch {rep['torch']}, "
             f"{rep['cpus']} CPUs, {rep['torch_threads']} torch threads, {rep['total_s']:.0f} s",
             f"{'backbone':<17} {'pipe/s':>8} {'bare/s':>8} {'ratio':>6} {'util%':>6} {'peakGiB':>7}  "
             f"ms/image: {' '.join(f'{k[:6]:>6}' for k in rep['stages'])}"]
    for r in rep["extract"]:
        st = r["stages_ms_per_image"]
        lines.append(f"{_shown(r):<17} {r['pipe_images_per_s']:>8.1f} {r['bare_images_per_s']:>8.1f} "
                     f"{r['ratio']:>6.2f} {_fmt(r['gpu_util_mean']):>6} {_fmt(r['peak_gpu_mem_gib'], '.2f'):>7}  "
                     f"          {' '.join(_fmt(st[k], '.2f').rjust(6) for k in rep['stages'])}")
    d, t, f = rep["decode"], rep["train_loader"], rep["finetune"]
    lines += [f"decode on {d['device']}: {d['device_decode_images_per_s']:.0f}/s (+ resize to {d['resize_to']}: "
              f"{d['device_decode_resize_images_per_s']:.0f}/s); PIL, 1 process: {d['pil_decode_images_per_s']:.0f}/s "
              f"(+ resize: {d['pil_decode_resize_images_per_s']:.0f}/s)",
              f"UHAN training, {t['grid'][0]}x{t['grid'][1]} grids, batch {t['batch']}: store "
              f"{t['store_samples_per_s']:.0f}/s, memory {t['memory_samples_per_s']:.0f}/s, ratio {t['ratio']:.2f}",
              f"fine-tuning UHAN through vgg16 pool5 {f['image_size']} (last block), batch {f['batch']}: "
              f"{f['finetune_samples_per_s']:.1f}/s vs bare fwd+bwd {f['bare_samples_per_s']:.1f}/s, ratio "
              f"{f['ratio']:.2f}, peak {_fmt(f['finetune_peak_gpu_mem_gib'], '.2f')} GiB",
              f"goals met: {json.dumps(rep['goals_met'])}  (goals: {json.dumps(rep['goals'])})"]
    return "\n".join(lines)


def run(device: str, size: str, out: Path, only: list[str]) -> dict:
    import _gpu_probes
    import polars as pl
    import torch

    from pipeline.data.contract import load_posts
    from pipeline.data.ingest import ingest
    from pipeline.extract import build_extractor

    t0, s, load0 = time.perf_counter(), SIZES[size], _load_average()
    rep: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device, "size": size,
                 "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor()
                 or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
                 "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "goals": GOALS,
                 "stages": list(_gpu_probes.STAGES)}
    with tempfile.TemporaryDirectory(prefix="pipe-gpu-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        paths = make_inputs(work / "images", s["images"], s["distinct"])
        rep["inputs"] = {"images": len(paths), "distinct": min(len(paths), s["distinct"]), "width": 500, "height": 375,
                         "make_s": round(time.perf_counter() - t, 1)}
        n = len(paths)
        pl.DataFrame({"post_id": [f"p{i:05d}" for i in range(n)], "user_id": [f"u{i % 7}" for i in range(n)],
                      "posted_at": [1_600_000_000 + 60 * i for i in range(n)], "image": paths, "title": [""] * n,
                      "text": [""] * n, "score": [float(i % 5) for i in range(n)]}
                     ).write_parquet(work / "posts.parquet")
        ingest(work / "posts.parquet", "bench", cache=work / "cache")
        posts = load_posts("bench", work / "cache")
        tiny = size == "tiny"
        rep["extract"] = []
        for label in only:
            config = BACKBONES[label][2 if tiny else 1]
            rep["extract"].append(measure_backbone(label, config, posts, work, device, s["batch"]))
            print(f"  {label}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        first = BACKBONES["vgg16-pool5-448"]
        ex = build_extractor("vgg16", weights="random", **(first[2] if tiny else first[1]))
        rep["decode"] = _gpu_probes.decode_rates(paths, ex, device, s["batch"], s["decode"], s["pil"])
    print(f"  decode: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rep["train_loader"] = train_from_store(device, s)
    print(f"  train_loader: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rep["finetune"] = _gpu_probes.finetune_rates(device, s["ft_size"], s["ft_batch"], s["ft_steps"])
    rep["goals_met"] = judge(rep)
    rep["load_average"] = [load0, _load_average()]
    rep["total_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=1))
    return rep


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when torch sees one")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (the default on CPU)")
    ap.add_argument("--tiny", action="store_true", help="smallest sizes and inputs (the CI test)")
    ap.add_argument("--backbones", default=",".join(BACKBONES), help="comma list; the summary judges goals on all")
    default_out = Path(os.environ["OUT"]) / "gpu.json" if os.environ.get("OUT") else ROOT / "benchmarks/out/gpu.json"
    ap.add_argument("--out", type=Path, default=default_out, help="JSON report (default: $OUT/gpu.json if OUT is set)")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device")
    only = [k.strip() for k in a.backbones.split(",") if k.strip()]
    if set(only) - set(BACKBONES) or (device == "cuda" and set(only) != set(BACKBONES)):
        ap.error(f"backbones: a subset of {', '.join(BACKBONES)} (all of them on cuda, where goals are judged)")
    size = "tiny" if a.tiny else "quick" if (a.quick or device == "cpu") else "full"
    if device == "cpu":
        torch.set_num_threads(1)  # two OpenMP threads on 2 shared cores can run several times slower
    rep = run(device, size, a.out, only)
    print(summary(rep))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
