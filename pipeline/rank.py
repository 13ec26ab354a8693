"""`pipe rank`: which of a user's candidate posts would do best, before posting.

The candidates file (Parquet, CSV, JSONL) lists alternatives for one user: an image
and/or title/text, optionally `posted_at` (default: now) and `post_id` (default
`cand-1`, `cand-2`, ...). Each becomes that user's post at that time and is scored by
exactly `pipe score`'s path (pipeline/score.py `prepare` + `score_table`: ingested as its
own dataset, features extracted and cached with the run's extractors), so the order is
the order of the scores `pipe score` writes. Beside each score: the gain over the user's
mean target in the run's training part; when the user was never seen in training that
mean does not exist and the ranking rests on the content alone, which the report says.
Regression runs only: a ranking or embedding run has no score per post to order by.
"""
from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from pipeline.core.errors import NotApplicable, PipeError
from pipeline.core.io import atomic_write_bytes, parquet_bytes
from pipeline.data.raw import LINE
from pipeline.data.readers import read_raw
from pipeline.evaluate.report import run_posts, user_training_stats
from pipeline.run.rundir import load_run
from pipeline.train import tasks


@dataclass
class RankReport:
    table: pl.DataFrame  # rank, post_id, score, gain, unseen_user, missing_image, title, image
    user: str
    user_mean: float | None  # None: the user has no post in the run's training part
    user_posts: int
    dataset: str  # what the candidates were ingested as
    out: Path | None
    explained: Path | None  # the folder with rank.html and the maps


def _candidates_file(path: Path, user: str, folder: Path) -> Path:
    """The candidates as a posts file for ingest: user, ids and times filled in, relative
    image paths made absolute against the candidates file's folder."""
    raw = read_raw(path)
    df = raw.df.drop(LINE, strict=False)
    if df.height == 0:
        raise PipeError(f"{path}: no candidates")
    if "user_id" in df.columns:
        others = sorted({str(u) for u in df["user_id"].to_list() if u is not None and str(u) != user})
        if others:
            raise PipeError(f"{path}: candidates of other users ({', '.join(others[:5])}); rank one user's candidates")
    if not {"image", "title", "text"} & set(df.columns):
        raise PipeError(f"{path}: a candidate needs an image, title or text column; found {', '.join(df.columns)}")
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    df = df.with_columns(pl.lit(user).alias("user_id"))
    if "post_id" not in df.columns:
        df = df.with_columns(pl.Series("post_id", [f"cand-{i + 1}" for i in range(df.height)]))
    if "posted_at" not in df.columns:
        df = df.with_columns(pl.lit(now.isoformat()).alias("posted_at"))
    else:  # fill missing times with now, in the column's own type (text, timestamp or unix seconds)
        t = df.schema["posted_at"]
        fill = now.isoformat() if t == pl.String else now.timestamp() if t.is_numeric() else pl.lit(now).cast(t)
        df = df.with_columns(pl.col("posted_at").fill_null(fill))
    if "image" in df.columns and df.schema["image"] == pl.String:
        df = df.with_columns(pl.Series("image", [p if not p or Path(p).is_absolute() else str((raw.base / p).resolve())
                                                 for p in df["image"].to_list()], dtype=pl.String))
    out = folder / f"{path.stem}.parquet"
    df.write_parquet(out)
    return out


def rank(run_ref: str | Path, user: str, candidates: str | Path, out: str | Path | None = None,
         explain: str | Path | None = None, dataset: str | None = None, cache: str | Path | None = None,
         runs: str | Path | None = None, say: Callable[[str], None] = lambda m: None,
         **extract_options: Any) -> RankReport:
    """Score each candidate as `user`'s post, order by score (ties keep the file's order)."""
    from pipeline.score import dataset_name_for, prepare, score_table

    run = load_run(run_ref, runs)
    if not tasks.get(run.task).ranks_posts:
        raise NotApplicable(f"run {run.name} is a {run.task} run; pipe rank orders posts by a predicted score per post, "
                        "which only regression runs give")
    candidates = Path(candidates)
    with tempfile.TemporaryDirectory(prefix="pipe-rank-") as tmp:
        f = _candidates_file(candidates, user, Path(tmp))
        s = prepare(run.dir, f, dataset or f"rank-{dataset_name_for(candidates)}", cache, runs, say=say,
                    origin=("rank", str(candidates.resolve())), **extract_options)
    table, _ = score_table(s)
    posts = run_posts(s.run, cache)
    stats = user_training_stats(s.run.predictions(), posts).filter(pl.col("user_id") == user) \
        if posts is not None else pl.DataFrame()
    mean = float(stats["train_mean"][0]) if stats.height and not bool(s.unseen.all()) else None
    n = int(stats["n_train"][0]) if stats.height else 0
    shown = [c for c in ("title", "image") if c in s.data.posts.columns]
    ranked = table.join(s.data.posts.select("post_id", *shown), on="post_id", how="left", maintain_order="left") \
        .with_row_index("order").sort("score", "order", descending=[True, False]) \
        .with_columns(rank=pl.int_range(1, table.height + 1, dtype=pl.Int64),
                      gain=pl.col("score") - mean if mean is not None else pl.lit(None, pl.Float64)) \
        .select("rank", "post_id", "score", "gain", "unseen_user", "missing_image", *shown)
    if mean is None:
        say(f"user {user!r} was never seen in training: the ranking rests on the content alone")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, ranked.write_csv().encode() if out.suffix.lower() == ".csv" else parquet_bytes(ranked))
    folder = _explain(s, ranked, Path(explain), cache) if explain is not None else None
    return RankReport(ranked, user, mean, n, s.dataset, out, folder)


def _explain(s: Any, ranked: pl.DataFrame, folder: Path, cache: str | Path | None) -> Path:
    """Each candidate's attention maps, and rank.html: the candidates in rank order with them."""
    from pipeline.evaluate.report import page
    from pipeline.explain import explain_data, post_html

    order = {p: i for i, p in enumerate(ranked["post_id"].to_list())}
    done = sorted(explain_data(s.run, s.head, s.data, s.unseen, folder, cache), key=lambda e: order[e.post_id])
    body = "".join(post_html(e, folder, f"#{order[e.post_id] + 1}: {e.post_id}") for e in done)
    atomic_write_bytes(folder / "rank.html", page(f"pipe rank: {s.run.name}", body).encode())
    return folder
