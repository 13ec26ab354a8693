"""The end-to-end demo: synth -> ingest -> extract -> train -> evaluate -> score, on CPU.

Everything goes under one work folder (data, cache, runs) so the demo never touches a
user's own cache and is removed with one `rm -r`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.core.errors import PipeError

# CPU-sized trainer settings: the paper's protocol (eval every 64 batches, patience 20)
# needs far more steps than a few-minute demo allows.
DEMO_HEADS: dict[str, dict[str, Any]] = {
    "hisave": {},
    "lightgbm": {"n_jobs": 2},
    "uhan": {"dim": 128, "batch_size": 64, "eval_every": 8, "patience": 6, "max_steps": 240, "lr": 0.002},
}


@dataclass
class DemoOptions:
    workdir: Path = Path("pipe-demo")  # data/, cache/ and runs/ of the demo
    posts: int = 480  # synthetic posts to train on
    image_size: int = 224  # VGG16 input side: 224 -> 7x7 pool5 grid (448 takes 4x longer on CPU)
    seed: int = 0  # synth seed; the posts to score use seed + 1
    weights: str = "imagenet"  # VGG16 weights; falls back to random when they cannot be loaded


def extract_vgg16(dataset: str, opts: DemoOptions, cache: Path, say: Callable[[str], None]) -> str:
    from pipeline.extract import build_extractor, run_extract

    kw = dict(layer="pool5", image_size=opts.image_size)
    try:
        ex = build_extractor("vgg16", weights=opts.weights, **kw)
        rep = run_extract(dataset, ex, cache, quiet=False)
    except PipeError as e:
        if opts.weights != "imagenet":
            raise
        say(f"ImageNet VGG16 weights could not be loaded ({e}).")
        say("Falling back to RANDOM weights: the demo runs, but its visual features are random projections.")
        rep = run_extract(dataset, build_extractor("vgg16", weights="random", **kw), cache, quiet=False)
    say(f"vgg16: {rep.extracted} extracted, {rep.failed} failed, {rep.images_per_s:.1f} images/s -> {rep.extractor_id}")
    return rep.extractor_id


def run_demo(opts: DemoOptions, say: Callable[[str], None]) -> list[Path]:
    """Steps 1-4; returns the run folders it trained."""
    from pipeline.data.ingest import ingest
    from pipeline.data.synth import synth
    from pipeline.extract import build_extractor, run_extract
    from pipeline.run.train import TrainOptions, train

    w = opts.workdir
    cache, runs = w / "cache", w / "runs"
    say(f"1/6 synth: {opts.posts} posts at {opts.image_size} px -> {w / 'data'}")
    posts_file = synth(w / "data", opts.posts, image_size=opts.image_size, seed=opts.seed)
    say("2/6 ingest as dataset 'demo'")
    ingest(posts_file, "demo", cache=cache)
    say("3/6 extract: vgg16 pool5 grids and UHAN token sequences")
    visual = extract_vgg16("demo", opts, cache, say)
    tok = run_extract("demo", build_extractor("tokens"), cache, quiet=True)
    say(f"tokens: {tok.extracted} posts -> {tok.extractor_id}")
    say("4/6 train: " + ", ".join(DEMO_HEADS))
    done = []
    for head, sets in DEMO_HEADS.items():
        stores = {"visual": visual, "text": tok.extractor_id}
        done.append(train(TrainOptions(dataset="demo", head=head, stores=stores, sets=sets, runs=runs, cache=cache,
                                       name=f"demo-{head}"), say=lambda m: None))
        say(f"  trained {head} -> {done[-1]}")
    return done


def score_new(opts: DemoOptions, run_dir: Path, say: Callable[[str], None]) -> None:
    """Score posts the run has never seen (new synth seed) with the run's exact extractors."""
    from pipeline.data.synth import synth
    from pipeline.score import score

    w = opts.workdir
    new_file = synth(w / "new", max(40, opts.posts // 10), image_size=opts.image_size, seed=opts.seed + 1)
    say(f"6/6 score {new_file} with {run_dir.name}")
    rep = score(run_dir, new_file, w / "scores.parquet", dataset="demo-new", cache=w / "cache", runs=w / "runs", quiet=True)
    say(f"scored {rep.posts} posts -> {rep.out}; {rep.unseen_users} unseen users, {rep.missing_images} without image"
        + (f"; labels known here: MSE {rep.metrics['mse']:.3f}" if rep.metrics else ""))
