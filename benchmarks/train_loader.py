"""UHAN training throughput fed from the feature store against tensors already in memory.

Writes N synthetic posts straight into two temporary stores with StoreWriter (196x512
float16 grids, 50 random token ids per post with random lengths, a few users), then
trains the same UHAN (same seed, same initial weights) with the shared trainer, rounds
alternating between:
  store          batches gathered from the stores' memory maps by the loader thread
  memory         the same batches indexed from tensors materialized in RAM (upper bound)
  store-inline   (with --inline) the store path with prefetch=0: what the thread buys
and reports training samples/s from the median step time over all rounds (evaluation
excluded; the first batch's wait included in its step) and the ratio store / memory
(goal >= 0.9). Prints a table and writes JSON.

    python benchmarks/train_loader.py [--posts 1000] [--steps 3] [--rounds 3] [--dim 512] [--inline]

The machine's load average is recorded: other processes on the cores slow every mode.
One torch thread by default: with two OpenMP threads on two cores that other processes
also use, a step can run several times slower and vary wildly (`--threads 0` for torch's
own choice on a quiet machine).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.head.base import HeadData
from pipeline.nn.layers import UserVocab
from heads.uhan import UHAN
from pipeline.core.specs import FeatureSpec
from pipeline.store import FeatureStore, StoreWriter
from pipeline.train.data import RunSettings
from pipeline.train.loop import Trainer

GRID = (196, 512)
L = 50


def build(root: Path, n: int, shard: int, users: int, vocab: int) -> HeadData:
    """Synthetic posts and their grid and token stores, written shard by shard (never all in RAM)."""
    rng = np.random.default_rng(0)
    ids = [f"p{i:07d}" for i in range(n)]
    gspec, tspec = FeatureSpec("grid", GRID, "float16"), FeatureSpec("tokens", (L,), "int32")
    with StoreWriter(root / "grid", "vgg16-pool5-448-bench000", "vgg16", gspec, {}) as gw, \
         StoreWriter(root / "tokens", "tokens-bench000", "tokens", tspec, {}) as tw:
        for s in range(0, n, shard):
            k = min(shard, n - s)
            grid = np.abs(rng.standard_normal((k, *GRID), dtype=np.float32)).astype(np.float16)  # post-ReLU-like
            lens = rng.integers(5, L + 1, k)
            tok = rng.integers(2, vocab, (k, L)).astype(np.int32)
            tok[np.arange(L)[None, :] >= lens[:, None]] = 0  # (k, L) trailing padding
            gw.write_shard(ids[s : s + k], grid, [""] * k)
            tw.write_shard(ids[s : s + k], tok, [""] * k)
    posts = pl.DataFrame({
        "post_id": ids,
        "user_id": [f"u{u}" for u in rng.integers(0, users, n)],
        "score": rng.normal(5.0, 2.0, n),
    })
    return HeadData(posts, {"visual": FeatureStore(root / "grid"), "text": FeatureStore(root / "tokens")})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="training batches per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inline", action="store_true", help="also time the store path without the loader thread")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: steady on cores other processes share; 0 = torch's choice)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "train_loader.json")
    a = ap.parse_args(argv)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data = build(Path(tmp), a.posts, a.shard_size, users=128, vocab=5000)
        built_s = time.perf_counter() - t0
        train, valid = data.subset(slice(0, a.posts - 32)), data.subset(slice(a.posts - 32, a.posts))
        head = UHAN(UHAN.Config(dim=a.dim, batch_size=a.batch, eval_every=10**9, max_steps=a.steps))
        head.settings = RunSettings(device=a.device, threads=a.threads or None)
        head.users = UserVocab.fit(train.posts["user_id"].to_list())
        head.meta = {"users": head.users.to_json(), "y_mean": float(train.y.mean())}
        head.prepare(train)
        sources = {"store": (head.source(train, True), head.settings)}
        t = time.perf_counter()
        sources["memory"] = (sources["store"][0].materialize(), head.settings)
        materialize_s = time.perf_counter() - t
        if a.inline:
            sources["store-inline"] = (sources["store"][0], dataclasses.replace(head.settings, prefetch=0))
        vsrc = head.source(valid, True)
        steps: dict[str, list[tuple[int, float]]] = {m: [] for m in sources}
        for _ in range(a.rounds):  # alternate so noise from other processes hits every mode alike
            for mode, (src, settings) in sources.items():
                torch.manual_seed(head.config.seed)
                model = head.build_model()  # same seed -> same initial weights in every mode
                Trainer(head.config, settings, on_step=lambda n, s, m=mode: steps[m].append((n, s))).fit(model, src, vsrc)
    # Median step time: robust to bursts of load from other processes on the same cores.
    rate = {m: float(np.median([n / s for n, s in v])) for m, v in steps.items()}
    out = {
        "posts": a.posts,
        "grid": list(GRID),
        "dtype": "float16",
        "batch": a.batch,
        "dim": a.dim,
        "steps": a.steps,
        "rounds": a.rounds,
        "device": str(Trainer(head.config, head.settings).device),
        "torch_threads": a.threads or torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "samples_per_s": rate,
        "step_seconds": {m: [round(s, 3) for _, s in v] for m, v in steps.items()},
        "ratio_store_vs_memory": rate["store"] / rate["memory"],
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "build_stores_s": round(built_s, 1),
        "materialize_s": round(materialize_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(f"UHAN dim {a.dim}, batch {a.batch}, {a.posts} posts of {GRID[0]}x{GRID[1]} float16 + {L} tokens, "
          f"{a.steps} steps x {a.rounds} alternating rounds (median step), device {out['device']}, {out['torch_threads']} torch threads, "
          f"load average {out['load_average'][0]} -> {out['load_average'][1]}")
    print(f"{'mode':<13} {'samples/s':>10} {'vs memory':>10}")
    for mode, v in rate.items():
        print(f"{mode:<13} {v:>10.1f} {v / rate['memory']:>10.3f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"ratio store/memory {out['ratio_store_vs_memory']:.3f}; total {out['total_s']} s; wrote {a.out}")


if __name__ == "__main__":
    main()
