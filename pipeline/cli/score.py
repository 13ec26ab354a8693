"""`pipe score`: re-score a new posts file with a trained run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import (
    FORMAT_HELP,
    CacheOpt,
    JsonOpt,
    RunsOpt,
    app,
    console,
    friendly,
    print_json,
    results_console,
)


@app.command()
@friendly
def score(
    run: str = typer.Option(..., "--run", help="Run folder, or run name under the runs root."),
    posts: Path = typer.Option(..., "--posts", help="Posts file (Parquet, CSV, JSONL); labels optional."),
    out: Path = typer.Option(..., "--out", help="Output Parquet: post_id, score, unseen_user, missing_image."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name to ingest the posts as.",
                                          show_default="from the file name"),
    overwrite_dataset: bool = typer.Option(False, "--overwrite-dataset", help="Replace --dataset even when another "
                                           "command or another posts file made it."),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    device: str = typer.Option("auto", "--device", help="Extraction device: auto, cpu, cuda or cuda:N."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Extraction batch size.",
                                             show_default="32 on CPU, 256 on CUDA"),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Image-decoding processes.",
                                              show_default="CPUs - 1, at most 8"),
    min_coverage: float = typer.Option(0.95, "--min-coverage", help="Refuse when a store lacks rows, without a recorded "
                                       "reason, for more than this fraction of the posts (unreadable images are flagged)."),
    submission: Optional[Path] = typer.Option(None, "--submission", help="Also write the SMP Challenge submission "
                                              "JSON (version, result, external_data) to this file.", show_default="none"),
    users: Optional[str] = typer.Option(None, "--users", help="Ranking runs: rank every post for these users: a file "
                                        "(a user_id column, or one id per line) or ID,ID,...",
                                        show_default="every follower of each post's author"),
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
    quiet: bool = False,  # `-q/--quiet`, added by `friendly`: no extraction progress either
) -> None:
    """Ingest a posts file, extract only what is not cached with the run's exact extractors, predict, write scores."""
    import dataclasses

    from pipeline import api
    from pipeline.score import read_users

    say = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    rep = api.score(run, posts, out, dataset=dataset, cache=cache, runs=runs, fmt=fmt, say=say, device=device,
                    batch_size=batch_size, num_workers=num_workers, quiet=quiet, min_coverage=min_coverage,
                    submission=submission, overwrite_dataset=overwrite_dataset,
                    users=read_users(users) if users is not None else None)
    if as_json:
        return print_json(dataclasses.asdict(rep))
    res = results_console()
    res.print(f"scored {rep.posts} posts -> {rep.out} ({rep.unseen_users} unseen users, {rep.missing_images} without image)",
              markup=False)
    if rep.submission:
        res.print(f"submission: {rep.submission}", markup=False)
    if rep.metrics:
        res.print("labels present: " + ", ".join(f"{k} {v:.4f}" for k, v in rep.metrics.items()), markup=False)
