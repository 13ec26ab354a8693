"""Synth data for the end-to-end tests: a `syn` dataset with extracted stores, which `pipe score`
rescores (score consistency, fine-tuning), and tiny trained runs for the commands that read runs
(score, explain, rank)."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline import api
from pipeline.core.config import parse_sets
from pipeline.data.ingest import ingest
from pipeline.data.synth import synth
from pipeline.extract import build_extractor, run_extract
from pipeline.run.train import TrainOptions, train

SIZE = 32  # pixels: vgg16 pool5 gives a 1 x 512 grid; the hybrid CNN a 64 x 8 x 8 map
EXTRACT = dict(quiet=True, num_workers=0, device="cpu")
TINY = ["max_steps=6", "eval_every=3", "batch_size=16", "dim=16", "device=cpu"]  # torch heads in seconds


def make(root: Path, posts: int = 100, seed: int = 0, bad: int = 0) -> Path:
    """Synth posts (with `retweets`, and `bad` images overwritten with garbage) ingested as `syn` under root/cache."""
    table = synth(root / "synth", posts, image_size=SIZE, seed=seed)  # the posts file
    out = table.parent
    df = pl.read_parquet(table).with_columns(retweets=(pl.col("views") / pl.col("days") * 3).round(0))
    df.write_parquet(table)
    for rel in df["image"].head(bad).to_list():
        (out / rel).write_bytes(b"not a jpeg at all")
    api.ingest(table, "syn", cache=root / "cache")
    return root / "cache"


def extract(cache: Path, *backbones: str) -> None:
    opts = {"vgg16": {"image_size": SIZE, "weights": "random"}, "pixels": {"image_size": SIZE}}
    for b in backbones:
        api.extract("syn", b, cache=cache, quiet=True, device="cpu", num_workers=0, **opts.get(b, {}))


def rescore(run: Path, cache: Path, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the run's test predictions, `pipe score` of those posts ingested as dataset `name`)."""
    pred = pl.read_parquet(run / "predictions.parquet").filter(pl.col("split") == "test")
    posts = pl.read_parquet(cache / "syn" / "posts.parquet").filter(pl.col("post_id").is_in(pred["post_id"].implode()))
    f = run.parent / f"{name}.parquet"
    posts.write_parquet(f)
    api.score(run, f, run.parent / f"{name}-scores.parquet", dataset=name, cache=cache, device="cpu", quiet=True,
              num_workers=0)
    return pred, pl.read_parquet(run.parent / f"{name}-scores.parquet")


def synth_runs(root: Path, image_size: int, runs: tuple[tuple[str, str, list[str]], ...]) -> tuple[Path, Path]:
    """120 synth posts ingested as `train`, random-VGG16 pool5 and token stores at
    `image_size`, and one run per (name, head, --set list); returns (cache, runs)."""
    cache, run_root = root / "cache", root / "runs"
    ingest(synth(root / "synth", posts=120, image_size=image_size, seed=0), "train", cache=cache)
    for ex in (build_extractor("vgg16", layer="pool5", image_size=image_size, weights="random"),
               build_extractor("tokens")):
        run_extract("train", ex, cache, **EXTRACT)
    for name, head, sets in runs:
        train(TrainOptions(dataset="train", head=head, sets=parse_sets(sets), name=name, runs=run_root, cache=cache))
    return cache, run_root
