"""End to end from pixels, CPU-sized: the hybrid CNN against its paper's baselines, frozen vs
fine-tuned UHAN, and the fine-tuning loop's images/s against a bare forward+backward.

A planted `pipe synth` dataset (default 400 posts at 32 px, random weights: no download)
with an engagement count `retweets` = round(3 (2^score - 1)), so the planted image and
user signals drive the count. synth's image signal is user-conditional (a user's lucky
object), which the hybrid CNN cannot use: it has no user input. So a second count,
`likes` = round(3 (2^(1 + 1.5 [the most common object is shown] + N(0, 0.3)) - 1)), plants
a signal every user shares, and the hybrid CNN is compared with its no-image ablation on
both. All runs use the default chronological 70/10/20 split.

- retweets, `--target-transform max` (the paper's): hybrid_cnn at its data-aware defaults,
  at the paper's exact settings (`regime=paper`), and `--ablate visual`; the paper's SVR
  baselines: `svr` on inception_v3 pooled vectors and on binary bag of words, each with
  followers and days online added linearly (`--ablate user --set context=user_followers,days`).
  GloVe needs a word-vector file (no download here) and is left out.
- score: uhan on frozen random-weight VGG16 pool5 vs `--finetune vgg16` (last block).
- throughput: fine-tuning's training samples/s (head + backbone, images decoded in
  DataLoader workers) vs a bare forward+backward of the same backbone, same trainable
  blocks and batch, on in-memory tensors.

    python benchmarks/finetune.py [--posts 400] [--image-size 32] [--steps 60] [--out benchmarks/out/finetune.json]

CPU only here; on a GPU add `--device cuda --image-size 224` (the paper's 64 px for the
hybrid CNN comes from its own `pixels` store size, `--pixels 64`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

import heads
from pipeline import api
from pipeline.data.synth import synth
from extractors import build_network
from pipeline.run.finetune import FinetuneModel


def dataset(root: Path, posts: int, size: int, pixels: int) -> Path:
    table = synth(root / "synth", posts, image_size=max(size, 75), seed=0)
    truth = pl.read_parquet(table.parent / "truth.parquet").select("post_id", "shown_object")
    lucky = truth["shown_object"].value_counts().sort("count", descending=True)["shown_object"][0]
    noise = pl.Series(np.random.default_rng(0).normal(0, 0.3, truth.height))
    likes = ((2 ** (1 + 1.5 * (truth["shown_object"] == lucky).cast(pl.Float64) + noise) - 1) * 3).round(0)
    (pl.read_parquet(table).join(truth.with_columns(likes=likes).select("post_id", "likes"), on="post_id")
     .with_columns(retweets=(pl.col("views") / pl.col("days") * 3).round(0)).write_parquet(table))
    cache = root / "cache"
    api.ingest(table, "bench", cache=cache)
    run = {"quiet": True, "num_workers": 1, "cache": cache}
    api.extract("bench", "pixels", image_size=pixels, **run)
    api.extract("bench", "tokens", **run)
    api.extract("bench", "vgg16", image_size=size, weights="random", **run)
    api.extract("bench", "inception_v3", image_size=75, weights="random", **run)  # its smallest input
    api.extract("bench", "bow", binary=True, min_df=3, **run)  # the paper: words with > 100 occurrences in 33K tweets
    return cache


def train(cache: Path, runs: Path, label: str, head: str, steps: int, **kw) -> dict:
    fields = {f.name for f in dataclasses.fields(heads.get(head).Config)}
    sets = {k: v for k, v in {"max_steps": steps, "eval_every": max(steps // 6, 1), "batch_size": 32}.items()
            if k in fields}
    sets.update(threads=1, **kw.pop("config", {}))
    t0 = time.perf_counter()
    r = api.train("bench", head, config=sets, name=label, runs=runs, cache=cache, **kw)
    info = json.loads((r.dir / "model" / "head.json").read_text()).get("train", {}) \
        if (r.dir / "model" / "head.json").exists() else {}
    test = r.metrics["test"]
    return {"run": label, "head": head, "seconds": round(time.perf_counter() - t0, 1),
            "samples_per_s": info.get("samples_per_s"), "best_step": info.get("best_step"),
            **{k: round(v, 4) if v is not None else None for k, v in test.items()}}


def bare_images_per_s(size: int, batch: int, trainable: int, rounds: int = 5) -> float:
    """Forward+backward of the backbone alone (same trainable blocks) on one in-memory batch."""
    net = build_network("vgg16", {"layer": "pool5", "image_size": size, "weights": "random", "seed": 0})
    model = FinetuneModel(net, torch.nn.Identity(), "x", trainable, "cpu").train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, 256, (batch, 3, size, size)).float()
    times = []
    for _ in range(rounds + 1):
        t = time.perf_counter()
        opt.zero_grad()
        model.features(x)[0].square().mean().backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch / sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=int, default=400)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--pixels", type=int, default=32, help="the hybrid CNN's input side (paper: 64)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/finetune.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pipe-bench-ft-") as tmp:
        root = Path(tmp)
        cache = dataset(root, a.posts, a.image_size, a.pixels)
        runs, n = root / "runs", a.steps
        count = {"target": "retweets", "target_transform": "max"}
        paper_svr = {"config": {"context": "user_followers,days"}}
        rows = [
            train(cache, runs, "hybrid_cnn", "hybrid_cnn", n, **count),
            train(cache, runs, "hybrid_cnn-paper", "hybrid_cnn", n, **count, config={"regime": "paper"}),
            train(cache, runs, "hybrid_cnn-no-visual", "hybrid_cnn", n, **count, ablate="visual"),
            train(cache, runs, "hybrid_cnn-likes", "hybrid_cnn", n, target="likes", target_transform="max"),
            train(cache, runs, "hybrid_cnn-likes-no-visual", "hybrid_cnn", n, target="likes", target_transform="max",
                  ablate="visual"),
            train(cache, runs, "inception-svr", "svr", n, **count, visual="inception_v3", ablate=["text", "user"],
                  **paper_svr),
            train(cache, runs, "bow-svr", "svr", n, **count, text="bow", ablate=["visual", "user"], **paper_svr),
            train(cache, runs, "uhan-frozen", "uhan", n, visual="vgg16-pool5"),
            train(cache, runs, "uhan-finetuned", "uhan", n, finetune="vgg16", weights="random",
                  image_size=a.image_size, config={"finetune_workers": 1}),
        ]
    ft = rows[-1]
    bare = bare_images_per_s(a.image_size, 32, 1)
    out = {"posts": a.posts, "image_size": a.image_size, "pixels": a.pixels, "steps": n, "device": "cpu",
           "runs": rows, "throughput": {"finetune_samples_per_s": ft["samples_per_s"], "bare_fwd_bwd_images_per_s":
                                        round(bare, 1), "ratio": round(ft["samples_per_s"] / bare, 3)
                                        if ft["samples_per_s"] else None}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    for r in rows:
        print(f"{r['run']:22s} mse {r['mse']:.4f} medae {r['medae']:.4f} src {r['src']} "
              f"({r['seconds']} s{', best step ' + str(r['best_step']) if r['best_step'] is not None else ''})")
    print(json.dumps(out["throughput"]))


if __name__ == "__main__":
    main()
