"""`pipe extract`: one dataset through one extractor into its feature store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.cli.app import CacheOpt, app, friendly


@app.command()
@friendly
def extract(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (see `pipe ingest`)."),
    backbone: str = typer.Option(..., "--backbone", help="Registered extractor: vgg16, tokens, ..."),
    layer: Optional[str] = typer.Option(None, "--layer", help="vgg16: pool5 (region grid) or fc7 (4096-d)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input side in pixels (vgg16: 448)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet, random, or PATH of a state dict (clip: a pretrained tag such as openai)."),
    model: Optional[str] = typer.Option(None, "--model", help="clip / clip_text: open_clip model name (ViT-B-32)."),
    max_features: Optional[int] = typer.Option(None, "--max-features", help="tfidf / bow: vocabulary cap (2000)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Any other extractor config field, key=value (repeatable)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per forward pass (32 on CPU, 256 on CUDA; halved on GPU out-of-memory)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Posts per shard, the unit of resume (512 for images, 8192 for texts)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (auto)."),
    decode: Optional[str] = typer.Option(None, "--decode", help="auto (JPEGs decoded and resized on the GPU under CUDA), cpu or device."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="CUDA: bfloat16/float16 autocast (default) or float32."),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Run the shards on a local dask cluster of N processes."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the shards on the dask cluster at ADDRESS (tcp://host:8786)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Image-decoding processes (CPUs - 1, at most 8; 0 in each dask worker)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try recorded failures again."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another extraction of this store instead of refusing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Extract features of every post not yet in the store (a rerun resumes; changed inputs are redone)."""
    from pipeline.core.config import parse_sets
    from pipeline.extract import build_extractor, run_extract  # torch import only when extracting

    sets = parse_sets(set_)
    named = {"layer": layer, "image_size": image_size, "weights": weights, "model": model, "max_features": max_features}
    ex = build_extractor(backbone, **{**sets, **{k: v for k, v in named.items() if v is not None}})
    r = run_extract(
        dataset, ex, cache=cache, batch_size=batch_size, shard_size=shard_size, device=device,
        num_workers=num_workers, retry_failed=retry_failed, wait=wait, quiet=quiet, decode=decode, amp=amp,
        dask_workers=dask_workers, scheduler=scheduler,
    )
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"store: {escape(str(r.store))}")
    out.print(f"extractor id: {r.extractor_id}")
    rate = f" in {r.seconds:.1f} s ({r.images_per_s:.1f} inputs/s, model load {r.load_seconds:.1f} s)" if r.extracted + r.failed else ""
    out.print(
        f"extracted {r.extracted} into {r.shards_written} shard(s){rate}; skipped {r.skipped} already stored; "
        f"failed {r.failed}; no image {r.no_image}; previously failed, not retried {r.skipped_failed}"
    )
    if r.failed or r.skipped_failed:
        out.print(f"failures with reasons: {escape(str(r.store / 'failures.parquet'))} (`--retry-failed` tries them again)")
