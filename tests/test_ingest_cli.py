"""`pipe ingest` and `pipe synth` from the command line: exit codes, messages, files written."""
from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

import pipeline.cli as cli
from pipeline.data.contract import load_posts

cli._load_commands()
runner = CliRunner()


def pipe(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def bad_csv(tmp_path):
    p = tmp_path / "in" / "posts.csv"
    p.parent.mkdir()
    p.write_text("post_id,user_id,posted_at,score,title,text\n"
                 "a,u1,2024-01-01,1,one two three,four five\n"
                 "b,u1,not-a-date,2,x,\n"
                 "c,u2,2024-01-03,3,short,\n"
                 "a,u2,2024-01-04,4,dup,\n"
                 "d,u2,2024-01-05,5,six seven eight,nine ten eleven\n")
    return p


def test_strict_ingest_fails_cleanly_naming_rows_and_columns(bad_csv, tmp_path):
    r = pipe("ingest", bad_csv, "--name", "x", "--cache", tmp_path / "cache")
    assert r.exit_code == 2
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert "posts.csv" in r.output and "line 3 (post_id 'b')" in r.output and "column posted_at" in r.output
    assert "line 5 (post_id 'a')" in r.output and "column post_id" in r.output
    assert not (tmp_path / "cache" / "x" / "posts.parquet").exists()


def test_skip_invalid_writes_rejected_rows_with_reasons(bad_csv, tmp_path):
    cache = tmp_path / "cache"
    r = pipe("ingest", bad_csv, "--name", "x", "--cache", cache, "--skip-invalid")
    assert r.exit_code == 0, r.output
    assert "ingested 3 posts" in r.output and "rejected 2 invalid row(s)" in r.output
    assert sorted(load_posts("x", cache)["post_id"]) == ["a", "c", "d"]
    rej = pl.read_parquet(cache / "x" / "rejected.parquet")
    assert rej["line"].to_list() == [3, 5]
    assert rej["post_id"].to_list() == ["b", "a"]
    assert "posted_at: unparsable timestamp" in rej["reason"][0] and rej["posted_at"][0] == "not-a-date"
    assert "duplicate post id (first at line 2)" in rej["reason"][1]
    # a later strict ingest of a clean file removes the stale rejected table
    good = tmp_path / "good.csv"
    good.write_text("post_id,user_id,posted_at,score\nz,u,2024-01-01,1\n")
    assert pipe("ingest", good, "--name", "x", "--cache", cache).exit_code == 0
    assert not (cache / "x" / "rejected.parquet").exists()


def test_min_words_drops_and_reports(bad_csv, tmp_path):
    cache = tmp_path / "cache"
    r = pipe("ingest", bad_csv, "--name", "x", "--cache", cache, "--skip-invalid", "--min-words", "5")
    assert r.exit_code == 0, r.output
    assert "dropped 1 post(s) with fewer than 5 words" in r.output
    assert sorted(load_posts("x", cache)["post_id"]) == ["a", "d"]
    assert pipe("ingest", bad_csv, "--name", "x", "--cache", cache, "--min-words", "-1").exit_code == 2


def test_reingest_replaces_table_and_leaves_stores_alone(tmp_path):
    cache = tmp_path / "cache"
    p = tmp_path / "posts.jsonl"
    p.write_text('{"post_id":"a","user_id":"u","posted_at":1,"score":1}\n'
                 '{"post_id":"b","user_id":"u","posted_at":2,"score":2}\n')
    assert pipe("ingest", p, "--name", "d", "--cache", cache).exit_code == 0
    store_file = cache / "d" / "features" / "toy-1234abcd" / "manifest.json"
    store_file.parent.mkdir(parents=True)
    store_file.write_text("{}")
    p.write_text('{"post_id":"b","user_id":"u","posted_at":2,"score":5}\n'
                 '{"post_id":"c","user_id":"u","posted_at":3,"score":3}\n')
    r = pipe("ingest", p, "--name", "d", "--cache", cache)
    assert r.exit_code == 0, r.output
    assert "1 added, 1 removed, 1 changed" in r.output
    df = load_posts("d", cache)
    assert df["post_id"].to_list() == ["b", "c"] and df["score"].to_list() == [5.0, 3.0]
    assert store_file.read_text() == "{}"
    assert not list((cache / "d").glob(".tmp-*"))


def test_unlabelled_flag_and_unknown_format(tmp_path):
    p = tmp_path / "new.csv"
    p.write_text("post_id,user_id,posted_at\na,u,2024-01-01\n")
    r = pipe("ingest", p, "--name", "n", "--cache", tmp_path / "c")
    assert r.exit_code == 2 and "--unlabelled" in r.output
    assert pipe("ingest", p, "--name", "n", "--cache", tmp_path / "c", "--unlabelled").exit_code == 0
    r = pipe("ingest", p, "--name", "n", "--cache", tmp_path / "c", "--format", "xml")
    assert r.exit_code == 2 and "unknown format 'xml'" in r.output
    r = pipe("ingest", tmp_path / "missing.csv", "--name", "n", "--cache", tmp_path / "c")
    assert r.exit_code == 2 and "no such file" in r.output


def test_synth_then_ingest(tmp_path):
    out = tmp_path / "syn"
    r = pipe("synth", out, "--posts", "40", "--image-size", "16", "--seed", "2")
    assert r.exit_code == 0, r.output
    r = pipe("ingest", out / "posts.parquet", "--name", "syn", "--cache", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    df = load_posts("syn", tmp_path / "cache")
    assert df.height == 40
    assert all(p.startswith(str(out)) and p.endswith(".jpg") for p in df["image"])
    assert "user_followers" in df.columns
