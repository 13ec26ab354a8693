"""Fault tests of issue 20, item 2: only bytes the checksum covers are served. A shard whose
datasets live elsewhere (external storage, a virtual dataset, an external or soft link) or that
declares more rows than its file can hold is refused, named, at adoption and on read.
"""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from pipeline.core import paths
from pipeline.core.errors import IntegrityError
from pipeline.core.io import sha256_file
from pipeline.store import FeatureStore, Manifest, StoreWriter, verify_store
from tests._tiny_data import TOKENS, make_dataset

ROW = np.arange(12, dtype=np.int32)


def _ids(f, ids, n=None):
    s = h5py.string_dtype("utf-8")
    f.create_dataset("post_id", data=np.array(ids, dtype=object), dtype=s)
    f.create_dataset("source", data=np.array(["fresh"] * len(ids), dtype=object), dtype=s)
    f.attrs["kind"] = "tokens"


def _external(f, tmp):
    raw = tmp / "outside.raw"
    raw.write_bytes(ROW.tobytes())
    f.create_dataset("features", shape=(1, 12), dtype="int32", external=[(str(raw), 0, 48)])


def _other_file(tmp):
    other = tmp / "outside.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("features", data=ROW[None])
    return other


def _virtual(f, tmp):
    layout = h5py.VirtualLayout(shape=(1, 12), dtype="int32")
    layout[:] = h5py.VirtualSource(str(_other_file(tmp)), "features", shape=(1, 12))
    f.create_virtual_dataset("features", layout)


def _external_link(f, tmp):
    f["features"] = h5py.ExternalLink(str(_other_file(tmp)), "features")


def _soft_link(f, tmp):
    f.create_dataset("elsewhere", data=ROW[None])
    f["features"] = h5py.SoftLink("/elsewhere")


CRAFTS = {"external storage": _external, "virtual dataset": _virtual, "ExternalLink": _external_link,
          "SoftLink": _soft_link}


def _craft(path, how, tmp):
    with h5py.File(path, "w") as f:
        _ids(f, ["new1"])
        CRAFTS[how](f, tmp)


@pytest.fixture
def store(tmp_path):
    make_dataset(tmp_path / "cache", n=20, stores=(TOKENS,))
    return paths.store_dir("tiny", TOKENS, tmp_path / "cache")


def _writer(d):
    m = Manifest.load(d)
    return StoreWriter(d, m.extractor_id, m.extractor, m.spec, m.config)


@pytest.mark.parametrize("how", list(CRAFTS))
def test_orphan_shard_with_data_elsewhere_is_not_adopted(store, tmp_path, how):
    _craft(store / "shard-00005.h5", how, tmp_path)
    with _writer(store) as w:
        assert len(w.quarantined) == 1 and "shard-00005.h5" in w.quarantined[0], w.quarantined
        assert how.split()[0] in w.quarantined[0] and "features" in w.quarantined[0]
    assert "new1" not in FeatureStore(store) and (store / "quarantine" / "shard-00005.h5").exists()


@pytest.mark.parametrize("how", list(CRAFTS))
def test_listed_shard_with_data_elsewhere_is_refused_on_read_and_by_verify(store, tmp_path, how):
    """An external-storage shard adopted before this check (its sha256 in the manifest): the bytes
    served would come from a file the checksum never covered, so it is refused by name."""
    shard = store / "shard-00005.h5"
    _craft(shard, how, tmp_path)
    doc = json.loads((store / "manifest.json").read_text())
    doc["shards"].append({"file": shard.name, "rows": 1, "sha256": sha256_file(shard)})
    (store / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match=f"shard-00005.h5: .*{how.split()[0]}"):
        FeatureStore(store)
    assert any("shard-00005.h5" in p and how.split()[0] in p for p in verify_store(store))


def test_orphan_declaring_more_rows_than_its_bytes_is_refused_before_its_ids_are_read(store):
    """A 6 KB crafted shard declaring 4*10^7 rows (never written: HDF5 fills them) cost 1.36 GB."""
    shard = store / "shard-00005.h5"
    with h5py.File(shard, "w") as f:
        s = h5py.string_dtype("utf-8")
        f.create_dataset("post_id", shape=(40_000_000,), dtype=s)
        f.create_dataset("source", shape=(40_000_000,), dtype=s)
        f.create_dataset("features", shape=(40_000_000, 12), dtype="int32")
        f.attrs["kind"] = "tokens"
    assert shard.stat().st_size < 10_000
    t = time.perf_counter()
    with _writer(store) as w:
        assert len(w.quarantined) == 1 and "declares 40000000 rows" in w.quarantined[0], w.quarantined
    assert time.perf_counter() - t < 5
