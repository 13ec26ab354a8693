"""Feature-store read throughput against `np.memmap` over the same bytes, side by side.

Writes N synthetic 196x512 float16 grids into a store (shards of --shard-size) and the
same array into one raw file, then times, alternating the two readers in one run:
  sequential  batches of B consecutive rows, in store order
  shuffled    batches of B rows drawn from a random permutation (the trainer's pattern)
Both are measured warm (page cache), best of --rounds. Prints a table and writes JSON.

    python benchmarks/store.py [--posts 2000] [--batch 128] [--out benchmarks/out/store.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.core.specs import FeatureSpec
from pipeline.store import FeatureStore, StoreWriter

SHAPE = (196, 512)


def build(root: Path, n: int, shard_size: int) -> tuple[FeatureStore, np.memmap, list[str]]:
    rng = np.random.default_rng(0)
    ids = [f"p{i:07d}" for i in range(n)]
    raw = np.memmap(root / "raw.bin", dtype=np.float16, mode="w+", shape=(n, *SHAPE))
    spec = FeatureSpec("grid", SHAPE, "float16")
    with StoreWriter(root / "store", "bench-grid-00000000", "bench", spec, {}) as w:
        for s in range(0, n, shard_size):
            rows = rng.standard_normal((min(shard_size, n - s), *SHAPE), dtype=np.float32).astype(np.float16)
            raw[s : s + len(rows)] = rows
            w.write_shard(ids[s : s + len(rows)], rows, [""] * len(rows))
    raw.flush()
    return FeatureStore(root / "store"), np.memmap(root / "raw.bin", dtype=np.float16, mode="r", shape=(n, *SHAPE)), ids


def time_reads(fn, batches) -> float:
    t = time.perf_counter()
    total = 0
    for b in batches:
        total += fn(b).shape[0]
    return total / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "store.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, mm, ids = build(Path(tmp), a.posts, a.shard_size)
        pos = {p: i for i, p in enumerate(ids)}
        seq = [ids[i : i + a.batch] for i in range(0, len(ids), a.batch)]
        perm = np.random.default_rng(1).permutation(len(ids))
        shuf = [[ids[j] for j in perm[i : i + a.batch]] for i in range(0, len(ids), a.batch)]
        # The baseline gets its row indices precomputed: only its gather is timed.
        idx_seq = [slice(pos[b[0]], pos[b[-1]] + 1) for b in seq]
        idx_shuf = [np.array([pos[p] for p in b]) for b in shuf]
        results: dict[str, dict[str, float]] = {"sequential": {}, "shuffled": {}}
        for _ in range(a.rounds):  # alternate so machine noise hits both alike
            for pattern, store_batches, mm_batches in (("sequential", seq, idx_seq), ("shuffled", shuf, idx_shuf)):
                r_store = time_reads(store.read, store_batches)
                r_mm = time_reads(lambda i: np.array(mm[i]), mm_batches)  # a copy, as the store returns
                res = results[pattern]
                res["store_rows_s"] = max(res.get("store_rows_s", 0.0), r_store)
                res["memmap_rows_s"] = max(res.get("memmap_rows_s", 0.0), r_mm)
    row_mb = np.prod(SHAPE) * 2 / 1e6
    print(f"{a.posts} grids of {SHAPE[0]}x{SHAPE[1]} float16 ({a.posts * row_mb:.0f} MB), batch {a.batch}, best of {a.rounds}")
    print(f"{'pattern':<11} {'store rows/s':>13} {'memmap rows/s':>14} {'store MB/s':>11} {'ratio':>6}")
    for pattern, r in results.items():
        r["ratio"] = r["store_rows_s"] / r["memmap_rows_s"]
        print(f"{pattern:<11} {r['store_rows_s']:>13.0f} {r['memmap_rows_s']:>14.0f} {r['store_rows_s'] * row_mb:>11.0f} {r['ratio']:>6.2f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"posts": a.posts, "batch": a.batch, "shape": SHAPE, "dtype": "float16", **results}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
