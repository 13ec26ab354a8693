"""A tiny dataset for head/training tests: a posts table in the contract and small stores.

Planted signal: score = user base level + 1.5 * (mean of the post's visual grid channel 0)
+ 1.0 * (post has word id 7) + noise, so a head that reads users, images and text beats
one that reads fewer. Every 10th post has no image and no row in the visual stores.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.core import paths
from pipeline.core.specs import VOCAB_FILE, FeatureSpec
from pipeline.store import StoreWriter

GRID = "vgg16-pool5-64-aaaa1111"
FC = "vgg16-fc7-64-dddd4444"
TOKENS = "tokens-bbbb2222"
TEXTVEC = "minilm-cccc3333"
PIXELS = "pixels-16-eeee5555"
VISUAL_STORES = (GRID, FC, PIXELS)
TEXT_STORES = (TOKENS, TEXTVEC)


def make_posts(n: int = 80, n_users: int = 6, seed: int = 0, prefix: str = "p") -> tuple[pl.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    base = np.linspace(-1.5, 1.5, n_users)
    grid = rng.normal(0, 1, (n, 4, 16)).astype(np.float32)  # (N, regions, dim)
    tokens = rng.integers(2, 30, (n, 12)).astype(np.int32)
    lengths = rng.integers(3, 13, n)
    tokens[np.arange(12)[None, :] >= lengths[:, None]] = 0  # padding at the end
    has_word = rng.random(n) < 0.4
    tokens[:, 0] = np.where(has_word, 7, 8)
    has_image = np.arange(n) % 10 != 9
    signal = np.where(has_image, grid[:, :, 0].mean(axis=1), 0.0)
    score = 5 + base[users] + 1.5 * signal + 1.0 * has_word + rng.normal(0, 0.2, n)
    t0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    posts = pl.DataFrame({
        "post_id": [f"{prefix}{i:04d}" for i in range(n)],
        "user_id": [f"u{u}" for u in users],
        "posted_at": [t0 + timedelta(hours=int(h)) for h in rng.permutation(n)],
        "image": [f"/img/{prefix}{i}.jpg" if ok else None for i, ok in enumerate(has_image)],
        "title": ["w" * int(k) for k in lengths],
        "text": [""] * n,
        "tags": [["a"]] * n,
        "category": [None] * n, "subcategory": [None] * n, "concept": [None] * n,
        "score": score.astype(np.float64),
        "user_followers": (10 ** (users % 3 + 1)).astype(np.float64),
    }, schema_overrides={"posted_at": pl.Datetime("us", "UTC"), "category": pl.Utf8, "subcategory": pl.Utf8,
                         "concept": pl.Utf8, "image": pl.Utf8})
    textvec = np.column_stack([has_word, rng.normal(0, 1, (n, 7))]).astype(np.float32)
    return posts, {"grid": grid, "tokens": tokens, "textvec": textvec, "has_image": has_image}


def write_store(cache: Path, dataset: str, eid: str, spec: FeatureSpec, ids: list[str], rows: np.ndarray) -> None:
    d = paths.features_dir(dataset, cache) / eid
    with StoreWriter(d, eid, eid.split("-")[0], spec, {"test": eid}) as w:
        if ids:
            w.write_shard(ids, rows, ["x"] * len(ids))
        if spec.kind == "tokens":  # a vocabulary, as every tokens store has (ids 2..31: words w2..w31)
            w.save_artifact(VOCAB_FILE, json.dumps({"words": [f"w{i}" for i in range(2, 32)], "dropped": []}).encode())


def make_dataset(cache: Path, name: str = "tiny", n: int = 80, seed: int = 0, stores: tuple[str, ...] | None = None,
                 prefix: str = "p") -> pl.DataFrame:
    """Write `<cache>/<name>/posts.parquet` and the stores (default: all four); returns the posts."""
    posts, f = make_posts(n, seed=seed, prefix=prefix)
    p = paths.posts_path(name, cache)
    p.parent.mkdir(parents=True, exist_ok=True)
    posts.write_parquet(p)
    ids = posts["post_id"].to_list()
    img = [i for i, ok in zip(ids, f["has_image"]) if ok]
    sel = f["has_image"]
    all_stores = {
        GRID: (FeatureSpec("grid", (4, 16), "float16"), img, f["grid"][sel].astype(np.float16)),
        FC: (FeatureSpec("vector", (16,), "float32"), img, f["grid"][sel].mean(axis=1)),
        TOKENS: (FeatureSpec("tokens", (12,), "int32"), ids, f["tokens"]),
        TEXTVEC: (FeatureSpec("vector", (8,), "float32"), ids, f["textvec"]),
        PIXELS: (FeatureSpec("pixels", (3, 16, 16), "uint8"), img,  # the grid's channel 0 as brightness
                 np.clip(128 + 60 * f["grid"][sel][:, :, :1].mean(1, keepdims=True)[..., None], 0, 255)
                 .repeat(3, 1).repeat(16, 2).repeat(16, 3).astype(np.uint8)),
    }
    for eid in stores if stores is not None else all_stores:
        spec, sids, rows = all_stores[eid]
        write_store(cache, name, eid, spec, sids, rows)
    return posts


def split_parts(cache: Path, n: int, seed: int, visual: str, text: str) -> dict:
    """A tiny dataset's default chronological split as HeadData parts, with two stores."""
    from heads import HeadData
    from pipeline.data.splits import assign_split, parse_split
    from pipeline.store import open_store

    split = assign_split(make_dataset(cache, n=n, seed=seed), parse_split(None))
    stores = {"visual": open_store("tiny", visual, cache), "text": open_store("tiny", text, cache)}
    return {p: HeadData(split.filter(pl.col("split") == p).drop("split"), stores) for p in ("train", "valid", "test")}


def fake_run(runs: Path, name: str, *, dataset: str = "a", head: str = "svr", task: str = "regression",
             target: str = "score", transform: str | None = None, test: dict | None = None,
             split: tuple = (0.7, 0.1, 0.2), std: dict | None = None, repeats: int = 1,
             per_seed: dict[int, dict] | None = None, log_only: bool = False) -> Path:
    """A finished run folder written by hand (config.json + metrics.json): evaluate and report
    read only these. `per_seed` (seed -> test metrics) writes each repeat as `pipe train` does:
    a `repeat_end` event in train_log.jsonl and, unless `log_only`, in metrics.json's `repeats`;
    the means and stds are then those of the seeds."""
    d = runs / name
    d.mkdir(parents=True)
    described = {"name": task, "target": target}
    if transform:
        described["transform"] = {"kind": transform, "scale": 10.0}
    kept = [{"repeat": k} for k in range(repeats)]
    if per_seed:
        ends = [{"repeat": k, "seed": s, "valid": t, "test": t} for k, (s, t) in enumerate(per_seed.items())]
        with open(d / "train_log.jsonl", "w") as f:
            f.writelines(json.dumps({"event": "repeat_end", **e}) + "\n" for e in ends)
        kept = [{"repeat": e["repeat"]} for e in ends] if log_only else ends
        vals = {k: np.array([t[k] for t in per_seed.values()]) for k in next(iter(per_seed.values()))}
        test = {k: float(v.mean()) for k, v in vals.items()}
        std = {k: float(v.std(ddof=1)) if v.size > 1 else None for k, v in vals.items()}
    (d / "config.json").write_text(json.dumps({"head": head, "dataset": dataset, "task": described, "ablate": [],
                                               "stores": {}, "split": {"kind": "chrono", "fractions": list(split)},
                                               "seeds": list(per_seed or range(repeats))}))
    (d / "metrics.json").write_text(json.dumps({"valid": test, "test": test, "std": {"valid": std, "test": std},
                                                "repeats": kept}))
    return d
