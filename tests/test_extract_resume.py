"""`pipe extract` as separate processes: SIGKILL then resume, and two extractions of one store."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import h5py
import pytest
from tests._extract_data import image_posts, pipe, vgg16_features_weights, write_posts
from typer.testing import CliRunner

from pipeline.cli import _load_commands, app
from pipeline.extract import build_extractor, run_extract
from pipeline.store import FeatureStore, store_lock

pytestmark = pytest.mark.slow

_load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return vgg16_features_weights(tmp_path_factory.mktemp("weights") / "vgg16-features.pt", 0.05)


def _args(cache: Path, weights: str, *extra: str) -> list[str]:
    return ["extract", "--dataset", "d", "--backbone", "vgg16", "--image-size", "64", "--weights", weights,
            "--cache", str(cache), *extra]


def _finish(p, timeout: float = 120) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def _shard_ids(store: Path) -> list[str]:
    ids = []
    for f in sorted(store.glob("shard-*.h5")):
        with h5py.File(f, "r") as h:
            ids += [s.decode() for s in h["post_id"][()]]
    return ids


def _wait_for_lock_release(store: Path, seconds: float = 30) -> None:
    """Until the store's lock is free: the DataLoader worker inherited the lock's open file, and
    the kernel frees the lock when the last process holding it has exited (a moment after SIGKILL
    on a loaded machine; `p.wait()` reaps the CLI only)."""
    import fcntl

    deadline = time.monotonic() + seconds
    fd = os.open(store / ".lock", os.O_RDONLY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, f"the store lock is still held {seconds} s after SIGKILL"
                time.sleep(0.01)
    finally:
        os.close(fd)


def test_sigkill_mid_run_then_rerun_resumes(tmp_path, weights):
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 24)
    write_posts(cache, "d", rows)
    # 64 px at batch 1 is quick per image, but shard writes (fsync, manifest) leave room to kill mid-run
    p = pipe(*_args(cache, weights, "--shard-size", "2", "--batch-size", "1", "--num-workers", "1"))
    features = cache / "d" / "features"
    deadline = time.monotonic() + 120
    while not list(features.glob("*/shard-00000.h5")):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)  # the CLI and its DataLoader worker
    p.wait()
    assert p.returncode == -signal.SIGKILL
    store = next(features.iterdir())
    _wait_for_lock_release(store)
    kept = {f.name: f.read_bytes() for f in store.glob("shard-*.h5")}  # complete by construction (renamed)
    assert 1 <= len(kept) < 12, "the kill came too late to test a resume"

    r = run_extract("d", build_extractor("vgg16", image_size=64, weights=weights), cache=cache, shard_size=2,
                    num_workers=0, quiet=True)
    assert r.store == store and r.extracted == len(rows) - 2 * len(kept) and r.skipped == 2 * len(kept)
    assert all((store / n).read_bytes() == b for n, b in kept.items())  # finished shards untouched
    ids = _shard_ids(store)
    assert len(ids) == len(set(ids)) == len(rows)  # no duplicates, every post present
    assert sorted(FeatureStore(store).ids) == sorted(r["post_id"] for r in rows)
    assert not list(store.glob(".tmp-*"))
    res = runner.invoke(app, ["store", "verify", "--dataset", "d", "--cache", str(cache)])
    assert res.exit_code == 0 and "all shards intact" in res.output, res.output


def _blocked_on_lock(pid: int) -> bool:
    """/proc/locks lists a process waiting for an flock as `N: -> FLOCK ... WRITE <pid> ...`."""
    return any("->" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines())


def test_second_extract_refuses_or_waits(tmp_path, weights):
    cache = tmp_path / "cache"
    write_posts(cache, "d", image_posts(cache, "d", 3))
    store = run_extract("d", build_extractor("vgg16", image_size=64, weights=weights), cache=cache,
                        num_workers=0, quiet=True).store

    with store_lock(store):  # this process is now "the first extraction" holding the store
        res = runner.invoke(app, _args(cache, weights))  # a second lock on the file, even from this process, is refused
        assert res.exit_code == 2, res.output
        assert f"another process (pid {os.getpid()}) is writing to" in res.output and "--wait" in res.output
        assert "Traceback" not in res.output
        waiter = pipe(*_args(cache, weights, "--wait"))
        deadline = time.monotonic() + 120
        while not _blocked_on_lock(waiter.pid):
            assert waiter.poll() is None, waiter.communicate()
            assert time.monotonic() < deadline, "the --wait process never queued on the lock"
            time.sleep(0.05)
    code, out, err = _finish(waiter)  # the lock is released: it goes on, finds everything done
    assert code == 0, err
    assert "extracted 0" in out and "skipped 3 already stored" in out
