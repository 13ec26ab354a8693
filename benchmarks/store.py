"""Feature-store read throughput against `np.memmap` over the same bytes, side by side (issue 21:
`FeatureStore.read` at >= 0.9 of np.memmap).

For each row shape (a 196x512 float16 grid, a 2000-d float32 tfidf-like vector, a 512-d
float16 vector) it writes N rows into a store (shards of --shard-size posts, as `pipe
extract` does) and the same array into one raw file, then times, alternating the readers in
one run so machine noise hits them alike:
  sequential  batches of B consecutive rows, in store order
  shuffled    batches of B rows drawn from a random permutation (the trainer's pattern)
  random      N/4 random distinct rows in one read, in random order
  ranges      ranges of R consecutive rows at random starts
Readers: `store` (FeatureStore.read, ids in), `rows` (FeatureStore.read_rows, store rows
located beforehand, as iter_batches does), `old` (the read before issue 21, kept in
tests/test_scale_equality.py) and `memmap` (row indices precomputed, one copy: `mm[idx]`
for a gather, `np.array(mm[a:b])` for a range: only numpy's copy is timed). Warm (page
cache), best of --rounds. Prints a table with the store/memmap ratio and writes JSON.

    python benchmarks/store.py [--posts 2000] [--batch 128] [--out benchmarks/out/store.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package and the old read of tests/

from pipeline.core.specs import FeatureSpec  # noqa: E402
from pipeline.store import FeatureStore, StoreWriter  # noqa: E402
from tests.test_scale_equality import _old_store_read  # noqa: E402

SHAPES = {  # name: (row shape, dtype, posts per --posts unit)
    "grid": ((196, 512), np.float16, 1),
    "tfidf": ((2000,), np.float32, 10),
    "vector": ((512,), np.float16, 10),
}


def build(root: Path, shape: tuple, dtype, n: int, shard_size: int) -> tuple[FeatureStore, np.memmap, list[str]]:
    rng = np.random.default_rng(0)
    ids = [f"p{i:07d}" for i in range(n)]
    raw = np.memmap(root / "raw.bin", dtype=dtype, mode="w+", shape=(n, *shape))
    spec = FeatureSpec("grid" if len(shape) == 2 else "vector", shape, np.dtype(dtype).name)
    with StoreWriter(root / "store", "bench-00000000", "bench", spec, {}) as w:
        for s in range(0, n, shard_size):
            rows = rng.standard_normal((min(shard_size, n - s), *shape), dtype=np.float32).astype(dtype)
            raw[s : s + len(rows)] = rows
            w.write_shard(ids[s : s + len(rows)], rows, [""] * len(rows))
    raw.flush()
    return FeatureStore(root / "store"), np.memmap(root / "raw.bin", dtype=dtype, mode="r", shape=(n, *shape)), ids


def rows_per_s(fn, batches) -> float:
    t = time.perf_counter()
    total = 0
    for b in batches:
        total += fn(b).shape[0]
    return total / (time.perf_counter() - t)


def patterns(ids: list[str], batch: int, span: int) -> dict[str, tuple[list, list]]:
    """pattern -> (id batches for the store, index batches for the memmap)."""
    n, rng = len(ids), np.random.default_rng(1)
    perm = rng.permutation(n)
    starts = rng.integers(0, n - span, max(1, n // span))
    out = {
        "sequential": [np.arange(i, min(i + batch, n)) for i in range(0, n, batch)],
        "shuffled": [perm[i : i + batch] for i in range(0, n, batch)],
        "random": [rng.choice(n, n // 4, replace=False)],
        "ranges": [np.arange(s, s + span) for s in starts],
    }
    return {k: ([[ids[j] for j in b] for b in v], [slice(int(b[0]), int(b[-1]) + 1) if k in ("sequential", "ranges")
                                                  else b for b in v]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=2000, help="grid rows; the vector shapes get 10x as many")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--span", type=int, default=1000, help="rows per contiguous range")
    ap.add_argument("--shard-size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "store.json")
    a = ap.parse_args()
    results: dict = {}
    for name in a.shapes:
        shape, dtype, unit = SHAPES[name]
        with tempfile.TemporaryDirectory() as tmp:
            store, mm, ids = build(Path(tmp), shape, dtype, a.posts * unit, a.shard_size)
            readers = {
                "store": lambda b, _: store.read(b[0]),
                "rows": lambda b, _: store.read_rows(b[1]),
                "old": lambda b, _: _old_store_read(store, b[0]),
                "memmap": lambda _, i: np.array(mm[i]) if isinstance(i, slice) else mm[i],  # one copy either way
            }
            for pattern, (id_batches, idx_batches) in patterns(ids, a.batch, a.span).items():
                res = results.setdefault(name, {}).setdefault(pattern, {})
                pairs = [((b, store.locate(b)), i) for b, i in zip(id_batches, idx_batches)]
                for _ in range(a.rounds):
                    for reader, fn in readers.items():
                        r = rows_per_s(lambda p: fn(*p), pairs)
                        res[reader] = max(res.get(reader, 0.0), r)
                for reader in ("store", "rows", "old"):
                    res[f"{reader}/memmap"] = res[reader] / res["memmap"]
        row_kb = np.prod(shape) * np.dtype(dtype).itemsize / 1024
        results[name]["rows"], results[name]["row_kb"] = a.posts * unit, row_kb
    load = os.getloadavg()
    print(f"batch {a.batch}, ranges of {a.span}, shards of {a.shard_size}, best of {a.rounds}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'shape':<7} {'rows':>6} {'pattern':<11} {'memmap rows/s':>14} {'store/mm':>9} {'rows/mm':>8} {'old/mm':>7}")
    for name, r in results.items():
        for pattern in ("sequential", "shuffled", "random", "ranges"):
            x = r[pattern]
            print(f"{name:<7} {r['rows']:>6} {pattern:<11} {x['memmap']:>14.0f} {x['store/memmap']:>9.2f} "
                  f"{x['rows/memmap']:>8.2f} {x['old/memmap']:>7.2f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"batch": a.batch, "span": a.span, "shard_size": a.shard_size, "load_average": load,
                                 "results": results}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
