"""`pipe serve`: an HTTP scoring service and a web page on trained runs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pipeline.cli.app import CacheOpt, RunsOpt, app, console, friendly


@app.command("serve")
@friendly
def serve_cmd(
    run: List[str] = typer.Option(..., "--run", help="Run folder or name; repeat to serve several runs."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="Worker processes, each with its own copy of the models."),
    token: Optional[str] = typer.Option(None, "--token", envvar="PIPE_SERVE_TOKEN",
                                        help="Require `Authorization: Bearer TOKEN` on the API (also $PIPE_SERVE_TOKEN).",
                                        show_default="none on loopback"),
    device: str = typer.Option("auto", "--device", help="Device for heads and extractors: auto, cpu, cuda or cuda:N."),
    batch_window_ms: float = typer.Option(5.0, "--batch-window-ms", help="How long a request waits for others to "
                                          "share its forward pass (micro-batching)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Drafts in one forward pass at most."),
    cache_mb: int = typer.Option(256, "--cache-mb", help="In-memory feature cache per run, keyed by content hash."),
    max_body_mb: float = typer.Option(32, "--max-body-mb", help="Largest request body (413 above)."),
    max_image_mb: float = typer.Option(16, "--max-image-mb", help="Largest image (413 above)."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", help="Most pixels in one image (413 above)."),
    max_posts: int = typer.Option(64, "--max-posts", help="Most posts in one request (413 above)."),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Serve runs over HTTP: POST /score, /rank, /explain; GET /search, /runs, /health; the page at /."""
    from pipeline.serve.server import ServeSettings, serve
    from pipeline.serve.uploads import Limits

    limits = Limits(int(max_body_mb * 2**20), int(max_image_mb * 2**20), max_pixels, max_posts)
    settings = ServeSettings(list(run), str(runs) if runs else None, str(cache) if cache else None, host, port, workers,
                             token, device, batch_window_ms, max_batch, cache_mb, limits)
    serve(settings, say=lambda m: console.print(m, markup=False, highlight=False))
