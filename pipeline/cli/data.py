"""`pipe synth` and `pipe ingest`: make or bring posts into the posts contract."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import CacheOpt, app, console, friendly
from pipeline.core.errors import PipeError


@app.command("synth")
@friendly
def synth_cmd(
    out: Path = typer.Argument(..., help="Folder to write posts.parquet, images/, truth.parquet and signals.json into."),
    posts: Optional[int] = typer.Option(None, "--posts", help="Number of posts (default 1500)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Side of the square JPEGs in pixels (default 64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed; the same seed gives the same files (default 0)."),
    users: Optional[int] = typer.Option(None, "--users", help="Number of users (default 24; fewer below 960 posts)."),
) -> None:
    """Write a synthetic dataset with planted signals (see pipeline/data/synth.py for the design)."""
    from pipeline.data.synth import DEFAULT_POSTS, SynthConfig, synth

    kw = {k: v for k, v in {"image_size": image_size, "seed": seed}.items() if v is not None}
    if users is not None:
        kw["config"] = SynthConfig(users=users)
    t0 = time.perf_counter()
    path = synth(out, posts if posts is not None else DEFAULT_POSTS, **kw)
    console.print(f"wrote {path} ({posts or DEFAULT_POSTS} posts, images under {out / 'images'}) "
                  f"in {time.perf_counter() - t0:.1f}s; planted signals: {out / 'signals.json'}", highlight=False, soft_wrap=True)


@app.command("ingest")
@friendly
def ingest_cmd(
    path: Path = typer.Argument(..., help="Posts file (.parquet, .csv, .jsonl/.json) or an SMPD folder."),
    name: str = typer.Option(..., "--name", help="Dataset name: the table goes to <cache>/NAME/posts.parquet."),
    fmt: Optional[str] = typer.Option(None, "--format", help="auto (default: from the extension; a folder with "
                                      "*_img_filepath.txt is SMPD) | generic | parquet | csv | jsonl | smpd."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Ingest the valid rows; write the others with "
                                      "reasons to <cache>/NAME/rejected.parquet."),
    min_words: Optional[int] = typer.Option(None, "--min-words", help="Drop posts whose title + text has fewer "
                                            "than N words (UHAN used 5). Off by default."),
    unlabelled: bool = typer.Option(False, "--unlabelled", help="Accept posts without a score (posts to score, "
                                    "the SMPD test split)."),
    split: Optional[str] = typer.Option(None, "--split", help="SMPD only: train or test (default train when present)."),
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Validate a posts file and write the dataset's posts table (replacing an older one)."""
    from pipeline.data.ingest import ingest

    if min_words is not None and min_words < 0:
        raise PipeError(f"--min-words must be >= 0 (got {min_words})")
    rep = ingest(path, name, fmt or "auto", cache, skip_invalid=skip_invalid, min_words=min_words,
                 unlabelled=unlabelled, split=split)
    console.print(f"ingested {rep.rows} posts from {path} into {rep.path}", highlight=False, soft_wrap=True)
    if rep.replaced is not None:
        r = rep.replaced
        console.print(f"replaced the previous table: {r['added']} added, {r['removed']} removed, {r['changed']} changed "
                      "(feature stores keep their rows for unchanged posts)", highlight=False, soft_wrap=True)
    if rep.rejected_path is not None:
        console.print(f"rejected {rep.rejected} invalid row(s); reasons in {rep.rejected_path}", highlight=False, soft_wrap=True)
    if min_words is not None:
        console.print(f"dropped {rep.dropped_min_words} post(s) with fewer than {min_words} words", highlight=False, soft_wrap=True)
