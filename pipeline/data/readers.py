"""Reading posts files as they are (Parquet, CSV, JSON Lines, SMPD), before normalisation.

Each reader returns the columns it found plus `__line`, where each row sits in the file
(line number for text files, 1-based row for Parquet), so that every message can point
at it. A file whose bytes are not what its name (or --format) says is refused here.

"""
from __future__ import annotations

from collections import Counter

import codecs
import csv
import io
import json
from pathlib import Path

import polars as pl

from pipeline.core.errors import PostsError
from pipeline.data.raw import LINE, RawPosts, json_column

FORMATS = ("auto", "generic", "parquet", "csv", "jsonl", "smpd")
_EXT = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

def _sniff(path: Path) -> tuple[str, bytes]:
    """("parquet" | "binary" | "text", first bytes) from the file's content."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PAR1":
        return "parquet", head
    if b"\0" in head or head[:3] in (b"\x1f\x8b\x08", b"PK\x03"):
        return "binary", head
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:  # text in another encoding, or binary: binary has many control bytes
        controls = sum(b < 9 or 13 < b < 32 for b in head)
        if controls > len(head) // 100:
            return "binary", head
    return "text", head


def _decode(path: Path, encoding: str | None) -> str:
    """The file's text, decoded strictly: bytes that are not valid `encoding` (UTF-8 by default)
    are refused naming the line, never replaced."""
    data = path.read_bytes()
    enc = encoding or "utf-8"
    try:
        codecs.lookup(enc)
    except LookupError:
        raise PostsError(f"--encoding {enc!r}: unknown encoding (try utf-8, latin-1, cp1252, utf-16)") from None
    try:
        return data.decode("utf-8-sig" if codecs.lookup(enc).name == "utf-8" else enc)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        hint = ("pass --encoding with the file's encoding (e.g. --encoding cp1252)" if encoding is None
                else "check --encoding")
        raise PostsError(f"{path}: line {line}, byte {col}: {data[e.start:e.end]!r} is not valid {enc} text; "
                         f"re-save the file as UTF-8 or {hint}") from None


def _looks(kind: str, head: bytes) -> str:
    if kind == "parquet":
        return "it is a Parquet file"
    if kind == "binary":
        return "it is binary data"
    first = head.decode("utf-8", "replace").lstrip()[:40].splitlines()[0] if head.strip() else ""
    guess = "JSON" if first.startswith(("{", "[")) else "CSV or plain text"
    return f"it starts with {first!r}, which looks like {guess}"


def _lowercase(df: pl.DataFrame, source: Path) -> pl.DataFrame:
    names = [c.strip().lstrip("\ufeff").lower() for c in df.columns]
    dup = sorted(n for n, k in Counter(names).items() if k > 1)  # one count, not names.count per name
    if dup:
        raise PostsError(f"{source}: column name(s) given more than once (names are case-insensitive): {', '.join(dup)}")
    return df.rename(dict(zip(df.columns, names)))


def _read_parquet(path: Path) -> RawPosts:
    kind, head = _sniff(path)
    if kind != "parquet":
        raise PostsError(f"{path}: not a Parquet file ({_looks(kind, head)}); rename it or pass --format")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # a truncated or corrupt file: polars raises several types
        raise PostsError(f"{path}: unreadable Parquet file: {e}") from None
    df = _lowercase(df, path).with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64))
    return RawPosts(df, path, path.parent, "row")


def _read_csv(path: Path, encoding: str | None = None) -> RawPosts:
    kind, head = _sniff(path)
    if kind != "text" and encoding is None:
        raise PostsError(f"{path}: not a CSV file ({_looks(kind, head)}); rename it or pass --format")
    text = _decode(path, encoding)
    try:
        df = pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False, truncate_ragged_lines=False)
    except Exception as e:  # polars raises ComputeError / NoDataError / ShapeError for bad CSV
        raise PostsError(f"{path}: unreadable CSV file{_ragged_line(text)}: {str(e).splitlines()[0]}") from None
    # line numbers: the header is line 1 (exact unless quoted fields span several lines)
    df = _lowercase(df, path).with_row_index(LINE, offset=2).with_columns(pl.col(LINE).cast(pl.Int64))
    return RawPosts(df, path, path.parent, "line")

def _ragged_line(text: str) -> str:
    """`, line N has K fields, the header M` for the first row whose field count differs, else ''."""
    rows = csv.reader(io.StringIO(text))
    try:
        width = len(next(rows))
        for row in rows:
            if row and len(row) != width:
                return f" (line {rows.line_num} has {len(row)} fields, the header {width})"
    except (csv.Error, StopIteration):
        pass
    return ""


def _read_jsonl(path: Path, encoding: str | None = None) -> RawPosts:
    kind, head = _sniff(path)
    if kind != "text" and encoding is None:
        raise PostsError(f"{path}: not a JSON Lines file ({_looks(kind, head)}); rename it or pass --format")
    text = _decode(path, encoding)
    records: list[dict] = []
    lines: list[int] = []
    errors: list[tuple[int, str, str, str]] = []
    if text.lstrip().startswith("["):  # a JSON array of records (.json)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise PostsError(f"{path}: invalid JSON: {e}") from None
        row_word, numbered = "item", list(enumerate(items, 1))
    else:
        row_word, numbered = "line", []
        for i, line in enumerate(text.split("\n"), 1):  # only \n ends a line (U+2028 may sit inside a string)
            if line.strip():
                try:
                    numbered.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    errors.append((i, "(json)", f"invalid JSON ({e.msg})", line[:200]))
    for i, rec in numbered:
        if isinstance(rec, dict):
            records.append({str(k).strip().lower(): v for k, v in rec.items()})
            lines.append(i)
        else:
            errors.append((i, "(json)", "not a JSON object", json.dumps(rec)[:200]))
    if not records and errors:
        raise PostsError(f"{path}: not a JSON Lines file (no line holds a JSON object; {row_word} {errors[0][0]}: {errors[0][2]})")
    keys = list(dict.fromkeys(k for r in records for k in r))
    df = pl.DataFrame({k: json_column([r.get(k) for r in records]) for k in keys} | {LINE: lines},
                      strict=False, schema_overrides={LINE: pl.Int64})
    return RawPosts(df, path, path.parent, row_word, errors)


def detect_format(path: Path) -> str:
    """parquet | csv | jsonl | smpd from the path (a folder holding SMPD files is smpd)."""
    from pipeline.data.smpd import is_smpd_dir

    if path.is_dir():
        if is_smpd_dir(path):
            return "smpd"
        raise PostsError(f"{path}: a folder, but not in the SMPD layout (no train_img_filepath.txt or test_img_filepath.txt)")
    fmt = _EXT.get(path.suffix.lower())
    if fmt is None:
        raise PostsError(f"{path}: unknown file type {path.suffix!r}; use .parquet, .csv, .jsonl (or .json) or pass --format")
    return fmt


def read_raw(path: Path, fmt: str = "auto", split: str | None = None, encoding: str | None = None) -> RawPosts:
    """Read a posts file (or an SMPD folder) in the given or detected format."""
    if fmt not in FORMATS:
        raise PostsError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise PostsError(f"{path}: no such file or folder")
    if fmt == "generic" and path.is_dir():
        raise PostsError(f"{path}: a folder; --format generic reads one Parquet, CSV or JSON Lines file")
    if fmt in ("auto", "generic"):
        fmt = detect_format(path)
    if fmt == "smpd":
        from pipeline.data.smpd import read_smpd
        return read_smpd(path, split)
    if path.is_dir():
        raise PostsError(f"{path}: a folder; --format {fmt} reads one file")
    if fmt == "parquet":
        return _read_parquet(path)
    return {"csv": _read_csv, "jsonl": _read_jsonl}[fmt](path, encoding)
