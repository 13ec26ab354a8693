"""`pipe score`: re-score a new posts file with a trained run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import CacheOpt, RunsOpt, app, console, friendly


@app.command()
@friendly
def score(
    run: str = typer.Option(..., "--run", help="Run folder, or run name under the runs root."),
    posts: Path = typer.Option(..., "--posts", help="Posts file (Parquet, CSV, JSONL); labels optional."),
    out: Path = typer.Option(..., "--out", help="Output Parquet: post_id, score, unseen_user, missing_image."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name to ingest the posts as (default: from the file name)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="auto | generic | smpd (default auto)."),
    device: Optional[str] = typer.Option(None, "--device", help="Extraction device: auto | cpu | cuda."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Extraction batch size."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Image-decoding processes."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", help="No extraction progress output."),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Ingest a posts file, extract only what is not cached with the run's exact extractors, predict, write scores."""
    from pipeline.score import score as run_score

    say = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    rep = run_score(run, posts, out, dataset=dataset, cache=cache, runs=runs, fmt=fmt or "auto", say=say,
                    device=device, batch_size=batch_size, num_workers=num_workers, quiet=quiet)
    say(f"scored {rep.posts} posts -> {rep.out} ({rep.unseen_users} unseen users, {rep.missing_images} without image)")
    if rep.metrics:
        say("labels present: " + ", ".join(f"{k} {v:.4f}" for k, v in rep.metrics.items()))
