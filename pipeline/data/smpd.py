"""Reader for the SMP Challenge dataset (SMPD) in its official file layout.

A folder holds, per split (`train_` or `test_` prefix): `img_filepath.txt` (one image path
per line: the row order; `<Uid>/<Pid>.jpg` at the end of each path), `label.txt` (train
only: one log-normalised score per line, aligned with the paths), `category.json`,
`text.json` (Title, spelled "Tile" in one release; Alltags, a space-separated tag string),
`temporalspatial_information.json` (Postdate, unix seconds) and `user_data.json`.
Records are matched to paths by Pid (the image file's stem), by Uid for per-user
records, or by position when a file has no Pid and as many records as there are paths.
The JSON files may hold a list of records, a dict of column lists, a pandas-style dict of
{index: value} columns, or one record per line; key case does not matter. Only
img_filepath.txt and temporalspatial_information.json are required; labels may be
missing only when ingesting with --unlabelled (the test split has none).

Mapping to the posts contract: post_id = Pid, user_id = Uid, posted_at = Postdate,
image = the path (relative ones resolved against the folder; when they do not exist
there but do exist one folder up, against that), title = Title, tags = Alltags split on
spaces, category/subcategory/concept, score = label, and every numeric (or date-like, or
"+HH:MM" offset) field of user_data.json as `user_<field>` Float64 (text fields such as
descriptions are left out). Note: SMPD's user fields were crawled after the posts.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from pipeline.core.errors import PostsError
from pipeline.data.raw import LINE, RawPosts, json_column

SPLITS = ("train", "test")
# user_data.json fields as posts columns: crawled when the dataset was collected, after the posts
CRAWLED_USER_COLUMNS = ("user_photo_count", "user_ispro", "user_canbuypro", "user_photo_firstdate",
                        "user_photo_firstdatetaken", "user_timezone_offset", "user_followers", "user_following",
                        "user_views", "user_faves", "user_tags", "user_ingroups")
_ALIASES = {"tile": "title"}
_OFFSET = re.compile(r"^\s*([+-])(\d{1,2}):?(\d{2})\s*$")


def is_smpd_dir(path: Path) -> bool:
    return path.is_dir() and any(_find(path, s, "img_filepath.txt") for s in SPLITS)


def _find(folder: Path, split: str, stem: str) -> Path | None:
    """`<split>_<stem>` in folder, any case; a `.jsonl` twin is accepted for `.json`."""
    want = {f"{split}_{stem}".lower()}
    if stem.endswith(".json"):
        want.add(f"{split}_{stem}l".lower())
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower() in want:
            return p
    return None


def _load_records(path: Path) -> pl.DataFrame:
    """Any of the JSON shapes SMPD files come in -> a table with lower-cased column names."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise PostsError(f"{path}: invalid JSON ({e})") from None
    if isinstance(data, dict):
        inner = next((data[k] for k in ("data", "records", "items") if isinstance(data.get(k), list)), None)
        if inner is not None:
            data = inner
        elif data and all(isinstance(v, dict) for v in data.values()):  # pandas {column: {index: value}}
            cols = {k: [v[i] for i in sorted(v, key=lambda x: int(x) if str(x).isdigit() else x)] for k, v in data.items()}
            data = [dict(zip(cols, row)) for row in zip(*cols.values())]
        elif data and all(isinstance(v, list) for v in data.values()):  # {column: [values]}
            data = [dict(zip(data, row)) for row in zip(*data.values())]
        else:
            data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PostsError(f"{path}: expected a list of records (objects with Uid, Pid, ...)")
    rows = [{_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v for k, v in r.items()} for r in data]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    df = pl.DataFrame({k: json_column([r.get(k) for r in rows]) for k in keys}, strict=False)
    for k in ("uid", "pid"):
        if k in df.columns:
            df = df.with_columns(pl.col(k).cast(pl.Utf8).str.strip_chars().str.replace(r"\.0$", ""))
    return df


def _attach(base: pl.DataFrame, t: pl.DataFrame, path: Path, by_user: bool = False) -> pl.DataFrame:
    """Join one file's records onto the paths: by Pid, by Uid (per-user files), else by position."""
    if "pid" in t.columns and base["pid"].is_in(t["pid"].implode()).any():
        t = t.unique("pid", keep="first", maintain_order=True)
        return base.join(t.drop("uid", strict=False), on="pid", how="left", suffix="_dup")
    if by_user and "uid" in t.columns and "pid" not in t.columns:
        return base.join(t.unique("uid", keep="first", maintain_order=True).rename({"uid": "user_id"}),
                         on="user_id", how="left", suffix="_dup")
    if t.height == base.height:
        return pl.concat([base, t.drop("uid", "pid", strict=False)], how="horizontal")
    raise PostsError(f"{path}: cannot match its {t.height} records to the {base.height} image paths "
               "(no Pid in common and a different count)")


def _as_number(s: pl.Series) -> pl.Series | None:
    """A user_data field as Float64: numbers, "+HH:MM" offsets (hours), dates (unix seconds); None for text."""
    if s.dtype.is_numeric() or s.dtype == pl.Boolean:
        return s.cast(pl.Float64)
    if s.dtype != pl.Utf8:
        return None
    vals = s.str.strip_chars()
    present = int(vals.is_not_null().sum()) or 1
    num = vals.cast(pl.Float64, strict=False)
    if num.is_not_null().sum() * 2 >= present:
        return num

    def offset(v: str | None) -> float | None:
        m = _OFFSET.match(v) if v else None
        return None if m is None else (1 if m[1] == "+" else -1) * (int(m[2]) + int(m[3]) / 60)

    def date(v: str | None) -> float | None:
        try:
            d = datetime.fromisoformat(v) if v else None
        except ValueError:
            return None
        return None if d is None else (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    for fn in (offset, date):
        out = pl.Series([fn(v) for v in vals.to_list()], dtype=pl.Float64)
        if out.is_not_null().sum() * 2 >= present:
            return out
    return None


def _user_features(t: pl.DataFrame) -> pl.DataFrame:
    cols = {}
    for c in t.columns:
        if c in ("uid", "pid"):
            cols[c] = t[c]
            continue
        f = _as_number(t[c])
        name = "user_" + re.sub(r"[^a-z0-9]+", "_", c.removeprefix("user_")).strip("_")
        if f is not None and name != "user_id":
            cols[name] = f.fill_nan(None)
    return pl.DataFrame(cols)


def _image_base(folder: Path, images: list[str]) -> Path:
    """The folder that makes the most of the first paths exist (the SMPD folder by default)."""
    sample = [p for p in images[:20] if p and not Path(p).is_absolute()]
    best = max((folder, folder.parent), key=lambda b: sum((b / p).exists() for p in sample))
    return best if sum((best / p).exists() for p in sample) > sum((folder / p).exists() for p in sample) else folder


def read_smpd(path: Path, split: str | None = None) -> RawPosts:
    """One split of an SMPD folder (or its `<split>_img_filepath.txt`) as raw posts columns."""
    if path.is_file():
        m = re.match(r"(train|test)_img_filepath\.txt$", path.name, re.I)
        if not m:
            raise PostsError(f"{path}: --format smpd reads a folder or a train_/test_img_filepath.txt file")
        path, split = path.parent, split or m[1].lower()
    split = split or ("train" if _find(path, "train", "img_filepath.txt") else "test")
    if split not in SPLITS:
        raise PostsError(f"unknown SMPD split {split!r}; choose train or test")
    img_file = _find(path, split, "img_filepath.txt")
    if img_file is None:
        raise PostsError(f"{path}: no {split}_img_filepath.txt (an SMPD folder holds train_/test_img_filepath.txt)")
    numbered = [(i, ln.strip()) for i, ln in enumerate(img_file.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
    if not numbered:
        raise PostsError(f"{img_file}: no image paths")
    images = [p.replace("\\", "/") for _, p in numbered]
    base = pl.DataFrame({LINE: [i for i, _ in numbered], "image": images}, schema_overrides={LINE: pl.Int64})
    base = base.with_columns(
        pid=pl.col("image").str.extract(r"([^/]+?)(?:\.[^./]*)?$"),
        user_id=pl.col("image").str.extract(r"([^/]+)/[^/]+$"),
    )
    label = _find(path, split, "label.txt")
    if label is not None:
        scores = [ln.strip() for ln in label.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if scores and not re.fullmatch(r"[-+.\deE]+", scores[0]):  # a header line
            scores = scores[1:]
        if len(scores) != base.height:
            raise PostsError(f"{label}: {len(scores)} labels for the {base.height} image paths of {img_file.name}; they must align line by line")
        base = base.with_columns(score=pl.Series(scores, dtype=pl.Utf8))
    temporal = _find(path, split, "temporalspatial_information.json")
    if temporal is None:
        raise PostsError(f"{path}: no {split}_temporalspatial_information.json; posting times (Postdate) are required")
    uid_json = None
    for stem in ("category.json", "text.json", "temporalspatial_information.json"):
        f = _find(path, split, stem)
        if f is not None:
            t = _load_records(f)
            if uid_json is None and "uid" in t.columns and "pid" in t.columns:
                uid_json = t.select("pid", uid_json="uid").unique("pid", keep="first")
            base = _attach(base, t, f)
    if uid_json is not None:
        base = base.join(uid_json, on="pid", how="left").with_columns(user_id=pl.coalesce("uid_json", "user_id"))
    users = _find(path, split, "user_data.json")
    if users is not None:
        base = _attach(base, _user_features(_load_records(users)), users, by_user=True)
    out = base.select(
        LINE, post_id="pid", user_id="user_id", image="image",
        posted_at=pl.col("postdate") if "postdate" in base.columns else pl.lit(None, pl.Utf8),
        **{c: c for c in ("title", "category", "subcategory", "concept", "score") if c in base.columns},
        **({"tags": "alltags"} if "alltags" in base.columns else {}),
    )
    out = out.with_columns([base[c] for c in base.columns if c.startswith("user_") and c != "user_id"])
    return RawPosts(out, img_file, _image_base(path, images), "line")
