"""Fault tests of issue 20 (integrity and security, second round): each reproduces one line of
the issue's "Why" and asserts what README's "Guarantees" promise.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import polars as pl
import pytest

import pipeline.cli as cli
from pipeline.core import paths
from pipeline.core.errors import IntegrityError, PipeError
from pipeline.core.io import append_line, atomic_write_bytes, hold_lock
from pipeline.extract import build_extractor, run_extract
from pipeline.run.rundir import Run, RunWriter
from pipeline.score import open_training_store
from pipeline.store import FeatureStore, Manifest, StoreWriter, repair_store
from pipeline.store.coverage import store_coverage
from tests._extract_data import image_posts, save_image, write_posts
from tests._tiny_data import GRID, TOKENS, make_dataset
from tests.test_faults import pipe, runner


# -- stale features (item 3) ------------------------------------------------------------
@pytest.mark.slow
def test_reingest_with_changed_gone_or_unreadable_images_serves_no_old_features(tmp_path):
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 6)
    write_posts(cache, "d", rows)
    ex = build_extractor("pixels", image_size=16)
    first = run_extract("d", ex, cache, quiet=True, num_workers=0)
    before = FeatureStore(first.store)
    old = {p: before.read([p])[0].copy() for p in before.ids}

    bad = cache / "images" / "bad.jpg"
    bad.write_bytes(b"not an image")
    rows[1]["image"] = None  # image removed
    rows[2]["image"] = str(bad)  # now an unreadable file
    rows[3]["image"] = save_image(cache / "images" / "new3.jpg", 99)  # another image
    (cache / "images" / "4.jpg").write_bytes(b"\xff\xd8 truncated")  # same path, now unreadable
    write_posts(cache, "d", rows)
    run_extract("d", ex, cache, quiet=True, num_workers=0)
    st = FeatureStore(first.store)
    assert {"p001", "p002", "p004"}.isdisjoint(st.ids)  # never their old features
    assert not np.array_equal(st.read(["p003"])[0], old["p003"])  # the new image's features
    assert np.array_equal(st.read(["p000"])[0], old["p000"])  # unchanged posts keep theirs
    cov = store_coverage(st, pl.DataFrame(rows).select("post_id", "image"), "visual", image=True)
    assert (cov.present, cov.no_image, sum(cov.failed.values())) == (3, 1, 2)

    rows[1]["image"] = old_path = str((cache / "images" / "1.jpg").resolve())  # the old image again
    write_posts(cache, "d", rows)
    again = run_extract("d", ex, cache, quiet=True, num_workers=0)
    assert again.extracted == 1 and old_path and np.array_equal(FeatureStore(first.store).read(["p001"])[0], old["p001"])


def _withdraw(cache, eid, ids):
    """Change a store the way a re-extraction does: some rows withdrawn."""
    d = paths.store_dir("tiny", eid, cache)
    m = Manifest.load(d)
    with StoreWriter(d, m.extractor_id, m.extractor, m.spec, m.config) as w:
        w.withdraw(ids)


@pytest.mark.slow
def test_run_says_when_its_store_changed_or_went(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    posts = make_dataset(cache, n=60, stores=(GRID, TOKENS))
    r = pipe("train", "--dataset", "tiny", "--head", "uhan", "--cache", cache, "--runs", runs, "--name", "u",
             "--set", "max_steps=2", "--set", "eval_every=1", "--set", "dim=8", "--set", "device=cpu")
    assert r.exit_code == 0, r.output
    pid = posts["post_id"][0]
    ok = pipe("evaluate", runs / "u", "--runs", runs, "--out", tmp_path / "ev")
    assert ok.exit_code == 0 and "since the run trained" not in ok.output
    _withdraw(cache, GRID, [posts["post_id"][1]])
    r = pipe("explain", "--run", runs / "u", "--post", pid, "--out", tmp_path / "ex", "--cache", cache, "--runs", runs)
    assert r.exit_code == 0 and f"store {GRID} of dataset 'tiny' changed" in r.output, r.output
    r = pipe("evaluate", runs / "u", "--runs", runs, "--out", tmp_path / "ev")
    assert r.exit_code == 0 and "changed (re-extracted or re-ingested) since the run trained on it" in r.output
    shutil.rmtree(paths.store_dir("tiny", TOKENS, cache))
    r = pipe("evaluate", runs / "u", "--runs", runs, "--out", tmp_path / "ev")
    assert f"store {TOKENS} of dataset 'tiny' is gone since the run trained on it" in r.output


def test_a_store_removed_under_a_running_train_stops_it(tmp_path):
    """`pipe store rm` while a train reads the store: the train stops at its next evaluation with a
    message naming the store, and the run is marked interrupted, never "written" on deleted files."""
    from pipeline.core.config import parse_sets
    from pipeline.run.train import TrainOptions, train

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    make_dataset(cache, n=60, stores=(GRID, TOKENS))

    def remove_after_the_first_evaluation(entry):
        if entry["step"] >= 1 and paths.store_dir("tiny", GRID, cache).exists():
            shutil.rmtree(paths.store_dir("tiny", GRID, cache))

    opts = TrainOptions("tiny", "uhan", sets=parse_sets(["max_steps=6", "eval_every=1", "dim=8", "device=cpu"]),
                        name="u", runs=runs, cache=cache)
    with pytest.raises(PipeError, match=f"store {GRID} of dataset 'tiny' was removed while training"):
        train(opts, watch=remove_after_the_first_evaluation)
    assert (runs / "u" / "interrupted.json").is_file() and not (runs / "u" / "metrics.json").exists()
    assert "removed while training" in (runs / "u" / "interrupted.json").read_text()


# -- another dataset's posts (item 4) ---------------------------------------------------
@pytest.fixture
def hisave_run(tmp_path):
    """A run that reads no store: scoring it needs no extractor."""
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    posts = make_dataset(cache, n=60, stores=())
    r = pipe("train", "--dataset", "tiny", "--head", "hisave", "--cache", cache, "--runs", runs, "--name", "u")
    assert r.exit_code == 0, r.output
    return cache, runs, posts


@pytest.mark.slow
def test_score_never_replaces_a_dataset_it_did_not_make(hisave_run, tmp_path):
    cache, runs, posts = hisave_run
    full, new, other = tmp_path / "full.parquet", tmp_path / "new.parquet", tmp_path / "other.parquet"
    posts.write_parquet(full)
    posts.head(5).write_parquet(new)
    posts.tail(4).write_parquet(other)
    assert pipe("ingest", full, "--name", "x", "--cache", cache).exit_code == 0  # another run's training data
    before = paths.posts_path("x", cache).read_bytes()

    def score(f, name, *extra):
        return pipe("score", "--run", runs / "u", "--posts", f, "--out", tmp_path / "s.parquet", "--dataset", name,
                    "--cache", cache, "--runs", runs, *extra)

    r = score(new, "x")
    assert r.exit_code == 2 and "dataset 'x' exists, made by `pipe ingest`" in r.output, r.output
    assert paths.posts_path("x", cache).read_bytes() == before  # 120 posts -> 5 no more
    assert score(new, "mine").exit_code == 0
    posts.head(7).write_parquet(new)  # the same file, changed: the normal re-scoring case
    r = score(new, "mine")
    assert r.exit_code == 0 and pl.read_parquet(tmp_path / "s.parquet").height == 7, r.output
    r = score(other, "mine")
    assert r.exit_code == 2 and "made by `pipe score` from" in r.output and "--overwrite-dataset" in r.output
    r = score(other, "mine", "--overwrite-dataset")
    assert r.exit_code == 0 and pl.read_parquet(paths.posts_path("mine", cache)).height == 4


# -- no write through a link (item 1) ---------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    cache = tmp_path / "cache"
    make_dataset(cache, n=30, stores=(GRID, TOKENS))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    return cache, victim


def _writer(d):
    m = Manifest.load(d)
    return StoreWriter(d, m.extractor_id, m.extractor, m.spec, m.config)


def test_store_lock_that_is_a_link_is_refused_not_truncated(tiny):
    cache, victim = tiny
    d = paths.store_dir("tiny", TOKENS, cache)
    (d / ".lock").unlink()
    (d / ".lock").symlink_to(victim)
    for opening in (lambda: _writer(d).__enter__(), lambda: repair_store(d), lambda: FeatureStore(d)):
        with pytest.raises(IntegrityError, match="symbolic link"):
            opening()
    r = pipe("store", "rm", "--dataset", "tiny", "--extractor", TOKENS, "--cache", cache)
    assert r.exit_code != 0 and "symbolic link" in r.output
    assert victim.read_text() == "keep"


def test_quarantine_that_is_a_link_is_refused(tiny, tmp_path):
    cache, _ = tiny
    d = paths.store_dir("tiny", TOKENS, cache)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (d / "quarantine").symlink_to(outside)
    shard = d / "shard-00000.h5"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x5A
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="quarantine"):
        repair_store(d)
    assert list(outside.iterdir()) == [] and shard.exists()


def test_atomic_writes_replace_a_planted_link_never_write_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    for name in ("tune.json", "trials.csv", f".tmp-{os.getpid()}-x.json"):
        (tmp_path / name).symlink_to(victim)
    atomic_write_bytes(tmp_path / "tune.json", b"{}")
    atomic_write_bytes(tmp_path / "x.json", b"{}")  # its temp name was planted as a link
    assert victim.read_text() == "keep" and not (tmp_path / "tune.json").is_symlink()
    assert (tmp_path / "tune.json").read_bytes() == b"{}" and (tmp_path / "x.json").read_bytes() == b"{}"
    with pytest.raises(IntegrityError, match="symbolic link"):
        append_line(tmp_path / "trials.csv", "x")
    assert victim.read_text() == "keep"


def test_a_runs_recorded_cache_never_becomes_a_place_to_write(tmp_path):
    recorded, given = tmp_path / "other-cache", tmp_path / "cache"
    make_dataset(recorded, n=30, stores=(TOKENS,))
    given.mkdir()
    d = paths.store_dir("tiny", TOKENS, recorded)
    for f in (".lock", ".verified.json"):
        (d / f).unlink(missing_ok=True)
    run = Run(tmp_path / "r", {"dataset": "tiny", "cache": str(recorded), "head": "x",
                               "stores": {"text": {"extractor_id": TOKENS}}}, None)
    st = open_training_store(run, TOKENS, given)
    assert len(st) == 30 and sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []


# -- one writer per name (item 5) -------------------------------------------------------
def test_a_second_train_of_the_same_name_refuses_while_the_first_runs(tmp_path):
    first = RunWriter(tmp_path / "runs", "same")
    with pytest.raises(PipeError, match="being written by another `pipe train`"):
        RunWriter(tmp_path / "runs", "same")
    first.write_config({"head": "x"})
    os.close(first._lock)  # the first ended: its folder is taken, not reusable
    with pytest.raises(PipeError, match="already exists"):
        RunWriter(tmp_path / "runs", "same")


def test_a_second_tune_of_the_same_name_refuses_and_leaves_the_live_trial_alone(tmp_path):
    """The second `pipe tune --name same` marked the first's live trial failed (a trial lost)."""
    import optuna

    from pipeline.run.tune import STAGING, STUDY_FILE

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    make_dataset(cache, n=30, stores=(TOKENS,))
    stage = runs / STAGING / "same"
    stage.mkdir(parents=True)
    study = optuna.create_study(study_name="tune", storage=f"sqlite:///{stage / STUDY_FILE}")
    study.ask()  # the first search's trial, running now
    first = hold_lock(runs / STAGING / "same.lock", "busy")  # held by the first search while it runs
    r = pipe("tune", "--dataset", "tiny", "--head", "uhan", "--trials", "2", "--name", "same", "--cache", cache,
             "--runs", runs)
    assert r.exit_code == 2 and "study 'same' is being searched by another `pipe tune`" in r.output, r.output
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]
    os.close(first)


@pytest.mark.parametrize("planted", ["trials.csv", "tune.json"])
def test_tune_files_that_are_links_are_never_written_through(tmp_path, planted):
    """`runs/.tune/NAME/tune.json` or `trials.csv` planted as a link to a file outside: `pipe tune`
    overwrote its target. Now a linked trials.csv is replaced (the search finishes) and a linked
    tune.json, which a resumed search reads, is refused by name (exit 1); the outside file keeps its bytes."""
    from pipeline.run.tune import STAGING

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    make_dataset(cache, n=40, stores=())
    stage = runs / STAGING / "linked"
    stage.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (stage / planted).symlink_to(outside)
    r = pipe("tune", "--dataset", "tiny", "--head", "hisave", "--trials", "1", "--name", "linked", "--cache", cache,
             "--runs", runs)
    assert outside.read_text() == "keep me"
    if planted == "trials.csv":
        assert r.exit_code == 0, r.output
        assert (runs / "linked" / planted).is_file() and not (runs / "linked" / planted).is_symlink()
    else:
        assert r.exit_code == 1 and "tune.json is a symbolic link" in r.output, r.output


def test_ingest_holds_the_datasets_lock_for_the_whole_replace(tmp_path):
    """Two `pipe ingest` of one name (one with --skip-invalid) left one's posts with the other's rejected rows."""
    cache, f = tmp_path / "cache", tmp_path / "p.csv"
    f.write_text("post_id,user_id,posted_at,score\na,u,1700000000,1\nb,u,1700000001,x\n")
    assert pipe("ingest", f, "--name", "x", "--cache", cache, "--skip-invalid").exit_code == 0
    before = {n: (cache / "x" / n).read_bytes() for n in ("posts.parquet", "rejected.parquet")}
    busy = hold_lock(cache / "x" / ".ingest.lock", "busy")  # another ingest is replacing it
    g = tmp_path / "g.csv"
    g.write_text("post_id,user_id,posted_at,score\nc,u,1700000000,1\n")
    r = pipe("ingest", g, "--name", "x", "--cache", cache)
    assert r.exit_code == 2 and "dataset 'x' is being ingested by another command" in r.output, r.output
    assert before == {n: (cache / "x" / n).read_bytes() for n in before}
    os.close(busy)
    assert pipe("ingest", g, "--name", "x", "--cache", cache).exit_code == 0
    assert not (cache / "x" / "rejected.parquet").exists()


# -- atomic outputs (item 7) ------------------------------------------------------------
def test_score_out_over_old_scores_on_a_full_disk_keeps_them(hisave_run, tmp_path, monkeypatch):
    cache, runs, posts = hisave_run
    new, out = tmp_path / "new.parquet", tmp_path / "s.parquet"
    posts.head(5).write_parquet(new)
    args = ("score", "--run", runs / "u", "--posts", new, "--out", out, "--cache", cache, "--runs", runs)
    assert pipe(*args).exit_code == 0
    old = out.read_bytes()
    real = pl.DataFrame.write_parquet

    def full_disk(self, file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and str(file).endswith("s.parquet"):
            open(file, "wb").write(b"\0" * 4096)  # what a full disk leaves of a direct write
            raise OSError(28, "No space left on device")
        return real(self, file, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full_disk)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    r = runner.invoke(cli.app, [str(a) for a in args])
    assert r.exit_code != 0 and out.read_bytes() == old
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no half-written temp left


def test_evaluate_files_are_written_atomically_never_through_a_link(hisave_run, tmp_path):
    """`pipe evaluate --out` replaces its CSV and Markdown whole; a planted link at either is replaced, never written
    through (issue 20, item 7)."""
    from pipeline.evaluate.compare import comparison_rows, write_comparison
    from pipeline.run.rundir import load_run

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "cmp.md").symlink_to(outside)
    cache, runs, _ = hisave_run
    written = write_comparison(comparison_rows([load_run(runs / "u")]), tmp_path / "cmp")
    assert outside.read_text() == "keep me"
    assert not (tmp_path / "cmp.md").is_symlink() and (tmp_path / "cmp.md") in written
    assert "hisave" in (tmp_path / "cmp.md").read_text()
