"""`pipe train` (fit a head on cached features into a run folder) and `pipe evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pipeline.cli.app import CacheOpt, JsonOpt, RunsOpt, app, console, friendly, print_json, results_console
from pipeline.core import paths
from pipeline.core.config import parse_sets
from pipeline.core.errors import PipeError

if TYPE_CHECKING:  # training, stores and tables are imported only when a command runs
    from rich.table import Table

    from pipeline.run.rundir import Run


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
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name (its posts and stores under the cache).",
                                          show_default="required, unless --resume"),
    head: Optional[str] = typer.Option(None, "--head", help="Head to train: uhan, dualatt, dmf, hisave, svr, lightgbm, ...",
                                       show_default="required, unless --resume"),
    visual: Optional[str] = typer.Option(None, "--visual", help="Store for the visual role: extractor id or unique prefix.",
                                         show_default="the paper's store, else the only one that fits"),
    text: Optional[str] = typer.Option(None, "--text", help="Store for the text role: extractor id or unique prefix.",
                                       show_default="the paper's store, else the only one that fits"),
    role: Optional[list[str]] = typer.Option(None, "--role", help="ROLE=ID for any other role (repeatable).",
                                             show_default="none"),
    split: Optional[str] = typer.Option(None, "--split", help="0.7,0.1,0.2 (chronological), other fractions, uhan[:SEED] or random[:SEED].",
                                        show_default="0.7,0.1,0.2; embedding: random:0"),
    target: str = typer.Option("score", "--target", help="Posts column a regression head learns (score, retweets, likes, ...)."),
    target_transform: Optional[str] = typer.Option(None, "--target-transform", help="none | log1p | max (divide by the "
                                                   "training maximum), fitted on the training part; predictions come back "
                                                   "in the column's units.", show_default="the head's: max for hybrid_cnn, else none"),
    min_target: Optional[float] = typer.Option(None, "--min-target", help="Keep only posts whose target is at least N "
                                               "(says how many it drops).", show_default="off"),
    finetune: Optional[str] = typer.Option(None, "--finetune", help="Fill the head's visual role with this backbone "
                                           "(vgg16, inception_v3, clip) applied to the images and trained end to end; "
                                           "--set finetune_blocks=N backbone_lr=X.", show_default="off (cached features)"),
    weights: Optional[str] = typer.Option(None, "--weights", help="--finetune: the backbone's start, imagenet | random | PATH.",
                                          show_default="imagenet"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="--finetune: input side in pixels.",
                                             show_default="the backbone's default"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Head config override: one key=value per --set (repeat "
                                             "it). negatives, window, window_scope and tags are aliases of --task-set.",
                                             show_default="none"),
    task_set: Optional[list[str]] = typer.Option(None, "--task-set", help="Task setting, one key=value per --task-set: "
                                                 "ranking negatives, candidates, seed (of the candidate lists); "
                                                 "regression window, window_scope; embedding tags. Recorded in "
                                                 "config.json.", show_default="the task's, or the head's for it"),
    ablate: Optional[list[str]] = typer.Option(None, "--ablate", help="Ablation switch of the head (repeatable).",
                                             show_default="none"),
    repeats: int = typer.Option(1, "--repeats", help="Train K seeds (seed, seed+1, ...); report the mean and 95 % interval over them."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name.",
                                      show_default="head, ablations, timestamp"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Train on the dask cluster at ADDRESS (lightgbm).",
                                            show_default="off"),
    dask_workers: Optional[int] = typer.Option(None, "--dask-workers", help="Train on a local dask cluster of N processes (lightgbm).",
                                               show_default="off"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A YAML (.yaml/.json) or TOML file: a flat "
                                               "mapping of --set keys (max_steps: 20); --set wins over it.",
                                               show_default="none"),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved head config (regime applied) "
                                      "as a --config file on stdout and exit without training."),
    keep_interrupted: bool = typer.Option(False, "--keep-interrupted", help="On Ctrl-C or SIGTERM keep the best "
                                          "model so far in the run's model/ folder (the run stays marked interrupted)."),
    min_coverage: float = typer.Option(0.95, "--min-coverage", help="Refuse when a role's store has rows for a smaller "
                                       "fraction of the posts (posts without an image do not count against a visual store)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue the stopped run RUN (Ctrl-C, SIGTERM, killed) "
                                         "from its last checkpoint, with the options it was started with; the "
                                         "result is the one an uninterrupted run reaches.", show_default="off"),
    logger: Optional[str] = typer.Option(None, "--logger", help="Also log each evaluation to tensorboard "
                                         "(<run>/tensorboard) or mlflow (MLflow's tracking URI); optional extras: "
                                         "pip install 'pipe[tensorboard]' / 'pipe[mlflow]'.", show_default="off"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the whole path in seconds: prepare the data, train "
                                 "one batch, validate, predict and evaluate, in a temporary folder that is removed; "
                                 "prints what it checked, writes no run."),
    runs: Optional[Path] = RunsOpt,
    cache: Optional[Path] = CacheOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the run folder, its metrics and never_improved as one "
                                 "JSON object on stdout (no table)."),
    quiet: bool = False,  # filled in by `friendly` from -q/--quiet
) -> None:
    """Train a head on cached features; writes config, log, model, predictions and metrics to a run folder."""
    from pipeline import api
    from pipeline.core.config import parse_sets

    from pipeline.core.config import read_config_file

    sets = {**(read_config_file(config_file) if config_file else {}), **parse_sets(set_)}  # flags win
    if resume is not None:
        given = [flag for flag, v in (("--dataset", dataset), ("--head", head), ("--set", set_), ("--config", config_file),
                                      ("--name", name), ("--task-set", task_set), ("--logger", logger),
                                      ("--dry-run", dry_run or None), ("--print-config", print_config or None)) if v]
        if given:
            raise PipeError(f"--resume continues a run with the options it was started with; drop {', '.join(given)}")
    elif dataset is None or head is None:
        raise PipeError("pipe train needs --dataset and --head (or --resume RUN to continue a stopped run)")
    if dry_run:
        return _dry_run(dict(dataset=dataset, head=head, stores=_role_choices(visual, text, role), split=split,
                             sets=sets, task_sets=parse_sets(task_set, "--task-set"), ablate=list(ablate or []),
                             cache=cache, target=target, target_transform=target_transform, min_target=min_target),
                        quiet)
    if print_config:
        return _print_config(dict(dataset=dataset, head=head, stores=_role_choices(visual, text, role), split=split,
                                  sets=sets, task_sets=parse_sets(task_set, "--task-set"), ablate=list(ablate or []),
                                  cache=cache, target=target, target_transform=target_transform, min_target=min_target))
    watch = TrainWatch(quiet)
    say = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
    try:
        run = api.resume(resume, runs=runs, say=say, watch=watch) if resume is not None else api.train(
            dataset, head, stores=_role_choices(visual, text, role), split=split, config=sets,
            task_config=parse_sets(task_set, "--task-set"),
            ablate=list(ablate or []), repeats=repeats, name=name, runs=runs, cache=cache,
            scheduler=scheduler, dask_workers=dask_workers, min_coverage=min_coverage, target=target,
            target_transform=target_transform, min_target=min_target, finetune=finetune, weights=weights,
            image_size=image_size, keep_interrupted=keep_interrupted, logger=logger, say=say, watch=watch,
        )
    finally:
        watch.close()
    if as_json:
        metrics = run.metrics or {}
        print_json({"run": str(run.dir), "name": run.name, "metrics": metrics,
                    "never_improved": bool(metrics.get("never_improved", False))})
    else:
        for table in comparison_tables([run]):
            results_console().print(table)
    console.print(f"run written to {run.dir}", highlight=False)


def _dry_run(options: dict[str, Any], quiet: bool) -> None:
    """`--dry-run`: the whole path on one batch, nothing kept; what was checked, one line each."""
    from pipeline import api

    checked = api.dry_run(say=(lambda m: None) if quiet else (lambda m: console.print(m, highlight=False, markup=False)),
                          **options)
    out = results_console()
    for line in checked:
        out.print(f"ok  {line}", highlight=False, markup=False)
    out.print("dry run passed; nothing was written", highlight=False)


def _print_config(options: dict[str, Any]) -> None:
    """The head's config as the run would resolve it (data-aware regime included), printed as a
    flat JSON mapping (JSON is YAML: save it and pass it back with --config)."""
    from pipeline.core.config import config_to_dict
    from pipeline.run.train import TrainOptions, plan_run

    plan = plan_run(TrainOptions(**options))
    for n in plan.notes:
        console.print(n, highlight=False, markup=False)
    print_json({k: v for k, v in config_to_dict(plan.config).items() if v not in ((), [])})


@app.command()
@friendly
def evaluate(
    run: list[str] = typer.Argument(..., help="Run folders or run names under the runs root; plain files are skipped."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write PREFIX.csv (PREFIX-<task>.csv for each further task) and PREFIX.md.",
                                       show_default="<runs root>/evaluate"),
    as_json: bool = JsonOpt,
    runs: Optional[Path] = RunsOpt,
) -> None:
    """Compare runs, one table per task: test metrics on the original target scale (mean and 95 % interval over
    seeds; the paired difference to the best comparable run where both ran the same seeds)
    with dataset, target and transform, in the terminal, as CSV and as Markdown (the paths written go to
    stderr); --json prints the rows as a JSON list."""
    from pipeline import api

    prefix = out if out is not None else paths.runs_root(runs) / "evaluate"
    rows = api.evaluate(run, runs=runs, out=prefix, say=lambda m: console.print(m, highlight=False, markup=False))
    if as_json:
        return print_json(rows)
    for table in rows_tables(rows):
        results_console().print(table)


def comparison_tables(runs: list["Run"], width: int | None = None) -> list["Table"]:
    """Terminal view of runs, one table per task (stores and split are in the CSV)."""
    from pipeline.evaluate.compare import comparison_rows

    return rows_tables(comparison_rows(runs), width)


def rows_tables(all_rows: list[dict[str, Any]], width: int | None = None) -> list["Table"]:
    """Terminal view of comparison rows, one table per task, fitted to `width` (default: the
    results console's): ids fold, numbers are never cut (pipeline/cli/tables.py)."""
    from pipeline.cli.tables import fitted_tables
    from pipeline.evaluate.compare import (ablate_text, by_task, mean_text, paired_text, status_text, target_text,
                                           task_metrics)
    from pipeline.train import tasks

    width = width or results_console().width
    out = []
    for task, rows in by_task(all_rows).items():
        names = task_metrics(task)
        paired = any(r.get("paired_to_best") for r in rows)
        cells = [([r["run"], r["dataset"] or "—", target_text(r), r["head"], ablate_text(r), status_text(r)],
                  [mean_text(r, k, 3) for k in names] + ([paired_text(r, 3, short=True)] if paired else []))
                 for r in rows]
        crit = tasks.get(task).criterion.upper()
        out += fitted_tables(f"{task}: test metrics (original target scale), mean [95 % CI] over K seeds",
                             ["run", "dataset", "target", "head", "ablate", "K"],
                             [k.upper() for k in names] + ([f"best - run {crit} (wins, ~ noise)"] if paired else []),
                             cells, width)
    return out


class TrainWatch:
    """Live training progress: one line per validation evaluation (step, samples/s, latest and
    best metric, evaluations left before early stopping, ETA to max_steps), as a status line
    redrawn in place on a terminal and as plain lines otherwise; nothing with --quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.status = None

    def line(self, e: dict) -> str:
        from pipeline.core.progress import _clock

        metric = next((k for k in e if k.startswith("valid_")), "valid")
        value, best = e.get(metric), e.get("best")
        parts = [f"step {e['step']:,}"]
        if e.get("repeats", 1) > 1:
            parts.insert(0, f"repeat {e['repeat'] + 1}/{e['repeats']}")
        if e.get("samples_per_s"):
            parts.append(f"{e['samples_per_s']:,.0f} samples/s")
        parts.append(f"{metric.replace('_', ' ')} {value:.4f}" if value is not None else f"{metric} n/a")
        if best is not None:
            parts.append(f"best {best:.4f} at step {e.get('best_step', 0):,}")
        parts.append(f"{e.get('evals_left', '?')} evaluations left before stopping")
        if e.get("eta_seconds") is not None:
            parts.append(f"ETA {_clock(e['eta_seconds'])}")
        return " · ".join(parts)

    def __call__(self, entry: dict) -> None:
        if self.quiet:
            return
        if not self.live:
            console.print(self.line(entry), highlight=False, markup=False, soft_wrap=True)
            return
        if self.status is None:
            self.status = console.status("")
            self.status.start()
        self.status.update(self.line(entry))

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
