"""`pipe extract`: one dataset through one extractor into its feature store."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from pipeline.cli.app import CacheOpt, app, friendly, results_console


@app.command()
@friendly
def extract(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (see `pipe ingest`)."),
    backbone: str = typer.Option(..., "--backbone", help="Registered extractor: vgg16, tokens, ..."),
    layer: Optional[str] = typer.Option(None, "--layer", help="vgg16: pool5 (region grid) or fc7 (4096-d).", show_default="the backbone's"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input side in pixels (vgg16: 448).", show_default="the backbone's"),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet, random, or PATH of a state dict (clip: a pretrained tag such as openai).",
                                           show_default="the backbone's"),
    model: Optional[str] = typer.Option(None, "--model", help="clip / clip_text: open_clip model name (ViT-B-32).", show_default="the backbone's"),
    max_features: Optional[int] = typer.Option(None, "--max-features", help="tfidf / bow: vocabulary cap (2000).", show_default="the backbone's"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Any other extractor config field: one key=value per --set (repeat it).",
                                            show_default="none"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A YAML (.yaml/.json) or TOML file: a flat "
                                               "mapping of extractor config keys; --set and the named flags win.",
                                               show_default="none"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per forward pass (halved on GPU out-of-memory).",
                                             show_default="32 on CPU, 256 on CUDA"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Posts per shard, the unit of resume.",
                                             show_default="512 images, 8192 texts"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    decode: str = typer.Option("auto", "--decode", help="auto (JPEGs decoded and resized on the GPU under CUDA), cpu or device."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="CUDA: bfloat16/float16 autocast, or float32."),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Run the shards on a local dask cluster of N processes.",
                                               show_default="off"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the shards on the dask cluster at ADDRESS (tcp://host:8786).",
                                            show_default="off"),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Image-decoding processes.",
                                              show_default="CPUs - 1, at most 8; 0 in dask workers"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try recorded failures again."),
    wait: bool = typer.Option(False, "--wait", help="Wait for another extraction of this store instead of refusing."),
    cache: Optional[Path] = CacheOpt,
    quiet: bool = False,  # `-q/--quiet`, added by `friendly`: no progress output either
) -> None:
    """Extract features of every post not yet in the store (a rerun resumes; changed inputs are redone)."""
    from pipeline import api
    from pipeline.core.config import parse_sets, read_config_file

    named = {"layer": layer, "image_size": image_size, "weights": weights, "model": model, "max_features": max_features}
    config = {**(read_config_file(config_file) if config_file else {}), **parse_sets(set_),
              **{k: v for k, v in named.items() if v is not None}}
    r = api.extract(
        dataset, backbone, config=config, cache=cache, batch_size=batch_size, shard_size=shard_size, device=device,
        num_workers=num_workers, retry_failed=retry_failed, wait=wait, quiet=quiet, decode=decode, amp=amp,
        dask_workers=dask_workers, scheduler=scheduler,
    )
    out = results_console()
    out.print(f"store: {escape(str(r.store))}")
    out.print(f"extractor id: {r.extractor_id}")
    rate = f" in {r.seconds:.1f} s ({r.images_per_s:.1f} inputs/s, model load {r.load_seconds:.1f} s)" if r.extracted + r.failed else ""
    out.print(
        f"extracted {r.extracted} into {r.shards_written} shard(s){rate}; skipped {r.skipped} already stored; "
        f"failed {r.failed}; no image {r.no_image}; previously failed, not retried {r.skipped_failed}"
    )
    if r.failed or r.skipped_failed:
        out.print(f"failures with reasons: {escape(str(r.store / 'failures.parquet'))} (`--retry-failed` tries them again)")
