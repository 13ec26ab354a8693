"""`pipe demo`: the whole loop on synthetic data in a few minutes on CPU."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline.cli.app import app, console, friendly


@app.command()
@friendly
def demo(
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Folder for the demo's data, cache and runs (replaced).",
                                           show_default="./pipe-demo"),
    posts: Optional[int] = typer.Option(None, "--posts", help="Synthetic posts to train on.", show_default="480"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image side and VGG16 input.", show_default="224"),
    weights: Optional[str] = typer.Option(None, "--weights", help="VGG16 weights: imagenet (random if unavailable), random or PATH.",
                                          show_default="imagenet"),
) -> None:
    """synth -> ingest -> extract (vgg16, tokens) -> train hisave, lightgbm, uhan -> evaluate -> score."""
    from pipeline.cli.train import rows_tables
    from pipeline.demo import DemoOptions, run_demo, score_new
    from pipeline.evaluate.compare import comparison_rows, write_comparison
    from pipeline.run.rundir import load_run

    given = {"workdir": workdir, "posts": posts, "image_size": image_size, "weights": weights}
    opts = DemoOptions(**{k: v for k, v in given.items() if v is not None})
    if opts.workdir.exists():
        shutil.rmtree(opts.workdir)
    say = lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    run_dirs = run_demo(opts, say)
    rows = comparison_rows([load_run(d) for d in run_dirs])
    say("5/6 evaluate")
    for table in rows_tables(rows):
        Console().print(table)
    csv_path, md_path = write_comparison(rows, opts.workdir / "runs" / "evaluate")
    say(f"wrote {csv_path} and {md_path}")
    score_new(opts, run_dirs[-1], say)
