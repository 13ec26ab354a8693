"""The feature store: shards, manifest, reader, resume, locks, verify."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import StoreError, StoreLocked
from pipeline.core.specs import FeatureSpec
from pipeline.store import FeatureStore, StoreWriter, store_lock, verify_store

SPEC = FeatureSpec("grid", (4, 3), "float16")


def _writer(d, **kw):
    return StoreWriter(d, "toy-1234abcd", "toy", SPEC, {"a": 1}, **kw)


def _rows(n, start=0):
    return np.arange(start * 12, (start + n) * 12, dtype=np.float16).reshape(n, 4, 3)


def test_write_read_roundtrip_and_order(tmp_path):
    d = tmp_path / "s"
    with _writer(d) as w:
        w.write_shard([f"p{i}" for i in range(5)], _rows(5), ["h"] * 5)
        w.write_shard([f"p{i}" for i in range(5, 8)], _rows(3, 5), ["h"] * 3)
    st = FeatureStore(d)
    assert st.ids == [f"p{i}" for i in range(8)]
    got = st.read(["p7", "p0", "p3", "p5"])
    np.testing.assert_array_equal(got, _rows(8)[[7, 0, 3, 5]])
    batches = list(st.iter_batches(3, shuffle=True, seed=1))
    assert sorted(i for ids, _ in batches for i in ids) == sorted(st.ids)
    for ids, arr in batches:
        np.testing.assert_array_equal(arr, st.read(ids))
    with pytest.raises(KeyError, match="nope"):
        st.read(["nope"])


def test_newer_row_wins_and_shards_never_rewritten(tmp_path):
    d = tmp_path / "s"
    with _writer(d) as w:
        w.write_shard(["a", "b"], _rows(2), ["v1", "v1"])
    first = (d / "shard-00000.h5").read_bytes()
    with _writer(d) as w:
        assert w.done_sources() == {"a": "v1", "b": "v1"}
        w.write_shard(["b"], _rows(1, 9), ["v2"])
    assert (d / "shard-00000.h5").read_bytes() == first
    st = FeatureStore(d)
    assert sorted(st.ids) == ["a", "b"]
    np.testing.assert_array_equal(st.read(["b"]), _rows(1, 9))


def test_spec_mismatch_is_refused(tmp_path):
    d = tmp_path / "s"
    with _writer(d) as w:
        w.write_shard(["a"], _rows(1), ["x"])
    with pytest.raises(StoreError, match="holds"):
        with StoreWriter(d, "toy-1234abcd", "toy", FeatureSpec("grid", (2, 3), "float16"), {}):
            pass


def test_orphan_complete_shard_is_adopted_and_temp_removed(tmp_path):
    from pipeline.store import write_shard_file

    d = tmp_path / "s"
    with _writer(d) as w:
        w.write_shard(["a"], _rows(1), ["x"])
    write_shard_file(d, 1, ["b"], _rows(1, 1), ["x"], SPEC)  # renamed, manifest never updated
    (d / ".tmp-999-00002.h5").write_bytes(b"partial")
    with _writer(d):
        pass
    assert not list(d.glob(".tmp-*"))
    assert sorted(FeatureStore(d).ids) == ["a", "b"]


def test_verify_catches_flipped_byte_and_missing_shard(tmp_path):
    d = tmp_path / "s"
    with _writer(d) as w:
        w.write_shard(["a", "b"], _rows(2), ["x", "x"])
        w.write_shard(["c"], _rows(1), ["x"])
    assert verify_store(d) == []
    p = d / "shard-00000.h5"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    (d / "shard-00001.h5").unlink()
    problems = verify_store(d)
    assert any("shard-00000.h5" in x and "corrupted" in x for x in problems)
    assert any("shard-00001.h5" in x and "missing" in x for x in problems)


def test_failures_merge_and_clear_on_success(tmp_path):
    d = tmp_path / "s"
    with _writer(d) as w:
        w.record_failures(pl.DataFrame({"post_id": ["a", "b"], "reason": ["corrupt", "missing"], "source": ["", ""]}))
        w.record_failures(pl.DataFrame({"post_id": ["c"], "reason": ["empty"], "source": [""]}), succeeded=["a"])
    from pipeline.store import read_failures

    assert sorted(read_failures(d)["post_id"].to_list()) == ["b", "c"]


def _hold_lock(d, ready):
    with store_lock(d):
        ready.set()
        time.sleep(60)


def test_lock_refuses_second_writer_and_dies_with_its_process(tmp_path):
    d = tmp_path / "s"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(d, ready))
    p.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreLocked, match=str(p.pid)):
            with store_lock(d):
                pass
    finally:
        os.kill(p.pid, 9)
        p.join()
    with store_lock(d):  # the kernel released the dead holder's lock
        pass
