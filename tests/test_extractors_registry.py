"""Every registered extractor, through the runner, on a tiny dataset, offline.

A new extractor is tested by being registered: it writes a store whose rows have its
documented shape and dtype, finite values, one row per readable post (image extractors)
or per post (text extractors), and an id that starts with its name. OVERRIDES keeps the
run small (random weights, small inputs); EXPECTED pins the documented shapes under
those overrides.
"""
from __future__ import annotations

import numpy as np
import pytest
from tests._extract_data import image_posts, post, write_posts

import extractors
from pipeline.extract import build_extractor, extractor_from_store, run_extract
from pipeline.store import FeatureStore, verify_store

GLOVE = "the 0.1 0.2 0.3 0.4\ncat 1 0 -1 0.5\nlake 0 2 0 -2\n"

# Config overrides per extractor, for speed and offline weights ({glove} is filled in).
OVERRIDES: dict[str, dict] = {
    "vgg16": {"image_size": 64, "weights": "random"},
    "inception_v3": {"image_size": 75, "weights": "random"},
    "clip": {"model": "ViT-S-32", "weights": "random"},
    "clip_text": {"model": "ViT-S-32", "weights": "random"},
    "pixels": {"image_size": 16},
    "tfidf": {"max_features": 12},
    "bow": {"max_features": 12},
    "tokens": {"min_count": 1},
    "glove": {"path": "{glove}"},
}
# (kind, shape, dtype) each extractor documents, under OVERRIDES.
EXPECTED: dict[str, tuple] = {
    "vgg16": ("grid", (4, 512), "float16"),  # (64/32)^2 regions x 512
    "inception_v3": ("vector", (2048,), "float32"),
    "clip": ("vector", (384,), "float32"),  # ViT-S-32 embed_dim
    "clip_text": ("vector", (384,), "float32"),
    "minilm": ("vector", (384,), "float32"),
    "pixels": ("pixels", (3, 16, 16), "uint8"),
    "tfidf": ("vector", (12,), "float32"),  # the texts hold more than 12 distinct words
    "bow": ("vector", (12,), "float32"),
    "tokens": ("tokens", (50,), "int32"),
    "glove": ("vector", (4,), "float32"),
}
TITLES = ["The cat by the lake", "Golden sunset over quiet water", "", "Mountain trail and pine trees",
          "Cat and dog friends at home", "Stormy sky above the old harbour"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Six posts: four tiny JPEGs of different shapes, one corrupt file, one without an image."""
    cache = tmp_path_factory.mktemp("cache")
    rows = image_posts(cache, "tiny", 2, size=(40, 32)) + image_posts(cache, "tiny", 2, start=2, size=(24, 48))
    bad = cache / "images" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows += [post("bad", str(bad), 4), post("noimg", None, 5)]
    for r, title in zip(rows, TITLES):
        r["title"], r["text"] = title, "seen near the water" if r["post_id"] != "p002" else ""
    write_posts(cache, "tiny", rows)
    glove = cache / "glove.4d.txt"
    glove.write_text(GLOVE)
    return cache, [r["post_id"] for r in rows], glove


@pytest.mark.slow
@pytest.mark.parametrize("name", extractors.names())
def test_every_extractor_writes_its_documented_store(name, dataset):
    cache, all_ids, glove = dataset
    overrides = {k: (v.format(glove=glove) if isinstance(v, str) else v) for k, v in OVERRIDES.get(name, {}).items()}
    ex = build_extractor(name, **overrides)
    r = run_extract("tiny", ex, cache=cache, batch_size=2, shard_size=3, num_workers=0, quiet=True)
    assert r.extractor_id.startswith(f"{name}-") and r.store.name == r.extractor_id
    st = FeatureStore(r.store)
    assert st.spec == ex.spec()
    if name in EXPECTED:
        assert (st.spec.kind, st.spec.shape, st.spec.dtype) == EXPECTED[name]

    if ex.modality == "image":
        readable = [i for i in all_ids if i not in ("bad", "noimg")]
        assert set(st.failures()["post_id"].to_list()) == {"bad", "noimg"}
    else:
        readable = all_ids  # every post gets a row, an empty text too
    assert sorted(st.ids) == sorted(readable)  # one row per readable post
    rows = st.read(readable)
    assert rows.shape == (len(readable), *st.spec.shape) and rows.dtype == np.dtype(st.spec.dtype)
    assert np.isfinite(rows.astype(np.float64)).all()
    assert verify_store(r.store) == []

    # The store describes its writer fully: rebuilt from it, the extractor has the same id.
    assert extractor_from_store(r.store).extractor_id() == r.extractor_id
    again = run_extract("tiny", build_extractor(name, **overrides), cache=cache, num_workers=0, quiet=True)
    assert again.extracted == 0 and again.skipped == len(readable)


def test_overrides_name_registered_extractors():
    """A stale entry here would silently stop testing an extractor under its intended settings."""
    assert set(OVERRIDES) <= set(extractors.names()) and set(EXPECTED) <= set(extractors.names())
