"""The posts contract: readers, normalisation, every strict validation error."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import polars as pl
import pytest

from pipeline.core.errors import PipeError, PostsError
from pipeline.data.contract import CONTRACT, load_posts, parse_timestamps, post_text, user_feature_columns
from pipeline.data.ingest import ingest, read_posts_file

HEADER = "post_id,user_id,posted_at,score\n"


def _csv(tmp_path, body: str, header: str = HEADER, name: str = "posts.csv"):
    p = tmp_path / name
    p.write_text(header + body)
    return p


def _jsonl(tmp_path, records, name="posts.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return p


def test_contract_columns_and_dtypes_from_minimal_file(tmp_path):
    df = read_posts_file(_csv(tmp_path, "a,u1,2024-01-01,1.5\nb,u2,2024-01-02,2\n"))
    assert df.schema == pl.Schema(CONTRACT)
    assert df["post_id"].to_list() == ["a", "b"]
    assert df["score"].to_list() == [1.5, 2.0]
    assert df["tags"].null_count() == 2 and df["image"].null_count() == 2


def test_timestamp_forms_all_agree(tmp_path):
    want = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    unix = int(want.timestamp())
    body = "".join(f"p{i},u,{v},1\n" for i, v in enumerate([
        "2024-03-01T12:00:00Z", "2024-03-01 12:00:00", "2024-03-01T14:00:00+02:00", str(unix), f"{unix}.0"]))
    df = read_posts_file(_csv(tmp_path, body))
    assert df["posted_at"].to_list() == [want] * 5
    # native datetimes (naive = UTC, aware converted), unix ints and floats in Parquet
    pq = tmp_path / "t.parquet"
    pl.DataFrame({"post_id": ["a", "b"], "user_id": ["u", "u"], "score": [1.0, 2.0],
                  "posted_at": [datetime(2024, 3, 1, 12), datetime(2024, 3, 1, 12)]}).write_parquet(pq)
    assert read_posts_file(pq)["posted_at"].to_list() == [want, want]
    assert parse_timestamps(pl.Series([unix, None])).to_list() == [want, None]
    assert parse_timestamps(pl.Series([unix + 0.5])).to_list()[0].microsecond == 500000
    aware = pl.Series([datetime(2024, 3, 1, 13)]).dt.replace_time_zone("Europe/Paris")
    assert parse_timestamps(aware).to_list() == [want]


def test_relative_images_resolve_against_the_file_folder(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    p = _csv(sub, "a,u,1700000000,1,img/x.jpg\nb,u,1700000000,1,/abs/y.jpg\nc,u,1700000000,1,\n"
             "d,u,1700000000,1,../up.jpg\n", header="post_id,user_id,posted_at,score,image\n")
    assert read_posts_file(p)["image"].to_list() == [
        str(sub / "img" / "x.jpg"), "/abs/y.jpg", None, str(tmp_path / "up.jpg")]


def test_score_from_views_and_days_and_optional_columns(tmp_path):
    p = _jsonl(tmp_path, [
        {"post_id": 1, "user_id": "u", "posted_at": 1700000000, "views": 30, "days": 10,
         "title": "Hi", "text": "there", "tags": ["a", "b"], "Category": "c1", "user_followers": 12},
        {"post_id": 2, "user_id": "u", "posted_at": "2024-01-01", "views": 0, "days": 1, "tags": "x, y z",
         "user_followers": "7.5", "extra": {"dropped": True}},
    ])
    df = read_posts_file(p)
    assert df["post_id"].to_list() == ["1", "2"]
    assert df["score"].to_list() == [pytest.approx(math.log2(30 / 10 + 1)), 0.0]
    assert df["tags"].to_list() == [["a", "b"], ["x", "y", "z"]]
    assert df["category"].to_list() == ["c1", None]
    assert user_feature_columns(df) == ["user_followers"]
    assert df["user_followers"].to_list() == [12.0, 7.5]
    assert "extra" not in df.columns and "views" not in df.columns
    assert post_text(df) == ["Hi there", ""]


def _error(path, **kw) -> str:
    with pytest.raises(PostsError) as e:
        read_posts_file(path, **kw)
    return str(e.value)


def test_duplicate_post_ids_named_with_lines(tmp_path):
    msg = _error(_csv(tmp_path, "a,u,2024-01-01,1\nb,u,2024-01-01,1\na,u,2024-01-02,1\n"))
    assert "posts.csv" in msg and "column post_id" in msg
    assert "duplicate post id (first at line 2): line 4 (post_id 'a')" in msg


def test_missing_required_column_named(tmp_path):
    msg = _error(_csv(tmp_path, "a,u,1\n", header="post_id,user_id,score\n"))
    assert "posts.csv" in msg and "missing required column(s) posted_at" in msg
    msg = _error(_csv(tmp_path, "a,u,2024-01-01\n", header="post_id,user_id,posted_at\n"))
    assert "no 'score' column" in msg and "--unlabelled" in msg
    assert read_posts_file(tmp_path / "posts.csv", unlabelled=True)["score"].to_list() == [None]


def test_unparsable_timestamp_named(tmp_path):
    msg = _error(_csv(tmp_path, "a,u,2024-01-01,1\nb,u,last tuesday,1\nc,u,,1\n"))
    assert "column posted_at: unparsable timestamp: line 3 (post_id 'b'), value 'last tuesday'" in msg
    assert "column posted_at: missing timestamp: line 4 (post_id 'c')" in msg
    assert "2 invalid row(s)" in msg


def test_negative_views_or_days_named(tmp_path):
    p = _csv(tmp_path, "a,u,2024-01-01,-5,3\nb,u,2024-01-01,5,-1\nc,u,2024-01-01,5,0\n",
             header="post_id,user_id,posted_at,views,days\n")
    msg = _error(p)
    assert "column views: negative views: line 2 (post_id 'a'), value '-5'" in msg
    assert "column days: negative days: line 3 (post_id 'b'), value '-1'" in msg
    assert "column days: days is 0" in msg and "line 4 (post_id 'c')" in msg


def test_null_and_nan_score_named(tmp_path):
    p = _jsonl(tmp_path, [{"post_id": "a", "user_id": "u", "posted_at": 1, "score": None},
                          {"post_id": "b", "user_id": "u", "posted_at": 1, "score": "NaN"},
                          {"post_id": "c", "user_id": "u", "posted_at": 1, "score": "high"},
                          {"post_id": "d", "user_id": "u", "posted_at": 1, "score": 2}])
    msg = _error(p)
    assert "column score: missing score (null or NaN): line 1 (post_id 'a')" in msg
    assert "line 2 (post_id 'b')" in msg
    assert "column score: score is not a number: line 3 (post_id 'c'), value 'high'" in msg
    assert "post_id 'd'" not in msg


def test_missing_ids_and_bad_json_lines_named(tmp_path):
    p = _jsonl(tmp_path, [{"post_id": "a", "user_id": None, "posted_at": 1, "score": 1}, "{not json",
                          {"post_id": "", "user_id": "u", "posted_at": 1, "score": 1}, "[1, 2]"])
    msg = _error(p)
    assert "column user_id: missing user id: line 1 (post_id 'a')" in msg
    assert "invalid JSON" in msg and "line 2" in msg
    assert "column post_id: missing post id: line 3" in msg
    assert "not a JSON object" in msg and "line 4" in msg


def test_file_that_is_not_what_its_extension_says(tmp_path):
    csv_named_parquet = tmp_path / "posts.parquet"
    csv_named_parquet.write_text(HEADER + "a,u,2024-01-01,1\n")
    msg = _error(csv_named_parquet)
    assert "posts.parquet: not a Parquet file" in msg and "post_id,user_id" in msg
    parquet_named_csv = tmp_path / "real.csv"
    pl.DataFrame({"post_id": ["a"]}).write_parquet(parquet_named_csv)
    assert "real.csv: not a CSV file (it is a Parquet file)" in _error(parquet_named_csv)
    csv_named_jsonl = tmp_path / "x.jsonl"
    csv_named_jsonl.write_text(HEADER + "a,u,2024-01-01,1\n")
    assert "x.jsonl: not a JSON Lines file" in _error(csv_named_jsonl)
    # an explicit --format wins over the extension
    assert read_posts_file(csv_named_parquet, fmt="csv")["post_id"].to_list() == ["a"]
    unknown = tmp_path / "posts.xlsx"
    unknown.write_text("x")
    assert "unknown file type '.xlsx'" in _error(unknown)


def test_json_array_and_case_insensitive_columns(tmp_path):
    p = tmp_path / "posts.json"
    p.write_text(json.dumps([{"Post_ID": "a", "USER_ID": "u", "Posted_At": "2024-01-01", "Score": 1}]))
    assert read_posts_file(p)["post_id"].to_list() == ["a"]


def test_many_problems_are_capped_but_counted(tmp_path):
    body = "".join(f"p{i},u,bad,1\n" for i in range(30))
    msg = _error(_csv(tmp_path, body))
    assert "30 invalid row(s)" in msg and "... and 10 more problem(s)" in msg


def test_load_posts_sorted_and_missing_dataset(tmp_path):
    p = _csv(tmp_path, "b,u,2024-01-02,1\nc,u,2024-01-01,1\na,u,2024-01-02,1\n")
    ingest(p, "ds", cache=tmp_path / "cache")
    assert load_posts("ds", tmp_path / "cache")["post_id"].to_list() == ["c", "a", "b"]
    with pytest.raises(PipeError, match="dataset 'nope'.*pipe ingest"):
        load_posts("nope", tmp_path / "cache")
