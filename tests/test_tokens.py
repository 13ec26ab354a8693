"""`tokens`: UHAN's text preprocessing, its vocabulary artifact, and its store."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tests._extract_data import post, write_posts

from extractors.tokens import Tokens, TokensConfig, words
from pipeline.core.errors import PipeError
from pipeline.extract import build_extractor, extractor_from_store, run_extract
from pipeline.store import FeatureStore, verify_store


def test_words_keep_ascii_letters_lowercased():
    assert words("Hello, WORLD! café naïve x2y 3D") == ["hello", "world", "caf", "na", "ve", "x", "y", "d"]
    assert words("") == [] and words("日本語 123 ---") == []
    assert words("\u212a") == []  # the Kelvin sign lowercases to an ASCII k; it is not an English letter


def _fitted(texts, **kw):
    ex = Tokens(TokensConfig(**kw))
    ex.fit(texts)
    return ex


def test_vocabulary_drops_rare_words_and_rows_are_exactly_length():
    texts = ["sun sea"] * 5 + ["sun rare"] + ["sky " * 60]
    ex = _fitted(texts)
    voc = ex.vocabulary
    assert voc == {"sky": 2, "sun": 3, "sea": 4}  # by count (60, 6, 5), ties alphabetical; rare (1x) dropped
    out = ex.transform(["Sun, SEA!", "sun rare sea", "", "sky " * 60, "unseen sun"])
    assert out.dtype == np.int32 and out.shape == (5, 50)
    assert out[0].tolist() == [3, 4] + [0] * 48  # 0 pads at the end
    assert out[1].tolist() == [3, 4] + [0] * 48  # a rare word of the fitted texts is dropped, not unknown
    assert (out[2] == 0).all()  # empty text still gets its row
    assert (out[3] == 2).all()  # cut to 50
    assert out[4].tolist()[:2] == [1, 3]  # never seen at fit time: 1 = unknown
    assert _fitted(texts, length=3, min_count=6).transform(["sun sea sky sky sky sky"]).tolist() == [[3, 2, 2]]


def test_unfitted_and_bad_vocabulary_are_clear_errors(tmp_path):
    ex = Tokens(TokensConfig())
    with pytest.raises(PipeError, match="not fitted"):
        ex.extractor_id()
    with pytest.raises(PipeError, match="no vocab.json"):
        ex.load_artifacts(tmp_path)
    (tmp_path / "vocab.json").write_text('{"words": 3}')
    with pytest.raises(PipeError, match="not a tokens vocabulary"):
        ex.load_artifacts(tmp_path)
    with pytest.raises(PipeError, match="at least 1"):
        Tokens(TokensConfig(length=0))


def _rows():
    base = ["cat on a mat", "dog on a log", "cat and dog", "a cat", "a dog", "on a mat"]
    rows = [post(f"t{i:02d}", None, i, title=t, text="Ünïcode 42 on" if i < 3 else "") for i, t in enumerate(base * 2)]
    rows.append(post("empty", None, 50))  # no title, no text, no image: still a row
    return rows


def test_store_has_a_row_per_post_vocab_artifact_and_stable_id(tmp_path):
    cache = tmp_path / "cache"
    rows = _rows()
    write_posts(cache, "d", rows)
    r = run_extract("d", build_extractor("tokens"), cache=cache, shard_size=5, quiet=True)
    assert re.fullmatch(r"tokens-[0-9a-f]{8}", r.extractor_id)
    assert (r.extracted, r.no_image, r.shards_written) == (len(rows), 0, 3)
    st = FeatureStore(r.store)
    assert (st.spec.kind, st.spec.shape, st.spec.dtype) == ("tokens", (50,), "int32")
    assert sorted(st.ids) == sorted(p["post_id"] for p in rows)
    assert (st.read(["empty"]) == 0).all()
    vocab = json.loads(st.artifact_path("vocab.json").read_text())
    assert set(vocab["words"]) == {"a", "on", "cat", "dog"}  # "mat", "and", "log", "n", "code" are rare
    assert verify_store(r.store) == []

    # the same posts give the same id; a rerun has nothing to do; a changed text is redone
    assert run_extract("d", build_extractor("tokens"), cache=cache, quiet=True).extracted == 0
    rows[0]["title"] = "mat on a cat"  # same word counts, so the same vocabulary
    write_posts(cache, "d", rows)
    again = run_extract("d", build_extractor("tokens"), cache=cache, quiet=True)
    assert again.extractor_id == r.extractor_id and (again.extracted, again.skipped) == (1, len(rows) - 1)

    # rebuilt from the store: same id, same rows; words it never saw become 1
    ex = extractor_from_store(r.store)
    assert ex.extractor_id() == r.extractor_id
    cat, dog = ex.vocabulary["cat"], ex.vocabulary["dog"]
    assert ex.transform(["cat zebra log dog"]).tolist()[0][:3] == [cat, 1, dog]  # log: rare, dropped
    np.testing.assert_array_equal(ex.transform(["a dog"]), st.read(["t04"]))

    # a different vocabulary is a different store
    other = run_extract("d", build_extractor("tokens", min_count=2), cache=cache, quiet=True)
    assert other.extractor_id != r.extractor_id and other.extracted == len(rows)
