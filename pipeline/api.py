"""The Python API: the command line's loop for notebooks and scripts.

    from pipeline import api

    api.ingest(df, "flickr")                          # a polars/pandas DataFrame or a posts file
    api.extract("flickr", "vgg16", image_size=224)    # extractor settings and run options as keywords
    api.extract("flickr", "tokens")
    run = api.train("flickr", "uhan", config={"max_steps": 200}, repeats=2)
    run.metrics["test"]["mse"]                        # metrics.json as a dict
    scores = run.predict(new_df)                      # post_id, score, unseen_user, missing_image
    st = api.open_store("flickr", "vgg16-pool5")      # read cached features

The `pipe` commands that do work (ingest, extract, train, evaluate, score) call the
function of the same name here, so the two cannot drift apart: same options, same
defaults, same errors (`PipeError`, which the CLI prints as one line). Heavy libraries are
imported by the functions that need them, so `from pipeline import api` is quick.
"""
from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.run.rundir import Run as _RunFolder
from pipeline.run.rundir import load_run as _load_run

if TYPE_CHECKING:
    import polars as pl

    from pipeline.data.ingest import IngestReport
    from pipeline.extract import ExtractReport
    from pipeline.score import ScoreReport
    from pipeline.store import FeatureStore

PathLike = str | Path
Say = Callable[[str], None]

__all__ = ["Run", "evaluate", "explain", "extract", "ingest", "load_run", "open_store", "rank", "report", "resume",
           "score", "train"]


def _quiet(_: str) -> None:
    pass


def _as_polars(df: Any) -> "pl.DataFrame":
    import polars as pl

    if isinstance(df, pl.DataFrame):
        return df
    if type(df).__module__.startswith("pandas"):
        return pl.from_pandas(df)
    raise PipeError(f"expected a polars or pandas DataFrame or a path, got {type(df).__name__}")


def _posts_file(posts: Any, folder: Path, name: str, base: PathLike | None) -> Path:
    """`posts` as a file to ingest: a path as it is, a DataFrame written to `folder` with its
    relative image paths made absolute against `base` (default: the working directory),
    since ingest resolves them against the file's own folder."""
    if isinstance(posts, (str, Path)):
        return Path(posts)
    import polars as pl

    df = _as_polars(posts)
    paths.check_name(name, "dataset name")  # it names the file written below, before ingest checks it
    if "image" in df.columns and df.schema["image"] == pl.String:
        root = Path(base) if base is not None else Path.cwd()
        df = df.with_columns(pl.Series("image", [p if not p or Path(p).is_absolute() else str((root / p).resolve())
                                                 for p in df["image"].to_list()], dtype=pl.String))
    f = folder / f"{name}.parquet"
    df.write_parquet(f)
    return f


def ingest(posts: Any, name: str, *, fmt: str = "auto", cache: PathLike | None = None, skip_invalid: bool = False,
           min_words: int | None = None, unlabelled: bool = False, split: str | None = None,
           base: PathLike | None = None, encoding: str | None = None, interactions: PathLike | None = None,
           follows: PathLike | None = None) -> "IngestReport":
    """Validate posts (a DataFrame or a file; see README "the posts contract") and write
    `<cache>/<name>/posts.parquet`, replacing an older table. Relative image paths of a
    DataFrame resolve against `base` (default: the working directory); `encoding` is that of
    a CSV or JSONL file (default UTF-8). `interactions` / `follows`: side-table files of the
    ranking task, validated against the posts and stored beside them (a re-ingest replaces them)."""
    from pipeline.data.ingest import ingest as ingest_file

    if min_words is not None and min_words < 0:
        raise PipeError(f"--min-words must be >= 0 (got {min_words})")
    with tempfile.TemporaryDirectory(prefix="pipe-ingest-") as tmp:
        f = _posts_file(posts, Path(tmp), name, base)
        return ingest_file(f, name, fmt, Path(cache) if cache is not None else None, skip_invalid=skip_invalid,
                           min_words=min_words, unlabelled=unlabelled, split=split, encoding=encoding,
                           interactions=Path(interactions) if interactions is not None else None,
                           follows=Path(follows) if follows is not None else None)


def extract(dataset: str, backbone: str, *, config: Mapping[str, Any] | None = None, cache: PathLike | None = None,
            **opts: Any) -> "ExtractReport":
    """Extract every post of `dataset` not yet in the backbone's store. Keywords that are run
    options (`batch_size`, `shard_size`, `device`, `num_workers`, `retry_failed`, `wait`,
    `quiet`, `decode`, `amp`, `dask_workers`, `scheduler`) say how to run; every other keyword
    (and `config`) is an extractor setting (`layer`, `image_size`, `weights`, `max_features`,
    ...) and changes the extractor id."""
    from pipeline.data.contract import load_posts
    from pipeline.extract import RunOptions, build_extractor, run_extract
    from pipeline.extract import noop

    run_keys = {f.name for f in dataclasses.fields(RunOptions)}
    settings = {**(config or {}), **{k: v for k, v in opts.items() if k not in run_keys}}
    run_opts = {k: v for k, v in opts.items() if k in run_keys}
    posts = functools.cache(lambda: load_posts(dataset, cache))  # read once, and only when needed
    key = noop.request_key(backbone, settings)  # nothing new to extract: done without the extractor (torch)
    done = noop.nothing_new(dataset, backbone, key, cache, RunOptions(**{k: v for k, v in run_opts.items()
                                                                         if v is not None}), posts)
    if done is not None:
        return done
    ex = build_extractor(backbone, **settings)  # a bad setting is said before a missing dataset
    report = run_extract(dataset, ex, cache=cache, posts=posts(), **run_opts)
    noop.remember(dataset, cache, key, ex, report.extractor_id)
    return report


class Run(_RunFolder):
    """A run folder (`runs/<name>/`): `config`, `metrics` (None until it finished),
    `predictions()`, and `predict` for new posts."""

    @classmethod
    def load(cls, ref: PathLike, runs: PathLike | None = None) -> "Run":
        """A run by folder, or by name under the runs root."""
        r = _load_run(ref, runs)
        return cls(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})

    def predict(self, posts: Any, *, dataset: str | None = None, cache: PathLike | None = None,
                base: PathLike | None = None, say: Say = _quiet, **options: Any) -> Any:
        """Scores of `posts` (a DataFrame or a file) exactly as `pipe score` computes them:
        one row per post with post_id, score, unseen_user, missing_image; the same frame type
        as given (polars for a file). The posts are ingested as dataset `dataset` (default
        `<run name>-predict`) under `cache` (default: the run's), so their features are cached
        and a repeated call extracts nothing; the run's own dataset is never touched. Options
        are `pipe score`'s: `fmt`, `device`, `batch_size`, `num_workers`, `quiet`, ..."""
        import polars as pl

        name = dataset or f"{self.name}-predict"
        root = cache if cache is not None else self.config.get("cache")
        with tempfile.TemporaryDirectory(prefix="pipe-predict-") as tmp:
            out = Path(tmp) / "scores.parquet"
            source = str(Path(posts).resolve()) if isinstance(posts, (str, Path)) else "(in-memory posts)"
            score(self.dir, _posts_file(posts, Path(tmp), name, base), out, dataset=name, cache=root, say=say,
                  origin=("predict", source), **options)
            table = pl.read_parquet(out)
        return table if isinstance(posts, (str, Path, pl.DataFrame)) else table.to_pandas()


def load_run(ref: PathLike, runs: PathLike | None = None) -> Run:
    """A run by folder, or by name under the runs root (`$PIPE_RUNS` or ./runs)."""
    return Run.load(ref, runs)


def train(dataset: str, head: str, *, config: Mapping[str, Any] | None = None, ablate: Iterable[str] | str = (),
          visual: str | None = None, text: str | None = None, say: Say = _quiet,
          watch: Callable[[dict[str, Any]], None] | None = None, task_config: Mapping[str, Any] | None = None,
          **opts: Any) -> Run:
    """Train `head` on `dataset`'s cached features into a new run folder and return it.
    `config` holds `--set`'s keys with typed values: head settings (`{"lr": 1e-3}`, as
    `--set lr=0.001`), run settings (`device`, `threads`), fine-tuning's, and the task's
    aliases (`negatives`, `window`, `window_scope`, `tags` go to the task); `task_config` the
    task's (`{"candidates": 5}`, as `--task-set candidates=5`); `visual`, `text`
    or `stores={"role": id}` choose stores; other keywords are `pipe train`'s options:
    `split`, `repeats`, `name` (of the run), `runs`, `cache`, `scheduler`, `dask_workers`, `target`,
    `target_transform`, `min_target`, `finetune` (with `weights`, `image_size`), ...
    `watch(entry)` sees each validation evaluation as it happens (step, metric, best, ETA)."""
    from pipeline.run.train import TrainOptions
    from pipeline.run.train import train as run_training

    stores = dict(opts.pop("stores", None) or {})
    stores.update({role: ref for role, ref in (("visual", visual), ("text", text)) if ref})
    ablate = [ablate] if isinstance(ablate, str) else list(ablate)
    valid = [f.name for f in dataclasses.fields(TrainOptions) if f.name not in ("dataset", "head", "stores", "sets",
                                                                                "ablate", "task_sets")]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise PipeError(f"train() got unknown option(s) {', '.join(unknown)}; options: config, task_config, ablate, "
                        f"visual, text, stores, {', '.join(valid)}")
    run_dir = run_training(TrainOptions(dataset=dataset, head=head, stores=stores, sets=dict(config or {}), ablate=ablate,
                                        task_sets=dict(task_config or {}), **opts),
                           say=say, watch=watch)
    return Run.load(run_dir)


def resume(run: PathLike, *, runs: PathLike | None = None, say: Say = _quiet,
           watch: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Continue a stopped `train` run (Ctrl-C, SIGTERM, a killed process) from its last
    checkpoint to the result an uninterrupted run reaches; the run, finished."""
    from pipeline.run.resume import resume as resume_run

    return Run.load(resume_run(run, runs, say=say, watch=watch))


def dry_run(dataset: str, head: str, *, say: Say = _quiet, **opts: Any) -> list[str]:
    """`pipe train --dry-run`: prepare, fit one batch (a torch head), validate, predict, save,
    reload and evaluate in a temporary folder that is removed; one line per thing checked.
    Keywords are `train`'s TrainOptions fields (stores, split, sets, task_sets, cache, ...)."""
    from pipeline.evaluate.compare import comparison_rows
    from pipeline.run.dryrun import dry_run_fit
    from pipeline.run.train import TrainOptions

    with tempfile.TemporaryDirectory(prefix="pipe-dry-run-") as tmp:
        run_dir, checked = dry_run_fit(TrainOptions(dataset=dataset, head=head, runs=tmp, name="dry-run", **opts), say)
        run = Run.load(run_dir)
        run.load_head()
        checked.append(f"loaded the saved model back ({run.head})")
        row = comparison_rows([run])[0]
        c = run.config["task"]["criterion"] if isinstance(run.config.get("task"), dict) else None
        shown = {k: row[k] for k in row if k == c or k == f"test_{c}"} if c else {}
        checked.append(f"evaluated the run: a {row['task']} row on {row['dataset']}"
                       + (f" ({', '.join(f'{k} {v:.4f}' for k, v in shown.items() if isinstance(v, float))})"
                          if shown else ""))
    return checked


def evaluate(refs: Iterable[PathLike | _RunFolder], *, runs: PathLike | None = None, out: PathLike | None = None,
             say: Say = _quiet) -> list[dict[str, Any]]:
    """One comparison row per run (dataset, task, target, target transform, never_improved,
    test metrics on the original target scale, mean and std over repeats); also writes
    OUT.csv (OUT-<task>.csv for each further task) and OUT.md when `out` is given, saying every path. Plain files among `refs` are skipped (a
    `runs/*` glob catches `runs/evaluate.csv`)."""
    from pipeline.evaluate.compare import comparison_rows, write_comparison

    folders = _run_folders(refs, runs, say)
    for run in folders:
        for line in run.store_changes():
            say(line)
    rows = comparison_rows(folders)
    if out is not None:
        written = write_comparison(rows, out)
        say(f"wrote {', '.join(map(str, written[:-1]))} and {written[-1]}")
    return rows


def _run_folders(refs: Iterable[PathLike | _RunFolder], runs: PathLike | None, say: Say) -> list[_RunFolder]:
    loaded = []
    for ref in refs:
        if isinstance(ref, _RunFolder):
            loaded.append(ref)
        elif Path(ref).is_file():
            say(f"skipping {ref}: a file, not a run folder")
        else:
            loaded.append(load_run(ref, runs))
    if not loaded:
        raise PipeError("no run folders among the arguments")
    return loaded


def report(refs: Iterable[PathLike | _RunFolder], *, out: PathLike = "report.html", runs: PathLike | None = None,
           cache: PathLike | None = None, say: Say = _quiet) -> Path:
    """`pipe report`: one self-contained HTML page (tables per task, plots per run) at OUT."""
    from pipeline.evaluate.report import write_report

    path = write_report(_run_folders(refs, runs, say), out, cache)
    say(f"wrote {path}")
    return path


def explain(run: PathLike | _RunFolder, posts: Iterable[str], **opts: Any) -> list[Any]:
    """`pipe explain`: attention maps (PNG + JSON) of posts of the run's dataset, or of
    `posts_file=`; options `out`, `html`, `dataset`, `cache`, `runs`, `say`, extraction's."""
    from pipeline.explain import explain as explain_posts

    return explain_posts(run.dir if isinstance(run, _RunFolder) else run, list(posts), **opts)


def rank(run: PathLike | _RunFolder, user: str, candidates: PathLike, **opts: Any) -> Any:
    """`pipe rank`: `user`'s candidate posts ordered by the run's predicted score (a RankReport);
    options `out`, `explain` (a folder for maps and rank.html), `dataset`, `cache`, `runs`, `say`."""
    from pipeline.rank import rank as rank_candidates

    return rank_candidates(run.dir if isinstance(run, _RunFolder) else run, user, candidates, **opts)


def score(run: PathLike | _RunFolder, posts: PathLike, out: PathLike, **opts: Any) -> "ScoreReport":
    """`pipe score`: ingest a posts file as its own dataset, extract what is not cached with
    the run's exact extractors, predict and write OUT (post_id, score, unseen_user,
    missing_image). Options: `dataset`, `cache`, `runs`, `fmt`, `say` and extraction's
    `device`, `batch_size`, `num_workers`, `quiet`, ..."""
    from pipeline.score import score as score_file

    return score_file(run.dir if isinstance(run, _RunFolder) else run, posts, out, **opts)


def open_store(dataset: str, extractor: str, cache: PathLike | None = None) -> "FeatureStore":
    """A feature store for reading: `extractor` is a full id or a unique prefix (`vgg16-pool5`)."""
    from pipeline.store import open_store as open_feature_store

    return open_feature_store(dataset, extractor, cache)
