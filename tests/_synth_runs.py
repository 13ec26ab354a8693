"""Tiny trained runs on synth data for tests of commands that use runs (score, explain, rank)."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.config import parse_sets
from pipeline.data.ingest import ingest
from pipeline.data.synth import synth
from pipeline.extract import build_extractor, run_extract
from pipeline.run.train import TrainOptions, train

EXTRACT = dict(quiet=True, num_workers=0, device="cpu")
TINY = ["max_steps=6", "eval_every=3", "batch_size=16", "dim=16", "device=cpu"]  # torch heads in seconds


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
