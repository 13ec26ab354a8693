"""The fault audit, repeatable: one test per case of issue 8 (crafted inputs, byte flips, name
escapes, concurrent pairs). Each asserts the outcome the README's "Guarantees" promise: no
write or delete outside the roots, no training on a corrupted, foreign or partial store, no
traceback, no silent change of bytes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import polars as pl
import pytest
from tests._tiny_data import GRID, TOKENS, make_dataset, write_store
from typer.testing import CliRunner

import pipeline.cli as cli
from pipeline.core import paths
from pipeline.core.errors import IntegrityError, PipeError
from pipeline.core.specs import FeatureSpec
from pipeline.store import FeatureStore, StoreWriter, integrity, store_lock, verify_store, write_shard_file

cli._load_commands()
runner = CliRunner()


class Out:
    """exit_code and output with rich's line wrapping undone."""

    def __init__(self, r):
        self.exit_code, self.output = r.exit_code, " ".join(r.output.split())


def pipe(*args):
    r = runner.invoke(cli.app, [str(a) for a in args])
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    return Out(r)


@pytest.fixture
def tiny(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    make_dataset(cache, n=60, stores=(GRID, TOKENS))
    return cache, runs


def _train(cache, runs, *extra):
    return pipe("train", "--dataset", "tiny", "--head", "svr", "--cache", cache, "--runs", runs, *extra)


def _shard(cache, eid=TOKENS, i=0):
    return paths.store_dir("tiny", eid, cache) / f"shard-{i:05d}.h5"


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _features_offset(path):
    with h5py.File(path, "r") as f:
        return f["features"].id.get_offset()


# -- 1. containment ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "../x", "/abs/dir", ".", "..", "a/b", "-x", ""])
def test_ingest_name_escape_is_refused_before_any_write(tmp_path, name):
    src = tmp_path / "in.csv"
    src.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\n")
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "rejected.parquet").write_bytes(b"keep")
    r = pipe("ingest", src, "--name", name, "--cache", tmp_path / "c" / "cache")
    assert r.exit_code == 2 and "invalid dataset name" in r.output
    assert (outside / "rejected.parquet").read_bytes() == b"keep" and not (tmp_path / "c").exists()


def test_hyphenated_names_stay_valid(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\n")
    assert pipe("ingest", src, "--name", "flickr-2016", "--cache", tmp_path / "cache").exit_code == 0
    assert paths.check_name("uhan-no-text") == "uhan-no-text" and paths.check_name("a.b_c") == "a.b_c"


def test_dataset_symlinked_outside_the_cache_is_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache" / "d")
    src = tmp_path / "in.csv"
    src.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\n")
    r = pipe("ingest", src, "--name", "d", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "outside" in r.output and not list((tmp_path / "elsewhere").iterdir())


def test_extract_dataset_escape_is_refused(tmp_path):
    r = pipe("extract", "--dataset", str(tmp_path / "abs"), "--backbone", "tokens", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "invalid dataset name" in r.output and not (tmp_path / "abs").exists()


def test_extractor_id_escape_is_refused():
    with pytest.raises(PipeError, match="invalid extractor id"):
        paths.store_dir("d", "../../x", "cache")


def test_store_rm_outside_the_cache_is_refused(tmp_path):
    victim = tmp_path / "abs" / "features" / "tok"
    victim.mkdir(parents=True)
    (victim / "manifest.json").write_text("{}")
    r = pipe("store", "rm", "--dataset", str(tmp_path / "abs"), "--extractor", "tok", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and (victim / "manifest.json").exists()


def test_store_rm_through_a_symlinked_store_is_refused(tiny, tmp_path):
    cache, _ = tiny
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text((paths.store_dir("tiny", TOKENS, cache) / "manifest.json").read_text())
    os.symlink(victim, paths.features_dir("tiny", cache) / "tokens-link")
    r = pipe("store", "rm", "--dataset", "tiny", "--extractor", "tokens-link", "--cache", cache)
    assert r.exit_code == 2 and "outside" in r.output and victim.exists()


@pytest.mark.parametrize("name", ["../x", "/abs/run"])
def test_train_run_name_escape_is_refused(tiny, name):
    cache, runs = tiny
    r = pipe("train", "--dataset", "tiny", "--head", "hisave", "--cache", cache, "--runs", runs, "--name", name)
    assert r.exit_code == 2 and "invalid run name" in r.output and not runs.exists()


def test_score_dataset_escape_is_refused(tiny, tmp_path):
    cache, runs = tiny
    assert pipe("train", "--dataset", "tiny", "--head", "hisave", "--cache", cache, "--runs", runs,
                "--name", "h").exit_code == 0
    new = tmp_path / "new.parquet"
    pl.read_parquet(paths.posts_path("tiny", cache)).head(3).write_parquet(new)
    r = pipe("score", "--run", "h", "--posts", new, "--out", tmp_path / "s.parquet", "--dataset", "../x",
             "--cache", cache, "--runs", runs)
    assert r.exit_code == 2 and "invalid dataset name" in r.output and not (tmp_path / "x").exists()


# -- 2. integrity on read -----------------------------------------------------------------
def _flip_feature(p):
    _flip(p, _features_offset(p) + 7)


def _flip_last(p):
    _flip(p, p.stat().st_size - 1)


def _flip_post_id(p):
    data = p.read_bytes()
    at = data.find(b"p0003")
    assert at > 0
    _flip(p, at + 4)


@pytest.mark.parametrize("damage", [_flip_feature, _flip_last, _flip_post_id], ids=["feature", "last", "post_id"])
def test_flipped_byte_stops_train_and_verify(tiny, damage):
    cache, runs = tiny
    FeatureStore(paths.store_dir("tiny", TOKENS, cache))  # checked once: the stamp exists
    p = _shard(cache)
    damage(p)
    r = _train(cache, runs)
    assert r.exit_code == 1 and "shard-00000.h5" in r.output and "pipe store repair" in r.output
    r = pipe("store", "verify", "--dataset", "tiny", "--cache", cache)
    assert r.exit_code == 1 and "shard-00000.h5" in r.output


def test_edited_manifest_dtype_is_caught_by_read_and_verify(tiny):
    cache, runs = tiny
    m = paths.store_dir("tiny", GRID, cache) / "manifest.json"
    doc = json.loads(m.read_text())
    doc["spec"]["dtype"] = "uint8"
    m.write_text(json.dumps(doc))
    r = _train(cache, runs)
    assert r.exit_code == 1 and "float16" in r.output and "uint8" in r.output
    assert any("uint8" in x for x in verify_store(m.parent))


def _stray(cache, eid, spec, ids, rows, index=5, sources=None):
    d = paths.store_dir("tiny", eid, cache)
    write_shard_file(d, index, ids, rows, sources or ["x"] * len(ids), spec)
    return d


def test_stray_copy_is_not_adopted(tiny):
    cache, _ = tiny
    d = paths.store_dir("tiny", TOKENS, cache)
    before = FeatureStore(d).read(["p0001"])
    spec = FeatureSpec("tokens", (12,), "int32")
    _stray(cache, TOKENS, spec, ["p0001"], np.full((1, 12), 99, np.int32))  # same (id, source) as stored: a copy
    with StoreWriter(d, TOKENS, "tokens", spec, {"test": TOKENS}) as w:
        assert any("copy" in q for q in w.quarantined)
    assert (d / "quarantine" / "shard-00005.h5").exists()
    np.testing.assert_array_equal(FeatureStore(d).read(["p0001"]), before)


def test_foreign_spec_shard_is_not_adopted(tiny):
    cache, _ = tiny
    d = _stray(cache, GRID, FeatureSpec("pixels", (3, 4, 4), "uint8"), ["p0001"], np.zeros((1, 3, 4, 4), np.uint8))
    spec = FeatureSpec("grid", (4, 16), "float16")
    with StoreWriter(d, GRID, "vgg16", spec, {"test": GRID}) as w:
        assert any("pixels" in q for q in w.quarantined)
    assert [s["file"] for s in json.loads((d / "manifest.json").read_text())["shards"]] == ["shard-00000.h5"]


def test_legit_orphan_of_a_killed_run_is_still_adopted(tiny):
    cache, _ = tiny
    spec = FeatureSpec("tokens", (12,), "int32")
    d = _stray(cache, TOKENS, spec, ["new1"], np.ones((1, 12), np.int32), sources=["fresh"])
    with StoreWriter(d, TOKENS, "tokens", spec, {"test": TOKENS}) as w:
        assert not w.quarantined
    assert "new1" in FeatureStore(d)


def test_shard_is_hashed_once_then_only_after_it_changes(tiny, monkeypatch):
    cache, _ = tiny
    d = paths.store_dir("tiny", TOKENS, cache)
    (d / integrity.STAMPS).unlink(missing_ok=True)
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real(p))
    FeatureStore(d)
    FeatureStore(d)
    assert len(calls) == 1
    os.utime(_shard(cache), ns=(1, 1))  # same bytes, new mtime: hashed again, still fine
    FeatureStore(d)
    assert len(calls) == 2


def test_writer_stamps_its_shards_so_the_first_read_does_not_hash(tmp_path, monkeypatch):
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real(p))
    write_store(tmp_path, "tiny", TOKENS, FeatureSpec("tokens", (2,), "int32"), ["a"], np.ones((1, 2), np.int32))
    FeatureStore(paths.store_dir("tiny", TOKENS, tmp_path))
    assert calls == []


def test_repair_quarantines_and_the_next_extract_redoes(tiny):
    cache, runs = tiny
    _flip_feature(_shard(cache))
    r = pipe("store", "repair", "--dataset", "tiny", "--extractor", "tokens", "--cache", cache)
    assert r.exit_code == 0 and "quarantine" in r.output
    d = paths.store_dir("tiny", TOKENS, cache)
    assert verify_store(d) == [] and len(FeatureStore(d)) == 0 and (d / "quarantine" / "reasons.jsonl").exists()
    with StoreWriter(d, TOKENS, "tokens", FeatureSpec("tokens", (12,), "int32"), {}) as w:
        assert w.done_sources() == {}  # nothing stored: every post is extracted again


def test_train_refuses_while_an_extraction_holds_the_store(tiny):
    cache, runs = tiny
    with store_lock(paths.store_dir("tiny", TOKENS, cache)):  # another open file: the lock conflicts
        r = _train(cache, runs)
    assert r.exit_code == 2 and "is writing to" in r.output and "half-written" in r.output


def test_reader_and_writer_share_one_lock_across_processes(tiny):
    cache, _ = tiny
    d = paths.store_dir("tiny", TOKENS, cache)
    code = ("import sys,time; from pathlib import Path; from pipeline.store import FeatureStore, store_lock\n"
            "with store_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(30)")
    p = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(PipeError, match="half-written"):
            FeatureStore(d)
    finally:
        p.kill()
        p.wait()
    FeatureStore(d)  # the writer is gone: the store opens


# -- 3. coverage ----------------------------------------------------------------------------
def test_partial_store_is_refused_with_counts(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    posts = make_dataset(cache, n=60, stores=(GRID,))
    ids = posts["post_id"].to_list()[:40]  # an extraction still running: 40 of 60 posts
    write_store(cache, "tiny", TOKENS, FeatureSpec("tokens", (12,), "int32"), ids, np.ones((40, 12), np.int32))
    r = _train(cache, runs)
    assert r.exit_code == 2 and "covers 40 of 60" in r.output and "--min-coverage" in r.output
    r = _train(cache, runs, "--min-coverage", "0.5", "--name", "low")
    assert r.exit_code == 0 and "covers 40 of 60" in r.output


def test_posts_without_image_are_known_missing_not_refused(tiny):
    cache, runs = tiny
    r = _train(cache, runs, "--name", "ok")
    assert r.exit_code == 0, r.output
    assert "covers 54 of 54" in r.output and "6 without an image" in r.output


def test_empty_store_is_never_picked(tiny):
    cache, runs = tiny
    (paths.store_dir("tiny", TOKENS, cache) / "shard-00000.h5").unlink()
    m = paths.store_dir("tiny", TOKENS, cache) / "manifest.json"
    doc = json.loads(m.read_text())
    doc["shards"] = []
    m.write_text(json.dumps(doc))
    r = _train(cache, runs, "--name", "e")
    assert r.exit_code == 0 and f"store {TOKENS} has no rows yet" in r.output
    assert TOKENS not in json.dumps(json.loads((runs / "e" / "config.json").read_text())["stores"])
    r = pipe("train", "--dataset", "tiny", "--head", "uhan", "--cache", cache, "--runs", runs)  # text is required
    assert r.exit_code == 2 and "needs a" in r.output


def test_failed_weights_load_leaves_no_store(tmp_path):
    from tests._extract_data import image_posts, write_posts

    cache = tmp_path / "cache"
    write_posts(cache, "d", image_posts(cache, "d", 2))
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"not a state dict")
    r = pipe("extract", "--dataset", "d", "--backbone", "vgg16", "--image-size", "32", "--weights", bad,
             "--num-workers", "0", "--cache", cache, "-q")
    assert r.exit_code == 2 and "w.pt" in r.output
    assert list(paths.features_dir("d", cache).iterdir()) == []  # the writer had started; its store is gone


# -- 4. no tracebacks -----------------------------------------------------------------------
def _smash_header(p):
    data = bytearray(p.read_bytes())
    data[0:64] = b"\x00" * 64
    p.write_bytes(bytes(data))


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_smash_header, _truncate], ids=["header", "truncated"])
def test_unreadable_shard_is_a_message_in_train_ls_and_extract(tiny, damage):
    cache, runs = tiny
    damage(_shard(cache))
    for r in (_train(cache, runs), pipe("store", "ls", "--cache", cache)):
        assert r.exit_code == 1 and "shard-00000.h5" in r.output
    with pytest.raises(IntegrityError, match="shard-00000.h5"):  # a resumed extraction's writer
        with StoreWriter(paths.store_dir("tiny", TOKENS, cache), TOKENS, "tokens",
                         FeatureSpec("tokens", (12,), "int32"), {"test": TOKENS}):
            pass


def test_reingest_over_a_corrupt_table_sets_it_aside(tmp_path):
    cache = tmp_path / "cache"
    src = tmp_path / "in.csv"
    src.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\n")
    assert pipe("ingest", src, "--name", "d", "--cache", cache, "--skip-invalid").exit_code == 0
    paths.posts_path("d", cache).write_bytes(b"PAR1 garbage")
    bad = tmp_path / "bad.csv"
    bad.write_text("post_id,user_id,posted_at,score\nb,u,never,1\n")
    assert pipe("ingest", bad, "--name", "d", "--cache", cache).exit_code == 2
    assert (cache / "d" / "rejected.parquet").exists()  # a failed ingest changes nothing
    r = pipe("ingest", src, "--name", "d", "--cache", cache)
    assert r.exit_code == 0 and "set aside" in r.output
    assert list((cache / "d").glob("posts.unreadable-*.parquet"))


def test_corrupt_posts_table_is_a_message_in_train(tiny):
    cache, runs = tiny
    paths.posts_path("tiny", cache).write_bytes(b"PAR1 garbage")
    r = _train(cache, runs)
    assert r.exit_code == 1 and "posts.parquet" in r.output and "pipe ingest" in r.output


@pytest.fixture
def scored_run(tiny, tmp_path):
    cache, runs = tiny
    r = pipe("train", "--dataset", "tiny", "--head", "uhan", "--cache", cache, "--runs", runs, "--name", "u",
             "--set", "max_steps=2", "--set", "eval_every=1", "--set", "dim=8", "--set", "device=cpu")
    assert r.exit_code == 0, r.output
    new = tmp_path / "new.parquet"
    pl.read_parquet(paths.posts_path("tiny", cache)).head(3).write_parquet(new)
    return cache, runs, runs / "u", new


@pytest.mark.parametrize("file,content", [("model/head.json", b"{not json"), ("model/model.pt", b"\x80garbage"),
                                          ("config.json", b"\xff\xfe"), ("metrics.json", b"[1,")])
def test_damaged_run_file_is_named(scored_run, tmp_path, file, content):
    cache, runs, run, new = scored_run
    target = run / file
    if not target.exists():  # the head's weights file name
        target = next((run / "model").glob("*.pt"))
    target.write_bytes(content)
    r = pipe("score", "--run", run, "--posts", new, "--out", tmp_path / "s.parquet", "--cache", cache, "--runs", runs)
    assert r.exit_code == 1 and target.name in r.output and "again" in r.output


def test_stale_temp_of_a_killed_ingest_is_removed(tmp_path):
    cache = tmp_path / "cache"
    src = tmp_path / "in.csv"
    src.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (cache / "d").mkdir(parents=True)
    stale = cache / "d" / f".tmp-{dead.pid}-posts.parquet"
    stale.write_bytes(b"partial")
    assert pipe("ingest", src, "--name", "d", "--cache", cache).exit_code == 0
    assert not stale.exists()


# -- 5. text bytes kept or refused -----------------------------------------------------------
def test_non_utf8_jsonl_is_refused_naming_the_line_or_decoded_as_told(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_bytes(b'{"post_id": "a", "user_id": "u", "posted_at": "2024-01-01", "score": 1, "title": "ok"}\n'
                  b'{"post_id": "b", "user_id": "u", "posted_at": "2024-01-02", "score": 2, "title": "caf\xe9"}\n')
    r = pipe("ingest", p, "--name", "d", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "line 2" in r.output and "--encoding" in r.output
    assert not paths.posts_path("d", tmp_path / "cache").exists()
    assert pipe("ingest", p, "--name", "d", "--cache", tmp_path / "cache", "--encoding", "latin-1").exit_code == 0
    assert pl.read_parquet(paths.posts_path("d", tmp_path / "cache"))["title"].to_list()[1] == "café"


def test_non_utf8_csv_is_refused_naming_the_line(tmp_path):
    p = tmp_path / "p.csv"
    p.write_bytes(b"post_id,user_id,posted_at,score,title\na,u,2024-01-01,1,x\nb,u,2024-01-02,2,caf\xe9\n")
    r = pipe("ingest", p, "--name", "d", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "line 3" in r.output


def test_ragged_csv_names_the_line(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("post_id,user_id,posted_at,score\na,u,2024-01-01,1\nb,u,2024-01-02,2,extra,fields\n")
    r = pipe("ingest", p, "--name", "d", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "line 3" in r.output
