"""Wall time and peak memory per stage as the dataset grows (issue 21), with each stage's
previous implementation (`old`, the Python loops kept in tests/test_scale_equality.py) and a
plain-library baseline (`baseline`: polars group-by / window expressions) on the same data.

Synthetic posts (authors ~ N/40, users ~ N/10 following 10 authors each, one retweet event
per post, labels, tags) at 10K / 40K / 160K posts (486K with --full); no image extraction.
Every (stage, variant, size) runs in its own subprocess, so its peak RSS (ru_maxrss) is
its own; `setup_mb` is the RSS after building the inputs, `peak_mb` the high-water mark
(which counts the pages of the stores' memory maps the stage touched), `peak_anon_mb` the
largest RssAnon sampled every 10 ms during the stage (the process's own memory).
Prints a table (seconds, peak MiB, ratios old/new and baseline/new, the growth exponent of
each variant fitted over the sizes, between the two largest and between 40K and 160K) and
writes JSON. The old loops and the baselines run up to a size per stage (LightGBM's: 160K).

    python benchmarks/scale.py [--sizes 10000 40000 160000] [--full] [--stages ranking windows ...]
                               [--best-of 1] [--out benchmarks/out/scale.json]

The end-to-end stages (ingest, tokens, tfidf, a torch head per task: DMF's epoch, AMNL's and
DMAN's fixed steps with their data preparation and predictions; score, evaluate, report:
benchmarks/_scale_pipeline.py) run through the API `pipe` calls, on a world built once per size
in its own process (so its building is not in a stage's peak); by default at 10K and 40K
posts only (--full: every size), so the default run stays around ten minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package and the reference loops of tests/
sys.path.insert(0, str(ROOT / "benchmarks"))

import _scale_pipeline as e2e  # noqa: E402


def posts_and_side(n: int, seed: int = 0) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    rng = np.random.default_rng(seed)
    n_auth, n_users = max(20, n // 40), max(40, n // 10)
    t0 = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    at = t0 + rng.integers(0, 365 * 86400 * 10**6, n)
    y = rng.normal(size=n)
    y[rng.random(n) < 0.3] = np.nan  # unlabelled (valid / test) posts
    posts = pl.DataFrame({"post_id": [f"p{i}" for i in range(n)], "user_id": [f"u{a}" for a in rng.integers(0, n_auth, n)],
                          "posted_at": pl.Series(at).cast(pl.Datetime("us", "UTC")), "score": y})
    fu = np.repeat(np.arange(n_users), 10)
    follows = pl.DataFrame({"user_id": [f"u{u}" for u in fu],
                            "followee_id": [f"u{a}" for a in rng.integers(0, n_auth, len(fu))]}).unique(maintain_order=True)
    ep = rng.integers(0, n, n)
    inter = pl.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, n_users, n)], "post_id": [f"p{i}" for i in ep],
                          "at": pl.Series(at[ep] + rng.integers(3600 * 10**6, 48 * 3600 * 10**6, n)).cast(
                              pl.Datetime("us", "UTC"))})
    return posts, {"follows": follows, "interactions": inter}


def label_matrix(n: int, n_labels: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, n_labels + 1)
    m = np.zeros((n, n_labels), np.float32)
    for _ in range(3):  # 3 Zipf-distributed labels a post
        m[np.arange(n), rng.choice(n_labels, n, p=p / p.sum())] = 1
    return m


# -- stages: setup(n) -> inputs; each variant(inputs) runs once, timed --------------------

def _history(n):
    from pipeline.train.data import History

    posts, _ = posts_and_side(n)
    return History(posts.sort("posted_at", "post_id"), {})


def _windows(h, which):
    from pipeline.train.windows import window_index
    from tests.test_scale_equality import _old_window_index

    ids = h.posts["post_id"].to_list()
    if which == "baseline":  # the previous 5 rows of the user as a polars window expression
        return h.posts.with_row_index("i").select(
            *(pl.col("i").shift(k).over("user_id").alias(f"w{k}") for k in range(5)))
    return (window_index if which == "new" else _old_window_index)(h, ids, 5, "user")


def _user_history(h, which):
    from pipeline.train.windows import user_history
    from tests.test_scale_equality import _old_user_history

    if which == "baseline":  # the mean of the user's last 5 labels before the post, polars rolling
        lab = h.posts.with_row_index("i").filter(pl.col("score").is_not_nan())
        return lab.with_columns(m=pl.col("score").shift(1).rolling_mean(5, min_samples=1).over("user_id"))
    return (user_history if which == "new" else _old_user_history)(h, h.posts["post_id"].to_list(), 5, "score")


def _ranking(inputs, which):
    from pipeline.data.splits import parse_split
    from pipeline.train import tasks
    from tests.test_scale_equality import _old_ranking_examples

    posts, side = inputs
    if which == "old":
        return _old_ranking_examples(posts, side, parse_split(None), 2, 2, 0)
    return tasks.get("ranking")().prepare(posts, side, parse_split(None), {}).files["candidates"]


def _links(labels, which):
    from heads.dman import sample_links
    from tests.test_scale_equality import _old_sample_links

    return (sample_links if which == "new" else _old_sample_links)(labels, 50, 0)


def _tag_distance(conf, which):
    from pipeline.train.tasks.embedding import tag_query_distance

    q = list(range(10))
    if which == "old":
        onehot = np.zeros((len(q), conf.shape[1]))
        onehot[np.arange(len(q)), q] = 1.0
        return np.linalg.norm(onehot[:, None, :] - conf[None, :, :], axis=2)
    return tag_query_distance(conf, q)


def _fc7_setup(n):
    rows = n // 8
    path = Path(tempfile.mkdtemp()) / "fc7.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 4096))
    for s in range(0, rows, 4096):
        mm[s:s + 4096] = np.random.default_rng(s).random((min(4096, rows - s), 4096), dtype=np.float32)
    mm.flush()
    x = np.load(path, mmap_mode="r")
    return lambda ids: x[np.array([int(p[1:]) for p in ids], np.int64)], [f"p{i}" for i in range(rows)]


def _fc7(inputs, which):
    from heads.amnl import column_stats

    read, ids = inputs
    if which == "old":
        x = read(ids).astype(np.float64)
        return x.mean(0), x.std(0)
    return column_stats(read, ids)


def _embedding_setup(n):
    from pipeline.train.data import HeadData
    from pipeline.train.tasks.embedding import EmbeddingOutput

    rows, rng = n // 4, np.random.default_rng(0)
    posts = pl.DataFrame({"post_id": [f"p{i}" for i in range(rows)], "labels": [["a"]] * rows})
    out = EmbeddingOutput(rng.random((rows, 1000), dtype=np.float32), [f"l{i}" for i in range(50)],
                          rng.random((rows, 50), dtype=np.float32))
    return HeadData(posts), out


def _embedding_predictions(inputs, which):
    """predictions.parquet of an embedding run: new streams the task's chunks to the file;
    whole builds the part's frame and its Parquet bytes in memory (before this stage was
    chunked); old adds the embedding column as Python floats (before issue 21)."""
    from pipeline.core.io import atomic_write_bytes, atomic_write_parquet, parquet_bytes
    from pipeline.train import tasks

    data, out = inputs
    path, task = Path(tempfile.mkdtemp()) / "predictions.parquet", tasks.get("embedding")()
    if which == "new":
        return atomic_write_parquet(path, task.prediction_chunks(data, out, "test"))
    if which == "old":
        df = pl.DataFrame({"post_id": data.ids, "embedding": out.vectors.astype(np.float32).tolist()})
    else:
        df = task.predictions(data, out, "test")
    atomic_write_bytes(path, parquet_bytes(df))


def _hisave(h, which):
    from heads.hisave import HisAve
    from pipeline.train.data import HeadData

    train = h.posts.filter(pl.col("score").is_not_nan())
    if which == "baseline":
        m = train.group_by("user_id").agg(pl.col("score").mean())
        return h.posts.select("user_id").join(m, on="user_id", how="left")
    return HisAve().fit(HeadData(train), HeadData(train)).predict(HeadData(h.posts))


LGB_TEXT, LGB_VISUAL = 2000, 512  # tfidf's default vocabulary; a pooled visual vector


def _lightgbm_setup(n):
    """Train / valid HeadData over a tfidf-like text store (2000-d, ~20 non-zeros a row) and a
    512-d float16 visual store, written once per size through the project's writer and reused."""
    from pipeline.core.specs import FeatureSpec
    from pipeline.store import FeatureStore, StoreWriter
    from pipeline.train.data import HeadData

    posts, _ = posts_and_side(n)
    posts = posts.filter(pl.col("score").is_not_nan()).sort("posted_at", "post_id").with_columns(
        user_followers=pl.col("user_id").str.slice(1).cast(pl.Float64) * 7 + 1)
    ids = posts["post_id"].to_list()
    root = Path(tempfile.gettempdir()) / f"pipe-scale-lightgbm-{n}"
    dirs = {"text": root / "tfidf", "visual": root / "visual"}
    if not (root / "done").exists():
        for role, (spec, dtype) in {"text": (FeatureSpec("vector", (LGB_TEXT,), "float32"), np.float32),
                                    "visual": (FeatureSpec("vector", (LGB_VISUAL,), "float16"), np.float16)}.items():
            with StoreWriter(dirs[role], role, role, spec, {"bench": role}) as w:
                for s in range(0, len(ids), 16384):
                    k, rng = len(ids[s:s + 16384]), np.random.default_rng(s)
                    if role == "text":
                        rows = np.zeros((k, LGB_TEXT), np.float32)
                        rows[np.arange(k).repeat(20), rng.zipf(1.3, 20 * k) % LGB_TEXT] = rng.random(20 * k)
                        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)
                    else:
                        rows = rng.random((k, LGB_VISUAL), dtype=np.float32)
                    w.write_shard(ids[s:s + 16384], rows.astype(dtype), ["x"] * k)
        (root / "done").touch()
    stores = {role: FeatureStore(d) for role, d in dirs.items()}
    cut = int(len(ids) * 0.8)
    return HeadData(posts[:cut], stores), HeadData(posts[cut:], stores)


LGB_ROUNDS = 10  # fixed boosting rounds (no early stop): the table and the Dataset are what grows


def _lightgbm(inputs, which):
    """new: the head's fit (its Dataset read from the stores in batches through lgb.Sequence).
    old: the head's fit before (its whole float32 table, then LGBMRegressor). baseline: the
    same rows read whole into one float32 matrix with numpy, then `lightgbm.train` with the
    head's parameters."""
    import lightgbm as lgb
    from heads.lightgbm import LightGBMHead
    from tests.test_scale_equality import _old_lightgbm_fit

    train, valid = inputs
    cfg = LightGBMHead.Config(n_estimators=LGB_ROUNDS, early_stopping_rounds=LGB_ROUNDS, n_jobs=2)
    if which == "new":
        return LightGBMHead(cfg).fit(train, valid)
    if which == "old":
        return _old_lightgbm_fit(LightGBMHead(cfg), train, valid)
    params = {k: v for k, v in LightGBMHead(cfg)._params().items() if k != "n_estimators"}
    sets = []
    for d in (train, valid):
        x = np.empty((len(d), LGB_VISUAL + LGB_TEXT), np.float32)
        x[:, :LGB_VISUAL] = d.stores["visual"].read(d.ids)
        x[:, LGB_VISUAL:] = d.stores["text"].read(d.ids)
        sets.append(lgb.Dataset(x, d.y, reference=sets[0] if sets else None))
    return lgb.train({**params, "objective": "regression"}, sets[0], LGB_ROUNDS, valid_sets=[sets[1]])


STAGES = {  # name: (setup, run, variants, largest size the old loop and the baseline are run at)
    "ranking": (posts_and_side, _ranking, ("new", "old"), 160_000),
    "windows": (_history, _windows, ("new", "old", "baseline"), 486_000),
    "user_history": (_history, _user_history, ("new", "old", "baseline"), 486_000),
    "links": (label_matrix, _links, ("new", "old"), 10_000),
    "tag_distance": (lambda n: np.random.default_rng(0).random((n // 40, 1000), dtype=np.float32), _tag_distance,
                     ("new", "old"), 160_000),
    "fc7_stats": (_fc7_setup, _fc7, ("new", "old"), 160_000),
    "embedding_predictions": (_embedding_setup, _embedding_predictions, ("new", "whole", "old"), 40_000),
    "hisave": (_history, _hisave, ("new", "baseline"), 486_000),
    "lightgbm": (_lightgbm_setup, _lightgbm, ("new", "old", "baseline"), 160_000),  # old at 486K: 12 GB, 9 min
    **{name: (lambda n, name=name: e2e.setup(n, name), lambda w, _, name=name: e2e.run(w, name), ("new",), 0)
       for name in e2e.STAGES},
}
DEFAULT_MAX = {name: 40_000 for name in e2e.STAGES}  # largest size of a stage without --full


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _anon_mb() -> float:
    """The process's own memory (RssAnon): RSS less the file pages it maps (the stores' memory
    maps, which the kernel may drop at any time and which ru_maxrss also counts)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024


def _watch_anon(peak: dict) -> None:
    """Samples RssAnon every 10 ms into peak["anon"] (a spike shorter than that can be missed)."""
    def loop() -> None:
        while True:
            peak["anon"] = max(peak["anon"], _anon_mb())
            time.sleep(0.01)
    threading.Thread(target=loop, daemon=True).start()


def one(stage: str, variant: str, n: int) -> dict:
    setup, run, _, _ = STAGES[stage]
    run(setup(1000), variant)  # the imports, before timing (a tiny input: not the peak)
    inputs = setup(n)
    before, peak = _rss_mb(), {"anon": _anon_mb()}
    _watch_anon(peak)
    t = time.perf_counter()
    run(inputs, variant)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "setup_mb": before, "peak_mb": _rss_mb(), "peak_anon_mb": max(peak["anon"], _anon_mb())}


def exponent(ns: list[int], ts: list[float]) -> float | None:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) > 1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    ap.add_argument("--full", action="store_true", help="add SMPD's size, 486K posts")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/scale.json")
    ap.add_argument("--best-of", type=int, default=1, help="runs per (stage, variant, size); the fastest is kept")
    ap.add_argument("--one", nargs=3, metavar=("STAGE", "VARIANT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], int(a.one[2]))))
        return
    if a.world:
        e2e.world(a.world)
        return
    sizes = sorted(set(a.sizes + ([486_000] if a.full else [])))
    result: dict = {"sizes": sizes, "load_average_before": os.getloadavg(), "stages": {}}
    for stage in a.stages:
        _, _, variants, old_max = STAGES[stage]
        largest = float("inf") if a.full else DEFAULT_MAX.get(stage, float("inf"))
        if stage in e2e.STAGES:  # the world of each size (and of the warm-up's 1000) built in a process of its own
            for n in [1000] + [n for n in sizes if n <= largest]:
                subprocess.run([sys.executable, __file__, "--world", str(n)], check=True)
        rows: dict = {}
        for v in variants:
            rows[v] = {}
            for n in sizes:
                if (v != "new" and n > old_max) or n > largest:
                    continue
                tries = []
                for _ in range(a.best_of):
                    p = subprocess.run([sys.executable, __file__, "--one", stage, v, str(n)], capture_output=True,
                                       text=True)
                    if p.returncode:
                        tries = [{"error": p.stderr.strip().splitlines()[-1:]}]
                        break
                    tries.append(json.loads(p.stdout.strip().splitlines()[-1]))
                rows[v][n] = min(tries, key=lambda r: r.get("seconds", 0.0))  # the fastest: the least disturbed
                print(stage, v, n, rows[v][n], flush=True)
        ok = {v: {n: r for n, r in rows[v].items() if "seconds" in r} for v in rows}
        fit = {v: {"all": exponent(list(r), [x["seconds"] for x in r.values()]),
                   "last_two": exponent(list(r)[-2:], [x["seconds"] for x in list(r.values())[-2:]]),
                   "40K-160K": exponent([40_000, 160_000], [r[40_000]["seconds"], r[160_000]["seconds"]])
                   if 40_000 in r and 160_000 in r else None}  # the bar: <= 1.15
               for v, r in ok.items()}
        ratios = {f"{v}/new": {n: ok[v][n]["seconds"] / ok["new"][n]["seconds"] for n in ok[v] if n in ok["new"]}
                  for v in ok if v != "new"}
        result["stages"][stage] = {"runs": rows, "exponent": fit, "ratios": ratios}
    result["load_average_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{'stage':22} {'variant':9} " + " ".join(f"{n // 1000:>5}K s / MiB / anon " for n in sizes)
          + " exp(all, last2, 40K-160K)")
    for stage, r in result["stages"].items():
        for v, runs in r["runs"].items():
            cells = " ".join(f"{runs[n]['seconds']:7.2f} /{runs[n]['peak_mb']:6.0f} /{runs[n]['peak_anon_mb']:5.0f}"
                             if "seconds" in runs.get(n, {}) else f"{'-':>21}" for n in sizes)
            e = r["exponent"][v]
            print(f"{stage:22} {v:9} {cells}  " + " ".join(f"{e[k] or float('nan'):.2f}" for k in ("all", "last_two", "40K-160K")))
    print(f"\nload average before {result['load_average_before']}, after {result['load_average_after']}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
