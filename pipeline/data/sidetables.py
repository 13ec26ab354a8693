"""The side tables of the ranking task, read and validated against the posts they refer to.

`interactions`: user_id, post_id, at (a timestamp, read like posts' `posted_at`), optional
kind (default "retweet"): who reposted which post when. `follows`: user_id, followee_id:
who follows whom. Either file may be Parquet, CSV or JSON Lines (`read_raw`, the posts
readers). Strict like the posts contract, for the same reason (a silently dropped event
shifts every metric): a missing column stops the file; each bad row gets a reason
(missing or unparsable value, an unknown post, an interaction before its post was
published, a duplicate row, a self-follow) and `ingest` either refuses naming the rows or,
with `--skip-invalid`, keeps the rest and writes the rejects. Users who retweet but never
post, or who are followed but never post, are allowed.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.core.errors import PostsError
from pipeline.data.contract import UTC_US, _to_str, flagger, parse_timestamps
from pipeline.data.raw import LINE, RawPosts
from pipeline.data.readers import read_raw

COLUMNS = {"interactions": ("user_id", "post_id", "at"), "follows": ("user_id", "followee_id")}  # required
SCHEMA = {"interactions": {"user_id": pl.Utf8, "post_id": pl.Utf8, "at": UTC_US, "kind": pl.Utf8},
          "follows": {"user_id": pl.Utf8, "followee_id": pl.Utf8}}
DEFAULT_KIND = "retweet"
_PROBLEMS = {"line": pl.Int64, "post_id": pl.Utf8, "column": pl.Utf8, "reason": pl.Utf8, "value": pl.Utf8}


def read_side_table(path: Path, kind: str, posts: pl.DataFrame,
                    encoding: str | None = None) -> tuple[RawPosts, pl.DataFrame, pl.DataFrame]:
    """(the file as read, the valid rows in `SCHEMA[kind]`, one row per problem: line, post_id,
    column, reason, value). `posts` is the contract table the interactions must refer to."""
    if kind not in COLUMNS:
        raise ValueError(f"unknown side table {kind!r}")
    raw = read_raw(Path(path), "auto", encoding=encoding)
    df = raw.df
    missing = [c for c in COLUMNS[kind] if c not in df.columns]
    if missing:
        raise PostsError(f"{raw.source} ({kind}): missing required column(s) {', '.join(missing)} "
                         f"(columns found: {', '.join(c for c in df.columns if c != LINE) or 'none'})")
    if df.height == 0 and not raw.errors:
        raise PostsError(f"{raw.source} ({kind}): contains no rows")
    errs: list[pl.DataFrame] = []
    pid = _to_str(df["post_id"]).alias("post_id") if kind == "interactions" else pl.Series([None] * df.height, dtype=pl.Utf8)
    flag = flagger(df, pid, errs)

    out = {c: _to_str(df[c]).alias(c) for c in COLUMNS[kind] if c != "at"}
    for c, s in out.items():
        flag(s.is_null(), c, f"missing {c.replace('_', ' ')}")
    if kind == "interactions":
        at = parse_timestamps(df["at"]).alias("at")
        given = _to_str(df["at"])
        flag(given.is_null(), "at", "missing timestamp")
        flag(given.is_not_null() & at.is_null(), "at", "unparsable timestamp", df["at"])
        out["at"] = at
        out["kind"] = (_to_str(df["kind"]) if "kind" in df.columns else pl.Series([None] * df.height, dtype=pl.Utf8)
                       ).fill_null(DEFAULT_KIND).alias("kind")
        posted = pl.DataFrame({"post_id": pid}).join(posts.select("post_id", "posted_at"), on="post_id", how="left",
                                                     maintain_order="left")["posted_at"]
        flag(pid.is_not_null() & posted.is_null(), "post_id", "unknown post (not in the posts table)", pid)
        flag(at < posted, "at", pl.select(pl.format("before its post was published ({})", posted.dt.to_string("%Y-%m-%dT%H:%M:%SZ"))).to_series(), df["at"])
        key = ["user_id", "post_id", "kind"]
    else:
        flag(out["user_id"] == out["followee_id"], "followee_id", "self-follow", out["followee_id"])
        key = ["user_id", "followee_id"]
    keyed = pl.DataFrame({c: out[c] for c in key}).with_columns(df[LINE])
    first = keyed.select(pl.col(LINE).first().over(key)).to_series()
    flag(first != df[LINE], ",".join(key),
         pl.select(pl.format(f"duplicate row (first at {raw.row_word} {{}})", first)).to_series())

    table = pl.DataFrame([out[c].cast(t) for c, t in SCHEMA[kind].items()])
    problems = pl.concat(errs) if errs else pl.DataFrame(schema=_PROBLEMS)
    problems = pl.concat([raw.errors_frame(), problems.with_columns(pl.col("line").cast(pl.Int64))])
    bad = df[LINE].is_in(problems["line"].implode())
    return raw, table.filter(~bad), problems.sort("line", maintain_order=True)
