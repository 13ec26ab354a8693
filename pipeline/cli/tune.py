"""`pipe tune`: hyper-parameter search on the validation split, then the best config as a normal run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.app import CacheOpt, RunsOpt, app, console, friendly, results_console


@app.command()
@friendly
def tune(
    dataset: str = typer.Option(..., "--dataset", help="Dataset name (its posts and stores under the cache)."),
    head: str = typer.Option(..., "--head", help="Head to tune: uhan, dualatt, dmf, ... (a head with a search space)."),
    trials: int = typer.Option(20, "--trials", help="Finished trials (complete or pruned) the study should hold."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop searching after MIN minutes.",
                                            show_default="no limit"),
    visual: Optional[str] = typer.Option(None, "--visual", help="Store for the visual role (extractor id or prefix).",
                                         show_default="as pipe train"),
    text: Optional[str] = typer.Option(None, "--text", help="Store for the text role (extractor id or prefix).",
                                       show_default="as pipe train"),
    split: Optional[str] = typer.Option(None, "--split", help="As pipe train; the search reads train and valid only.",
                                        show_default="the task's"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Fixed key=value (never searched), one per --set; "
                                             "negatives, window, window_scope and tags are aliases of --task-set.",
                                             show_default="none"),
    task_set: Optional[list[str]] = typer.Option(None, "--task-set", help="Task setting key=value, as pipe train.",
                                                 show_default="the task's, or the head's for it"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A YAML (.yaml/.json) or TOML file of fixed "
                                               "--set keys; --set wins over it.", show_default="none"),
    seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name; the same name resumes a killed search.",
                                      show_default="tune-<head>-timestamp"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run trials on the dask cluster at ADDRESS.",
                                            show_default="off"),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Run trials on a local dask cluster of N "
                                               "processes.", show_default="off"),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
) -> None:
    """Search a head's hyper-parameters (Optuna TPE, median pruning) on the validation split, then train
    and evaluate the best configuration once as a normal run (study.db, trials.csv, tune.json beside it)."""
    from pipeline.core.config import parse_sets, read_config_file
    from pipeline.run.train import TrainOptions
    from pipeline.run.tune import TuneOptions
    from pipeline.run.tune import tune as run_tune

    stores = {k: v for k, v in {"visual": visual, "text": text}.items() if v}
    opts = TuneOptions(TrainOptions(dataset=dataset, head=head, stores=stores, split=split, sets={**(read_config_file(config_file) if config_file else {}), **parse_sets(set_)},
                                    task_sets=parse_sets(task_set, "--task-set"), name=name, runs=runs, cache=cache),
                       trials=trials, timeout=timeout, seed=seed, scheduler=scheduler, dask_workers=dask_workers)
    out = run_tune(opts, say=lambda m: console.print(m, highlight=False, markup=False))
    from pipeline.cli.train import comparison_tables
    from pipeline.run.rundir import load_run

    for table in comparison_tables([load_run(out)]):  # results on stdout, as pipe train's
        results_console().print(table)
    console.print(f"run written to {out} (study: {out / 'study.db'}, trials: {out / 'trials.csv'})", highlight=False)
