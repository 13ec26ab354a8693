"""`pipe report`, `pipe explain`, `pipe rank`: looking at what runs learned."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pipeline.cli.app import CacheOpt, JsonOpt, RunsOpt, app, console, friendly, print_json, results_console

ExtractDevice = typer.Option("auto", "--device", help="Extraction device for new posts: auto, cpu, cuda or cuda:N.")
Workers = typer.Option(None, "--num-workers", help="Image-decoding processes for new posts.",
                       show_default="CPUs - 1, at most 8")


def _say(quiet: bool):
    return (lambda m: None) if quiet else (lambda m: console.print(m, highlight=False, markup=False))


@app.command()
@friendly
def report(
    runs_given: List[str] = typer.Argument(..., metavar="RUN...", help="Run folders or names (plain files are skipped)."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write."),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
    quiet: bool = False,
) -> None:
    """One self-contained HTML page: comparison tables per task, plots per run (no network needed to open it)."""
    from pipeline import api

    path = api.report(runs_given, out=out, runs=runs, cache=cache, say=_say(quiet))
    results_console().print(str(path), markup=False)


@app.command()
@friendly
def explain(
    run: str = typer.Option(..., "--run", help="Run folder, or run name under the runs root."),
    post: List[str] = typer.Option(..., "--post", help="Post id to explain (repeat for several)."),
    posts: Optional[Path] = typer.Option(None, "--posts", help="Posts file holding the posts (ingested and extracted "
                                         "like `pipe score`).", show_default="the run's dataset"),
    out: Path = typer.Option(Path("explain"), "--out", help="Folder for the PNG maps and JSON weights."),
    html: bool = typer.Option(False, "--html", help="Also write OUT/explain.html with the posts and their maps."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name to ingest --posts as.",
                                          show_default="from the file name"),
    device: str = ExtractDevice,
    num_workers: Optional[int] = Workers,
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
    quiet: bool = False,
) -> None:
    """Attention of a run's head (uhan, dualatt, ...) for posts: region heat map, word weights, modality weights."""
    from pipeline import api

    done = api.explain(run, post, posts_file=posts, out=out, html=html, dataset=dataset, cache=cache, runs=runs,
                       say=_say(quiet), device=device, num_workers=num_workers, quiet=quiet)
    if as_json:
        return print_json([e.__dict__ for e in done])
    res = results_console()
    for e in done:
        mean = f"user's training mean {e.user_mean:.4f}" if e.user_mean is not None else "user unseen in training"
        pred = f"{e.prediction:.4f}" if isinstance(e.prediction, float) else str(e.prediction)
        res.print(f"{e.post_id}: prediction {pred} ({mean}) -> " + ", ".join(str(out / f) for f in e.files.values()),
                  markup=False)


@app.command()
@friendly
def rank(
    run: str = typer.Option(..., "--run", help="Run folder, or run name under the runs root (a regression run)."),
    user: str = typer.Option(..., "--user", help="The user who would post the candidates."),
    candidates: Path = typer.Option(..., "--candidates", help="Parquet, CSV or JSONL: image and/or title/text per "
                                    "candidate, optional posted_at (default now) and post_id."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the ranked table (Parquet, or CSV for .csv).",
                                       show_default="print only"),
    explain: Optional[Path] = typer.Option(None, "--explain", help="Folder for each candidate's attention maps and "
                                           "rank.html (heads with attention).", show_default="no maps"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name to ingest the candidates as.",
                                          show_default="rank-<file name>"),
    overwrite_dataset: bool = typer.Option(False, "--overwrite-dataset", help="Replace --dataset even when another "
                                           "command or another candidates file made it."),
    device: str = ExtractDevice,
    num_workers: Optional[int] = Workers,
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
    quiet: bool = False,
) -> None:
    """What-if: score each candidate as the user's post and print them best first, with the gain over the user's mean."""
    from pipeline import api

    rep = api.rank(run, user, candidates, out=out, explain=explain, dataset=dataset, cache=cache, runs=runs,
                   say=_say(quiet), device=device, num_workers=num_workers, quiet=quiet,
                   overwrite_dataset=overwrite_dataset)
    if as_json:
        return print_json({"user": rep.user, "user_mean": rep.user_mean, "user_posts": rep.user_posts,
                           "candidates": rep.table.to_dicts()})
    res = results_console()
    if rep.user_mean is None:
        res.print(f"user {user} was never seen in training: the ranking rests on the content alone", markup=False)
    else:
        res.print(f"user {user}: training mean {rep.user_mean:.4f} over {rep.user_posts} posts", markup=False)
    for r in rep.table.to_dicts():
        gain = f"{r['gain']:+.4f}" if r["gain"] is not None else "n/a"
        flags = " (no image)" if r["missing_image"] else ""
        res.print(f"{r['rank']:>3}  {r['post_id']}  score {r['score']:.4f}  gain {gain}{flags}", markup=False)
