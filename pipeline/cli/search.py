"""`pipe search`: a dataset's images nearest to a tag query (embedding runs with tag outputs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import CacheOpt, JsonOpt, RunsOpt, app, friendly, print_json, results_console


@app.command("search")
@friendly
def search_cmd(
    run: str = typer.Option(..., "--run", help="An embedding run with tag outputs (dman), folder or name."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset whose images are searched (it must hold the run's stores)."),
    tag: str = typer.Option(..., "--tag", help="The query: a tag of the run's tag vocabulary."),
    k: int = typer.Option(10, "--k", help="Images returned, nearest first."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the table as Parquet.", show_default="no file"),
    device: str = typer.Option("auto", "--device", help="Device for the model: auto, cpu, cuda or cuda:N."),
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Rank a dataset's images by the distance of their tag outputs to a one-hot tag query (DMAN section 4.4)."""
    from pipeline.search import search

    res = search(run, dataset, tag, k=k, out=out, cache=cache, runs=runs, device=device)
    if as_json:
        return print_json({"tag": res.tag, "run": res.run, "dataset": res.dataset, "searched": res.searched,
                           "without_image": res.without_image, "out": res.out, "results": res.table.to_dicts()})
    con = results_console()
    con.print(f"{res.tag!r} in {res.dataset} ({res.searched} images searched, {res.without_image} without image), "
              f"run {res.run}:", markup=False, highlight=False)
    for r in res.table.iter_rows(named=True):
        labels = f"  labels {','.join(r['labels'] or [])}" if "labels" in r else ""
        con.print(f"{r['rank']:>3}  {r['post_id']}  distance {r['distance']:.4f}  confidence {r['tag_confidence']:.3f}  "
                  f"{r['image'] or '-'}{labels}", markup=False, highlight=False, soft_wrap=True)
    if res.out is not None:
        con.print(f"wrote {res.out}", markup=False, highlight=False)
