"""Extraction on a dask cluster: the same store as one process, and a killed worker loses no shard."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tests._extract_data import image_posts, post, vgg16_features_weights, write_posts
from distributed import LocalCluster
from typer.testing import CliRunner

from extractors.pixels import Pixels, PixelsConfig
from pipeline.cli import _load_commands, app
from pipeline.core.errors import PipeError, StoreError
from pipeline.core.io import sha256_file
from pipeline.core.specs import FeatureSpec
from pipeline.extract import RunOptions, build_extractor, run_extract
from pipeline.extract.options import ShardResult
from pipeline.extract.writer import write_result
from pipeline.store import FeatureStore, read_failures, verify_store

_load_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread, shared by the tests that pass its address as --scheduler."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """Scaled so pool5 stays near 1 (float16 steps of ~1e-4 there)."""
    return vgg16_features_weights(tmp_path_factory.mktemp("weights") / "vgg16-features.pt", 0.025)


def _dataset(cache: Path, n: int) -> list[dict]:
    """n JPEGs of two shapes, a corrupt file and a post without an image, in `cache` and a twin cache."""
    rows = image_posts(cache, "d", n // 2) + image_posts(cache, "d", n - n // 2, start=n // 2, size=(24, 48))
    bad = cache / "images" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows += [post("bad", str(bad), n), post("noimg", None, n + 1)]
    for i, r in enumerate(rows):
        r["title"] = f"word{i % 4} by the lake"
    write_posts(cache, "d", rows)
    write_posts(cache / "single", "d", rows)  # the same posts (same image files) for the one-process run
    return rows


def _assert_same_store(a: Path, b: Path, failures: int = 2) -> None:
    sa, sb = FeatureStore(a), FeatureStore(b)
    assert sa.extractor_id == sb.extractor_id and sorted(sa.ids) == sorted(sb.ids)
    ids = sorted(sa.ids)
    diff = np.abs(sa.read(ids).astype(np.float32) - sb.read(ids).astype(np.float32)).max()
    assert diff <= 1e-3, diff
    fa, fb = read_failures(a).sort("post_id"), read_failures(b).sort("post_id")
    assert fa.equals(fb) and fa.height == failures  # images: the corrupt file and the post without one
    assert [s["rows"] for s in sa.manifest.shards] == [s["rows"] for s in sb.manifest.shards]
    assert verify_store(a) == [] and not list(a.glob(".tmp-*"))


@pytest.mark.slow
@pytest.mark.dask
def test_cluster_writes_the_single_process_store(tmp_path, cluster, weights):
    cache = tmp_path / "cache"
    rows = _dataset(cache, 10)
    cases = (("pixels", {"image_size": 16}), ("vgg16", {"image_size": 64, "weights": weights}),
             ("tokens", {"min_count": 1}))
    for name, over in cases:
        one = run_extract("d", build_extractor(name, **over), cache=cache / "single", shard_size=3, num_workers=0,
                          quiet=True)
        dist = run_extract("d", build_extractor(name, **over), cache=cache, shard_size=3, scheduler=cluster, quiet=True)
        image = name != "tokens"
        assert (dist.extracted, dist.failed, dist.no_image, dist.shards_written) == ((10, 1, 1, 4) if image else (12, 0, 0, 4))
        _assert_same_store(dist.store, one.store, failures=2 if image else 0)
        if name == "vgg16":
            assert np.abs(FeatureStore(one.store).read([r["post_id"] for r in rows[:10]]).astype(np.float32)).max() > 0.01
        again = run_extract("d", build_extractor(name, **over), cache=cache, scheduler=cluster, quiet=True)
        assert (again.extracted, again.skipped) == (0, 10 if image else 12)  # resumes like one process


class KillOnce(Pixels):
    """pixels whose first forward after `after` finished shards kills its dask worker process
    (os._exit, as an OOM kill would), once: `marker` is created first and lists the shard files
    (and their sha256) that were finished at that moment."""

    def __init__(self, store: Path, marker: Path, after: int) -> None:
        super().__init__(PixelsConfig(image_size=16))
        self.store, self.marker, self.after = store, marker, after

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        done = sorted(self.store.glob("shard-*.h5"))
        if len(done) >= self.after:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return super().forward(batch)
            os.write(fd, json.dumps({p.name: sha256_file(p) for p in done}).encode())
            os.close(fd)
            os._exit(1)
        return super().forward(batch)


@pytest.mark.slow
@pytest.mark.dask
def test_killed_worker_loses_no_finished_shard(tmp_path, cluster):
    cache = tmp_path / "cache"
    rows = _dataset(cache, 24)
    eid = build_extractor("pixels", image_size=16).extractor_id()
    marker = tmp_path / "killed.json"
    ex = KillOnce(cache / "d" / "features" / eid, marker, after=2)
    assert ex.extractor_id() == eid  # the same store as plain pixels
    r = run_extract("d", ex, cache=cache, shard_size=3, scheduler=cluster, quiet=True)
    assert marker.exists(), "no worker was killed"
    finished = json.loads(marker.read_text())
    assert len(finished) >= 2
    store = r.store
    assert all(sha256_file(store / f) == digest for f, digest in finished.items())  # never rewritten
    assert (r.extracted, r.failed, r.shards_written) == (24, 1, 8)
    ids = []
    for f in sorted(store.glob("shard-*.h5")):
        with h5py.File(f, "r") as h:
            ids += [s.decode() for s in h["post_id"][()]]
    assert len(ids) == len(set(ids)) == 24  # every post once: no shard lost, none written twice
    one = run_extract("d", build_extractor("pixels", image_size=16), cache=cache / "single", shard_size=3,
                      num_workers=0, quiet=True)
    _assert_same_store(store, one.store)
    assert {r["post_id"] for r in rows} - set(FeatureStore(store).ids) == {"bad", "noimg"}


@pytest.mark.slow
@pytest.mark.dask
def test_cli_local_cluster_with_decoding_processes(tmp_path):
    cache = tmp_path / "cache"
    _dataset(cache, 8)
    res = runner.invoke(app, ["extract", "--dataset", "d", "--backbone", "pixels", "--image-size", "16",
                              "--dask-workers", "2", "--num-workers", "1", "--shard-size", "3", "--quiet",
                              "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert "extracted 8 into 3 shard(s)" in res.output and "failed 1; no image 1" in res.output
    one = run_extract("d", build_extractor("pixels", image_size=16), cache=cache / "single", shard_size=3,
                      num_workers=0, quiet=True)
    _assert_same_store(cache / "d" / "features" / one.extractor_id, one.store)


def test_retried_task_returns_the_finished_shard(tmp_path):
    spec = FeatureSpec("vector", (2,), "float32")
    r = ShardResult(7, ["a", "b"], np.ones((2, 2), np.float32), ["s1", "s2"])
    first = write_result(tmp_path, r, spec)
    again = write_result(tmp_path, r, spec)  # the re-run of a task whose worker died after the rename
    assert again.entry == first.entry and first.entry["file"] == "shard-00007.h5"
    with pytest.raises(StoreError, match="other rows"):
        write_result(tmp_path, ShardResult(7, ["c"], np.ones((1, 2), np.float32), ["s3"]), spec)


def test_options_refuse_both_cluster_kinds():
    with pytest.raises(PipeError, match="not both"):
        RunOptions(dask_workers=2, scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(PipeError, match="at least 1"):
        RunOptions(dask_workers=0)
