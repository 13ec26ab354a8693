"""Fault tests of issue 20, items 7 and 8: a full disk or a read-only cache is one line naming the
path and the cause (exit 1), never a traceback; nothing half-written looks finished afterwards.

The disk is filled by making `os.fsync` fail with ENOSPC (every pipe writer fsyncs before its
rename), the cache made read-only by making writes under it fail with EROFS.
"""
from __future__ import annotations

import errno
import os

import pytest

from pipeline.core import paths
from pipeline.run.rundir import load_run
from tests._extract_data import image_posts, write_posts
from tests.test_faults import pipe
from tests.test_faults_integrity import hisave_run  # noqa: F401 (a fixture)


def _fd_path(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def full_disk(monkeypatch, when=lambda path: True):
    """From now on (or once `when` says so for a file being written), the disk is full."""
    real, state = os.fsync, {"full": False}

    def fsync(fd):
        state["full"] = state["full"] or when(_fd_path(fd))
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def read_only(monkeypatch, root):
    """Every write, create or mkdir under `root` fails as on a read-only file system."""
    root = str(root)
    real_open, real_mkdir = os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def ro_open(path, flags, *a, **k):
        if str(path).startswith(root) and flags & writes:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    def ro_mkdir(path, *a, **k):
        if str(path).startswith(root):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)


def one_error_line(r, cause, where):
    errors = [line for line in r.output.split("error:")[1:]]
    assert r.exit_code == 1 and len(errors) == 1, r.output
    assert cause in errors[0] and where in errors[0], r.output


@pytest.fixture
def images(tmp_path):
    cache = tmp_path / "cache"
    write_posts(cache, "d", image_posts(cache, "d", 3))
    return cache


EXTRACT = ("--backbone", "pixels", "--image-size", "16", "--num-workers", "0", "--device", "cpu")


def test_extract_on_a_full_disk_or_a_read_only_cache_is_one_line(images, monkeypatch):
    with monkeypatch.context() as m:
        full_disk(m)
        r = pipe("extract", "--dataset", "d", *EXTRACT, "--cache", images)
    one_error_line(r, "No space left on device (ENOSPC); free some space", str(images / "d" / "features"))
    with monkeypatch.context() as m:
        read_only(m, images / "d" / "features")
        r = pipe("extract", "--dataset", "d", *EXTRACT, "--cache", images)
    one_error_line(r, "Read-only file system (EROFS)", str(images / "d" / "features"))


def test_ingest_on_a_full_disk_or_a_read_only_cache_is_one_line(tmp_path, monkeypatch):
    f = tmp_path / "p.csv"
    f.write_text("post_id,user_id,posted_at,score\na,u,1700000000,1\n")
    with monkeypatch.context() as m:
        full_disk(m)
        r = pipe("ingest", f, "--name", "x", "--cache", tmp_path / "cache")
    one_error_line(r, "No space left on device", str(tmp_path / "cache" / "x"))
    assert not paths.posts_path("x", tmp_path / "cache").exists()  # nothing half-written looks finished
    (tmp_path / "ro").mkdir()
    with monkeypatch.context() as m:
        read_only(m, tmp_path / "ro")
        r = pipe("ingest", f, "--name", "x", "--cache", tmp_path / "ro")
    one_error_line(r, "Read-only file system", str(tmp_path / "ro"))


@pytest.mark.slow
def test_a_train_whose_disk_fills_writing_its_model_is_failed_not_running(hisave_run, monkeypatch):
    """A full disk during train left a truncated model.pt, a 0-byte temp file, and `pipe evaluate`
    reported the run "running" forever."""
    cache, runs, _ = hisave_run
    with monkeypatch.context() as m:
        full_disk(m, when=lambda path: "model" in path)  # full from the model's first file on
        r = pipe("train", "--dataset", "tiny", "--head", "hisave", "--cache", cache, "--runs", runs, "--name", "v")
    one_error_line(r, "No space left on device", str(runs / "v"))
    run = load_run(runs / "v")
    assert run.status == "failed" and run.metrics is None
    assert not (runs / "v" / "model").exists() or not any((runs / "v" / "model").iterdir())
    assert not [p for p in (runs / "v").iterdir() if p.name.startswith(".tmp-")]
    r = pipe("evaluate", runs / "v", "--runs", runs, "--out", runs.parent / "ev")
    assert "failed" in r.output and "running" not in r.output, r.output


@pytest.mark.slow
def test_score_and_report_on_a_full_disk_or_a_read_only_cache_are_one_line(hisave_run, tmp_path, monkeypatch):
    cache, runs, posts = hisave_run
    new = tmp_path / "new.parquet"
    posts.head(5).write_parquet(new)
    score = ("score", "--run", runs / "u", "--posts", new, "--out", tmp_path / "s.parquet", "--cache", cache,
             "--runs", runs)
    with monkeypatch.context() as m:
        full_disk(m)
        r = pipe(*score)
    one_error_line(r, "No space left on device", str(cache))
    with monkeypatch.context() as m:
        read_only(m, cache)
        r = pipe(*score)
    one_error_line(r, "Read-only file system", str(cache))
    with monkeypatch.context() as m:
        full_disk(m)
        r = pipe("report", runs / "u", "--runs", runs, "--cache", cache, "--out", tmp_path / "r.html")
    one_error_line(r, "No space left on device", str(tmp_path / "r.html"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-") or p.name == "r.html"]


def test_temp_files_of_a_killed_writer_go_with_the_next_write(tmp_path):
    """A full disk (or a kill) during report left a `.tmp-PID-report.html` that nothing removed."""
    import subprocess
    import sys

    from pipeline.core.io import atomic_write_bytes, remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".tmp-{pid}-report.html").write_text("<html half")
    (tmp_path / f".tmp-{pid}-model").mkdir()  # a killed train's model folder
    (tmp_path / f".tmp-{pid}-model" / "model.pt").write_bytes(b"\0" * 10)
    live = tmp_path / f".tmp-{os.getpid()}-other.html"
    live.write_text("being written")
    atomic_write_bytes(tmp_path / "report.html", b"<html>")
    assert not (tmp_path / f".tmp-{pid}-report.html").exists() and (tmp_path / "report.html").read_bytes() == b"<html>"
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "report.html"])
