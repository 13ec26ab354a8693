"""`pipe train` (fit a head on cached features into a run folder) and `pipe evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.app import CacheOpt, RunsOpt, app, console, friendly
from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.evaluate.compare import comparison_rows, mean_pm_std, write_comparison
from pipeline.train.metrics import METRICS
from pipeline.train.rundir import Run, load_run


def _role_choices(visual: Optional[str], text: Optional[str], roles: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for item in roles or []:
        role, eq, ref = item.partition("=")
        if not eq or not role or not ref:
            raise PipeError(f"--role {item!r}: expected ROLE=EXTRACTOR_ID (e.g. --role user_image=clip)")
        out[role.strip()] = ref.strip()
    if visual:
        out["visual"] = visual
    if text:
        out["text"] = text
    return out


@app.command()
@friendly
def train(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (its posts and stores under the cache)."),
    head: str = typer.Option(..., "--head", help="Head to train: uhan, dualatt, dmf, hisave, svr, lightgbm, ..."),
    visual: Optional[str] = typer.Option(None, "--visual", help="Store for the visual role: extractor id or unique prefix."),
    text: Optional[str] = typer.Option(None, "--text", help="Store for the text role: extractor id or unique prefix."),
    role: Optional[list[str]] = typer.Option(None, "--role", help="ROLE=ID for any other role (repeatable)."),
    split: Optional[str] = typer.Option(None, "--split", help="0.7,0.1,0.2 (default, chronological), other fractions, or uhan[:SEED]."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Head config override key=value (repeatable)."),
    ablate: Optional[list[str]] = typer.Option(None, "--ablate", help="Ablation switch of the head (repeatable)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Train K seeds (seed, seed+1, ...); report mean ± std. Default 1."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: head, ablations, timestamp)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Train on the dask cluster at ADDRESS (lightgbm)."),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Train on a local dask cluster of N processes (lightgbm)."),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Train a head on cached features; writes config, log, model, predictions and metrics to a run folder."""
    from pipeline.train.run import TrainOptions
    from pipeline.train.run import train as run_training

    opts = TrainOptions(
        dataset=dataset, head=head, stores=_role_choices(visual, text, role), split=split, sets=list(set_ or []),
        ablate=list(ablate or []), repeats=1 if repeats is None else repeats, name=name, runs=runs, cache=cache,
        scheduler=scheduler, dask_workers=dask_workers,
    )
    run_dir = run_training(opts, say=lambda m: console.print(m, highlight=False, markup=False))
    Console().print(comparison_table([load_run(run_dir)]))
    console.print(f"run written to {run_dir}", highlight=False)


@app.command()
@friendly
def evaluate(
    run: list[str] = typer.Argument(..., help="Run folders or run names under the runs root; plain files are skipped."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write PREFIX.csv and PREFIX.md (default: <runs root>/evaluate)."),
    runs: Optional[Path] = RunsOpt,
) -> None:
    """Compare runs: test MSE/MAE/SRC/MedAE (mean ± std over repeats) in the terminal, as CSV and as Markdown."""
    loaded = []
    for ref in run:
        if Path(ref).is_file():  # e.g. runs/evaluate.csv caught by a `runs/*` glob
            console.print(f"skipping {ref}: a file, not a run folder", highlight=False, markup=False)
            continue
        loaded.append(load_run(ref, runs))
    if not loaded:
        raise PipeError("no run folders among the arguments")
    Console().print(comparison_table(loaded))
    prefix = out if out is not None else paths.runs_root(runs) / "evaluate"
    csv_path, md_path = write_comparison(comparison_rows(loaded), prefix)
    console.print(f"wrote {csv_path} and {md_path}", highlight=False)


def comparison_table(runs: list[Run]) -> Table:
    """Terminal view (stores and split are in the CSV)."""
    t = Table("run", "head", "ablate", "K", *[k.upper() for k in METRICS],
              title="test metrics, mean ± std over K repeats")
    for r in comparison_rows(runs):
        t.add_row(r["run"], r["head"], r["ablate"] or "—", str(r["repeats"]) if r["status"] == "done" else "running?",
                  *[mean_pm_std(r, k, 3) for k in METRICS])
    return t
