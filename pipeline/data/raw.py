"""A posts file as read, before normalisation: its columns and where each row came from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

LINE = "__line"

@dataclass
class RawPosts:
    """A posts file as read: its columns (lower-cased names) and where each row came from."""
    df: pl.DataFrame  # columns as found, plus `__line`
    source: Path  # the file named in messages
    base: Path  # folder that relative image paths are resolved against
    row_word: str = "line"  # what `__line` counts: "line" (text files), "row" (Parquet), "item" (JSON array)
    errors: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, column, reason, value) found while reading

    def errors_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.errors, schema={"line": pl.Int64, "column": pl.Utf8, "reason": pl.Utf8, "value": pl.Utf8},
                            orient="row").with_columns(post_id=pl.lit(None, pl.Utf8)).select("line", "post_id", "column", "reason", "value")

def json_column(values: list) -> pl.Series | list:
    """One JSON key's values -> something polars can hold: mixed scalar types become strings."""
    kinds = {("num" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__)
             for v in values if v is not None}
    if len(kinds) <= 1 and "dict" not in kinds:
        if kinds == {"num"}:
            return [None if v is None else float(v) if any(isinstance(x, float) for x in values) else v for v in values]
        if kinds == {"list"}:
            return [None if v is None else [None if x is None else str(x) for x in v] for v in values]
        return values
    return [None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values]
