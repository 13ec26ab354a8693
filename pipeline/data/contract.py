"""The posts contract: every reader produces one normalised, validated table.

Columns (dtypes in `CONTRACT`): post_id (unique), user_id, posted_at (UTC), image (absolute
path, a relative one resolved against the folder of the ingested file), title, text,
tags, category / subcategory / concept, score, labels (ground-truth classes of the
embedding task, a list like tags but distinct from them), plus any numeric `user_*`
columns and any other numeric column (retweets, likes: regression targets with
`--target`; not `views`, which becomes the score; `days`, the time online, is kept as an
input), as Float64. Required: post_id, user_id, posted_at and a score, or views + days to compute
it as log2(views / days + 1); everything else may be missing or entirely null. A file
without labels (posts to score) is accepted with `unlabelled=True`: its score may be null.
Bounds: a score beyond ±COUNT_LIMIT (1e15), views or days beyond it, and any other numeric
column beyond float32 (or infinite) are refused naming rows and column; an explicit NaN score
is refused, never replaced by the views/days formula (an empty cell is).

Timestamps may be ISO 8601 strings, datetimes or unix seconds (ints, floats or numeric
strings); naive ones are UTC. Tags may be a list or one string split on commas, spaces
and JSON brackets. Column names are matched case-insensitively; unknown non-numeric
columns are dropped. Why strict by default: a silently dropped or mangled post shifts every later
metric, so every problem is named (file, rows, columns) and `skip_invalid` is opt-in.

"""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from pipeline.core import paths
from pipeline.core.errors import IntegrityError, PipeError, PostsError, did_you_mean
from pipeline.data.raw import LINE, RawPosts

UTC_US = pl.Datetime("us", "UTC")
CONTRACT: dict[str, pl.DataType] = {
    "post_id": pl.Utf8, "user_id": pl.Utf8, "posted_at": UTC_US, "image": pl.Utf8,
    "title": pl.Utf8, "text": pl.Utf8, "tags": pl.List(pl.Utf8), "category": pl.Utf8,
    "subcategory": pl.Utf8, "concept": pl.Utf8, "score": pl.Float64, "labels": pl.List(pl.Utf8),
}
REQUIRED = ("post_id", "user_id", "posted_at")
REJECTED = "rejected.parquet"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MIN_S, _MAX_S = -62135596800.0, 253402300799.0  # years 1 .. 9999
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
COUNT_LIMIT = 1e15  # |score|, views and days beyond this are refused: no platform counts that high
FLOAT32_MAX = 3.4028234663852886e38  # other numeric columns (features, --target) are trained as float32

# --------------------------------------------------------------------------- parsing

def _seconds_to_ts(f: pl.Series) -> pl.Series:
    ok = f.is_finite() & (f >= _MIN_S) & (f <= _MAX_S)
    us = pl.select(pl.when(ok).then((f * 1e6).round()).cast(pl.Int64)).to_series()
    return us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _parse_one(v: str) -> int | None:
    """One timestamp string -> microseconds since the epoch (None when unparsable)."""
    v = v.strip()
    if _NUMBER.fullmatch(v):
        f = float(v)
        return round(f * 1e6) if _MIN_S <= f <= _MAX_S else None
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        return None
    d = d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return (d - _EPOCH) // timedelta(microseconds=1)


def parse_timestamps(s: pl.Series) -> pl.Series:
    """Any accepted timestamp form -> Datetime(us, UTC); null where it cannot be parsed."""
    dt = s.dtype
    if isinstance(dt, pl.Datetime):
        s = s.dt.replace_time_zone("UTC") if dt.time_zone is None else s.dt.convert_time_zone("UTC")
        return s.dt.cast_time_unit("us")
    if dt == pl.Date:
        return s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dt.is_numeric():
        return _seconds_to_ts(s.cast(pl.Float64))
    if dt == pl.Utf8:
        v = s.str.strip_chars()
        # vectorised common forms first; whatever is left goes through datetime.fromisoformat
        out = _seconds_to_ts(v.cast(pl.Float64, strict=False).fill_null(float("nan")))
        for fmt in _ISO_AWARE:
            out = out.fill_null(v.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC"))
        for fmt in _ISO_NAIVE:
            out = out.fill_null(v.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC"))
        left = out.is_null() & v.is_not_null()
        if left.any():
            us = [_parse_one(x) if todo else None for x, todo in zip(v.to_list(), left.to_list())]
            out = out.fill_null(pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        return out.alias(s.name)
    return pl.Series(s.name, [None] * len(s), dtype=UTC_US)


def _to_str(s: pl.Series) -> pl.Series:
    """Strings as given (numbers written out), stripped; empty -> null."""
    if s.dtype.is_nested() or s.dtype == pl.Object:
        s = pl.Series(s.name, [None if v is None else str(v) for v in s.to_list()], dtype=pl.Utf8)
    s = s.cast(pl.Utf8).str.strip_chars()
    return pl.select(pl.when(s != "").then(s)).to_series().alias(s.name)


def _to_float(s: pl.Series) -> pl.Series:
    """Numbers (strings, ints, bools) -> Float64, NaN -> null; unparsable -> null."""
    if s.dtype == pl.Utf8:
        s = s.str.strip_chars()
    out = s.cast(pl.Float64, strict=False) if not s.dtype.is_nested() else pl.Series([None] * len(s), dtype=pl.Float64)
    return out.fill_nan(None).alias(s.name)


def _to_tags(s: pl.Series) -> pl.Series:
    if isinstance(s.dtype, pl.List):
        return s.cast(pl.List(pl.Utf8), strict=False)
    return _to_str(s).str.extract_all(r"[^,\s\[\]\"']+")


def _resolve_images(s: pl.Series, base: Path) -> pl.Series:
    """Relative paths -> absolute against `base`; absolute paths and URLs unchanged."""
    s = _to_str(s)
    rel = ~s.str.starts_with("/") & ~s.str.contains(_URL.pattern)
    joined = pl.select(pl.when(rel).then(pl.lit(str(base.absolute()).rstrip("/") + "/") + s).otherwise(s)).to_series()
    messy = (rel & joined.str.contains(r"(^|/)\.\.?(/|$)|//")).fill_null(False)  # ./ ../ // need normpath
    if messy.any():
        joined = pl.Series([os.path.normpath(p) if m else p for p, m in zip(joined.to_list(), messy.to_list())], dtype=pl.Utf8)
    return joined.alias("image")


# ------------------------------------------------------------------------ normalise

def _structural_checks(raw: RawPosts, unlabelled: bool) -> None:
    cols = raw.df.columns
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise PostsError(f"{raw.source}: missing required column(s) {', '.join(missing)} "
                         f"(columns found: {', '.join(c for c in cols if c != LINE) or 'none'})")
    if "score" not in cols and not {"views", "days"} <= set(cols) and not unlabelled:
        raise PostsError(f"{raw.source}: no 'score' column and no 'views' + 'days' to compute it from "
                         f"(columns found: {', '.join(c for c in cols if c != LINE)}); "
                         "a file of posts without labels needs --unlabelled")
    if raw.df.height == 0 and not raw.errors:
        raise PostsError(f"{raw.source}: contains no posts")


def flagger(df: pl.DataFrame, pid: pl.Series, errs: list[pl.DataFrame]):
    """`flag(mask, column, reason[, value])`: append one problem row (line, post_id, column,
    reason, value) to `errs` per row of `df` where mask is true (the posts and side-table checks)."""
    line = df[LINE]  # looked up once: a lookup by name scans the column names

    def flag(mask: pl.Series, column: str, reason: str | pl.Series, value: pl.Series | None = None) -> None:
        mask = mask.fill_null(False)
        if mask.any():
            v = _to_str(value) if value is not None else pl.Series([None] * len(line), dtype=pl.Utf8)
            errs.append(pl.DataFrame({"line": line, "post_id": pid, "column": column,
                                      "reason": reason, "value": v}).filter(mask))
    return flag


def normalise(raw: RawPosts, unlabelled: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(contract table of the valid rows, one row per problem: line, post_id, column, reason, value)."""
    _structural_checks(raw, unlabelled)
    df = raw.df
    errs: list[pl.DataFrame] = []
    pid = _to_str(df["post_id"]).alias("post_id")
    flag = flagger(df, pid, errs)

    out: dict[str, pl.Series] = {"post_id": pid}
    flag(pid.is_null(), "post_id", "missing post id")
    first_line = df.select(pl.col(LINE).first().over(pid)).to_series()
    dup_reason = pl.select(pl.format(f"duplicate post id (first at {raw.row_word} {{}})", first_line)).to_series()
    flag(pid.is_not_null() & (first_line != df[LINE]), "post_id", dup_reason)
    out["user_id"] = _to_str(df["user_id"]).alias("user_id")
    flag(out["user_id"].is_null(), "user_id", "missing user id")
    ts = parse_timestamps(df["posted_at"]).alias("posted_at")
    given = _to_str(df["posted_at"])
    flag(given.is_null(), "posted_at", "missing timestamp")
    flag(given.is_not_null() & ts.is_null(), "posted_at", "unparsable timestamp", df["posted_at"])
    out["posted_at"] = ts
    out["image"] = _resolve_images(df["image"], raw.base) if "image" in df.columns else None
    for c in ("title", "text", "category", "subcategory", "concept"):
        out[c] = _to_str(df[c]).alias(c) if c in df.columns else None
    out["tags"] = _to_tags(df["tags"]).alias("tags") if "tags" in df.columns else None
    out["labels"] = _to_tags(df["labels"]).alias("labels") if "labels" in df.columns else None

    score = _to_float(df["score"]) if "score" in df.columns else pl.Series([None] * df.height, dtype=pl.Float64)
    if "score" in df.columns:
        flag(_to_str(df["score"]).is_not_null() & score.is_null() & ~_is_nan(df["score"]),
             "score", "score is not a number", df["score"])
        flag(~score.is_finite(), "score", "score is infinite", df["score"])
        flag(score.is_finite() & (score.abs() > COUNT_LIMIT), "score", f"score beyond ±{COUNT_LIMIT:g}", df["score"])
    if {"views", "days"} <= set(df.columns):
        views, days = _to_float(df["views"]), _to_float(df["days"])
        for name, s in (("views", views), ("days", days)):
            flag(_to_str(df[name]).is_not_null() & s.is_null() & ~_is_nan(df[name]), name, f"{name} is not a number", df[name])
            flag(s < 0, name, f"negative {name}", df[name])
            flag(s > COUNT_LIMIT, name, f"{name} beyond {COUNT_LIMIT:g} (infinite or absurd)", df[name])
        if "score" in df.columns:  # an explicit NaN is a value, never silently replaced by the formula
            flag(_is_nan(df["score"]), "score", "score is NaN (leave it empty to compute it from views and days)",
                 df["score"])
        need = score.is_null()
        flag(need & (days == 0), "days", "days is 0: score = log2(views / days + 1) is undefined", df["days"])
        computed = pl.select((views / days + 1).log(2)).to_series()
        score = pl.select(pl.coalesce(score, pl.when(days > 0).then(computed))).to_series()
    if not unlabelled:
        cols = "score" if "score" in df.columns else "views, days"
        flag(score.is_null(), cols, "missing score (null or NaN)")
    out["score"] = score.alias("score")
    # Columns by name from one dict: polars finds a column by name with a scan of the names, so
    # `df[c]` per column costs columns^2 on a wide file (10^5 columns, issue 20).
    by_name = dict(zip(df.columns, df.get_columns()))
    for c, given in by_name.items():
        if c.startswith("user_") and c != "user_id":
            f = _to_float(given)
            flag(_to_str(given).is_not_null() & f.is_null() & ~_is_nan(given), c, "user_* columns must be numeric", given)
            _flag_out_of_float32(flag, f, c, given)
            out[c] = f.alias(c)
    for c, given in by_name.items():  # any other numeric column is kept (a possible --target; `days` online: hours)
        if c not in out and c not in (LINE, "views") and c not in CONTRACT and _is_numeric(given):
            out[c] = _to_float(given).alias(c)
            _flag_out_of_float32(flag, out[c], c, given)

    n = df.height
    table = pl.DataFrame([
        (s if s is not None else pl.Series(c, [None] * n, dtype=CONTRACT[c])).cast(CONTRACT.get(c, pl.Float64))
        for c, s in out.items()
    ]).select(*CONTRACT, *(c for c in out if c not in CONTRACT))
    problems = pl.concat(errs) if errs else pl.DataFrame(schema={"line": pl.Int64, "post_id": pl.Utf8, "column": pl.Utf8, "reason": pl.Utf8, "value": pl.Utf8})
    problems = pl.concat([raw.errors_frame(), problems.with_columns(pl.col("line").cast(pl.Int64))])
    bad = df[LINE].is_in(problems["line"].implode())
    return table.filter(~bad), problems.sort("line", maintain_order=True)


def _flag_out_of_float32(flag, f: pl.Series, column: str, given: pl.Series) -> None:
    """A feature or possible target that training (float32) would turn into inf: refused at ingest,
    naming it, instead of a library's traceback (or "non-finite predictions") at train time."""
    flag(~f.is_finite() | (f.abs() > FLOAT32_MAX), column, "infinite, or beyond float32 (±3.4e38)", given)


def _is_numeric(s: pl.Series) -> bool:
    """A numeric column, or a string column whose every non-empty value is a number."""
    if s.dtype.is_numeric():
        return True
    if s.dtype != pl.Utf8:
        return False
    v = s.str.strip_chars().filter(s.str.strip_chars() != "").drop_nulls()
    return len(v) > 0 and v.cast(pl.Float64, strict=False).null_count() == 0


def _is_nan(s: pl.Series) -> pl.Series:
    if s.dtype.is_float():
        return s.is_nan().fill_null(False)
    if s.dtype == pl.Utf8:
        return s.str.strip_chars().str.to_lowercase().is_in(["nan"]).fill_null(False)
    return pl.Series([False] * len(s))

def load_posts(dataset: str, cache: Path | None = None) -> pl.DataFrame:
    """The ingested table of a dataset, sorted by (posted_at, post_id)."""
    p = paths.posts_path(dataset, cache)
    if not p.exists():
        raise PipeError(f"dataset {dataset!r} has no posts table ({p} not found)"
                        f"{did_you_mean(dataset, paths.dataset_names(cache))}; run `pipe ingest PATH --name {dataset}` "
                        "first (`pipe list datasets` lists them)")
    try:
        return pl.read_parquet(p).sort("posted_at", "post_id")
    except Exception as e:  # a damaged table: polars raises several types
        raise IntegrityError(f"{p}: unreadable posts table ({type(e).__name__}); ingest the dataset again "
                             f"(`pipe ingest PATH --name {dataset}` sets the damaged table aside)") from None


def post_text(df: pl.DataFrame) -> list[str]:
    """title + " " + text per row (null -> ""), stripped: the text every text extractor reads."""
    s = pl.concat_str([pl.col("title").fill_null(""), pl.col("text").fill_null("")], separator=" ").str.strip_chars()
    return df.select(s).to_series().to_list()


def user_feature_columns(df: pl.DataFrame) -> list[str]:
    """The numeric user features (`user_*` Float64 columns, not user_id)."""
    return [c for c, t in df.schema.items() if c.startswith("user_") and c != "user_id" and t == pl.Float64]


SIDE_TABLES = ("interactions", "follows")  # side tables ingest may store beside posts.parquet


def load_side_tables(dataset: str, cache: Path | None = None) -> dict[str, pl.DataFrame]:
    """The dataset's side tables that exist: interactions (user_id, post_id, at[, kind]) and
    follows (user_id, followee_id), as ingest wrote them next to posts.parquet."""
    d = paths.dataset_dir(dataset, cache)
    return {name: pl.read_parquet(d / f"{name}.parquet") for name in SIDE_TABLES if (d / f"{name}.parquet").is_file()}
