"""`pipe ingest`: read, validate and write `<cache>/<name>/posts.parquet` atomically.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.core import paths
from pipeline.core.errors import PipeError, PostsError
from pipeline.core.io import atomic_write_bytes, hold_lock, parquet_bytes, remove_stale_temps
from pipeline.data.contract import REJECTED, SIDE_TABLES, _to_str, normalise, post_text
from pipeline.data.raw import LINE, RawPosts
from pipeline.data.readers import read_raw

_MAX_LISTED = 20  # problems listed in one error message
ORIGIN = "origin.json"  # beside posts.parquet: the command that made the dataset and its posts file
INGEST_LOCK = ".ingest.lock"  # beside posts.parquet: held by the one ingest replacing the dataset


@dataclass
class IngestReport:
    """What `ingest` wrote."""
    rows: int  # posts in the written table
    rejected: int  # invalid rows left out (only with skip_invalid)
    dropped_min_words: int  # valid posts dropped by min_words
    path: Path  # the posts table written
    rejected_path: Path | None = None  # rejected rows with reasons (skip_invalid only)
    replaced: dict[str, int] | None = None  # on re-ingest: posts added / removed / changed vs the old table
    set_aside: Path | None = None  # an old table that could not be read, moved here instead of deleted
    side: dict[str, int] | None = None  # side tables written (interactions, follows) -> rows
    side_rejected: dict[str, Path] | None = None  # side table -> its rejected rows (skip_invalid only)
    side_removed: list[str] | None = None  # side tables of an earlier ingest not given again, removed

def _describe(raw: RawPosts, problems: pl.DataFrame) -> str:
    """The error message: file, how many rows, then one line per problem (capped)."""
    nrows = problems["line"].n_unique()
    lines = [f"{raw.source}: {nrows} invalid row(s); fix them or ingest the rest with --skip-invalid:"]
    for r in problems.head(_MAX_LISTED).iter_rows(named=True):
        where = f"{raw.row_word} {r['line']}" + (f" (post_id {r['post_id']!r})" if r["post_id"] is not None else "")
        val = f", value {r['value']!r}" if r["value"] is not None else ""
        lines.append(f"  column {r['column']}: {r['reason']}: {where}{val}")
    if problems.height > _MAX_LISTED:
        lines.append(f"  ... and {problems.height - _MAX_LISTED} more problem(s)")
    return "\n".join(lines)


def _rejected_rows(raw: RawPosts, problems: pl.DataFrame) -> pl.DataFrame:
    """One row per rejected input row: line, reasons, and the raw values as strings."""
    reasons = (problems.with_columns(reason=pl.col("column") + ": " + pl.col("reason"))
               .group_by("line", maintain_order=True).agg(pl.col("reason").str.join("; ")))
    values = raw.df.select([_to_str(raw.df[c]).alias(c) for c in raw.df.columns if c != LINE] + [pl.col(LINE).alias("line")])
    return reasons.join(values, on="line", how="left").rename({"line": raw.row_word})

def _read(path: Path, fmt: str, unlabelled: bool, split: str | None,
          encoding: str | None = None) -> tuple[RawPosts, pl.DataFrame, pl.DataFrame]:
    raw = read_raw(Path(path), fmt, split, encoding=encoding)
    table, problems = normalise(raw, unlabelled=unlabelled)
    return raw, table, problems


def read_posts_file(path: Path, fmt: str = "auto", *, unlabelled: bool = False, split: str | None = None,
                    encoding: str | None = None) -> pl.DataFrame:
    """Read, normalise and validate strictly: the contract table, or PostsError naming every problem."""
    raw, table, problems = _read(path, fmt, unlabelled, split, encoding)
    if problems.height:
        raise PostsError(_describe(raw, problems))
    return table


def count_words(df: pl.DataFrame) -> pl.Series:
    """Words (runs of letters/digits) in title + text, the count --min-words compares against."""
    return pl.Series("words", post_text(df)).str.count_matches(r"\w+")


def ingest(path: Path, name: str, fmt: str = "auto", cache: Path | None = None, skip_invalid: bool = False,
           min_words: int | None = None, *, unlabelled: bool = False, split: str | None = None,
           encoding: str | None = None, interactions: Path | None = None, follows: Path | None = None,
           origin: tuple[str, str] | None = None) -> IngestReport:
    """Validate a posts file and write `<cache>/<name>/posts.parquet` atomically, replacing any old table.

    The new table is written before `rejected.parquet` changes; an old table that cannot be
    read is set aside (renamed), never a reason to fail; temp files of killed ingests go.
    Side tables (`interactions`, `follows`; pipeline/data/sidetables.py) are validated
    against the new posts before anything is written; a re-ingest replaces them, and removes
    those of the earlier ingest not given again (they described the old posts).
    `origin` (command, posts file) is recorded in `origin.json` (default: `ingest` and `path`),
    so `pipe score`/`rank` can refuse a dataset they did not make (`claim_dataset`).
    """
    dest = paths.posts_path(name, cache)  # the name is checked before anything is read or written
    raw, table, problems = _read(path, fmt, unlabelled, split, encoding)
    if problems.height and not skip_invalid:
        raise PostsError(_describe(raw, problems))
    dropped = 0
    if min_words is not None:
        keep = count_words(table) >= min_words
        dropped = int((~keep).sum())
        table = table.filter(keep)
    if table.height == 0:
        raise PostsError(f"{raw.source}: no posts left to ingest ({problems['line'].n_unique()} invalid, {dropped} below --min-words)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One ingest of a name at a time, for the whole replace: posts, rejected rows, side tables
    # and origin always come from the same ingest.
    lock = hold_lock(dest.with_name(INGEST_LOCK), f"dataset {name!r} is being ingested by another command; "
                                                  "run again when it ends")
    try:
        remove_stale_temps(dest.parent)
        rejected_path = dest.with_name(REJECTED)
        table = table.sort("posted_at", "post_id")
        sides = _read_side_tables(table, {"interactions": interactions, "follows": follows}, skip_invalid, encoding)
        replaced, set_aside = _old_table(dest, table)
        atomic_write_bytes(dest, parquet_bytes(table))
        if skip_invalid:
            atomic_write_bytes(rejected_path, parquet_bytes(_rejected_rows(raw, problems)))
        else:
            rejected_path.unlink(missing_ok=True)
        written, side_rejected, removed = _write_side_tables(dest.parent, sides, skip_invalid)
        command, source = origin or ("ingest", str(Path(path).resolve()))
        atomic_write_bytes(dest.with_name(ORIGIN), json.dumps({"command": command, "posts": source}).encode())
    finally:
        os.close(lock)
    return IngestReport(rows=table.height, rejected=problems["line"].n_unique(), dropped_min_words=dropped,
                        path=dest, rejected_path=rejected_path if skip_invalid else None, replaced=replaced,
                        set_aside=set_aside, side=written or None, side_rejected=side_rejected or None,
                        side_removed=removed or None)


def read_origin(name: str, cache: Path | None = None) -> dict | None:
    """The dataset's `origin.json` ({command, posts}), or None (made before origins were recorded)."""
    try:
        d = json.loads(paths.posts_path(name, cache).with_name(ORIGIN).read_bytes())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def claim_dataset(name: str, cache: Path | None, command: str, source: str, overwrite: bool = False) -> None:
    """Refuse, naming it, to replace dataset `name` unless `command` made it from `source`
    (re-scoring the same file into the dataset it made before) or `overwrite` says so."""
    if overwrite or not paths.posts_path(name, cache).exists():
        return
    made = read_origin(name, cache)
    if made == {"command": command, "posts": source}:
        return
    how = (f"made by `pipe {made.get('command')}` from {made.get('posts')}" if made
           else "made by another command (it records no origin)")
    raise PipeError(f"dataset {name!r} exists, {how}; `pipe {command}` of {source} would replace its posts: pass "
                    "--dataset with another name, or --overwrite-dataset to replace it on purpose")


def _read_side_tables(posts: pl.DataFrame, files: dict[str, Path | None], skip_invalid: bool,
                      encoding: str | None) -> dict[str, tuple[RawPosts, pl.DataFrame, pl.DataFrame]]:
    """Each given side table, validated against `posts`; PostsError naming rows unless skip_invalid."""
    from pipeline.data.sidetables import read_side_table

    out = {}
    for kind, f in files.items():
        if f is not None:
            raw, side, problems = read_side_table(Path(f), kind, posts, encoding)
            if problems.height and not skip_invalid:
                raise PostsError(f"{kind} table " + _describe(raw, problems))
            out[kind] = (raw, side, problems)
    return out


def _write_side_tables(folder: Path, sides: dict[str, tuple[RawPosts, pl.DataFrame, pl.DataFrame]],
                       skip_invalid: bool) -> tuple[dict[str, int], dict[str, Path], list[str]]:
    """Write `<kind>.parquet` (+ `<kind>.rejected.parquet`) atomically; remove side tables not given."""
    written, rejected, removed = {}, {}, []
    for kind in SIDE_TABLES:
        path, rej = folder / f"{kind}.parquet", folder / f"{kind}.rejected.parquet"
        if kind not in sides:
            if path.exists():
                removed.append(kind)
            path.unlink(missing_ok=True)
            rej.unlink(missing_ok=True)
            continue
        raw, table, problems = sides[kind]
        atomic_write_bytes(path, parquet_bytes(table))
        written[kind] = table.height
        if skip_invalid and problems.height:
            atomic_write_bytes(rej, parquet_bytes(_rejected_rows(raw, problems)))
            rejected[kind] = rej
        else:
            rej.unlink(missing_ok=True)
    return written, rejected, removed


def _old_table(dest: Path, new: pl.DataFrame) -> tuple[dict[str, int] | None, Path | None]:
    """(diff vs the old table, None) or, when the old table is unreadable, (None, where it was moved)."""
    if not dest.exists():
        return None, None
    try:
        return _diff(pl.read_parquet(dest), new), None
    except Exception:  # a damaged table (polars raises several types): keep it for inspection, out of the way
        aside = dest.with_name(f"{dest.stem}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}{dest.suffix}")
        os.replace(dest, aside)
        return None, aside


def _diff(old: pl.DataFrame, new: pl.DataFrame) -> dict[str, int]:
    """Posts added, removed and changed (any column) between two tables."""
    def keyed(df: pl.DataFrame) -> pl.DataFrame:
        return df.select("post_id", h=df.select(sorted(df.columns)).hash_rows(seed=0))
    both = keyed(old).join(keyed(new), on="post_id", how="full", coalesce=True)
    return {"added": int(both["h"].is_null().sum()), "removed": int(both["h_right"].is_null().sum()),
            "changed": int((both["h"] != both["h_right"]).sum())}
