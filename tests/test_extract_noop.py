"""Issue 22, item 9: a `pipe extract` with nothing new returns without importing torch, and any
change (a new post, a changed image, another setting, a weights file) still extracts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline import api
from tests._extract_data import image_posts, post, save_image, write_posts

CHECK = """
import sys
from pipeline.cli import main
sys.argv = ["pipe", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("torch imported:", "torch" in sys.modules)
"""


def _dataset(cache, n=4):
    rows = image_posts(cache, "ds", n) + [post("p-none", None, 9)]  # no image: recorded as such, never extracted
    write_posts(cache, "ds", rows)
    return rows


def _noop_in_a_fresh_process(cache, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", CHECK, "extract", "--dataset", "ds", "--backbone", "pixels",
                           "--image-size", "16", "--cache", str(cache), "-q", *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_noop_extract_does_not_import_torch(tmp_path):
    cache = tmp_path / "cache"
    _dataset(cache)
    first = api.extract("ds", "pixels", config={"image_size": 16}, cache=cache, quiet=True)
    assert first.extracted == 4 and first.no_image == 1
    out = _noop_in_a_fresh_process(cache)
    assert out.returncode == 0, out.stderr
    assert "torch imported: False" in out.stdout, out.stdout
    assert f"extractor id: {first.extractor_id}" in out.stdout
    assert "extracted 0 into 0 shard(s); skipped 4 already stored; failed 0; no image 1" in out.stdout


def test_anything_new_still_extracts(tmp_path):
    cache = tmp_path / "cache"
    rows = _dataset(cache)
    first = api.extract("ds", "pixels", config={"image_size": 16}, cache=cache, quiet=True)
    again = api.extract("ds", "pixels", config={"image_size": 16}, cache=cache, quiet=True)
    assert (again.extracted, again.skipped, again.no_image, again.extractor_id) == (0, 4, 1, first.extractor_id)
    assert again.load_seconds == 0.0  # the remembered path: no extractor was loaded

    save_image(cache / "images" / "0.jpg", 99)  # a changed image is re-extracted
    r = api.extract("ds", "pixels", config={"image_size": 16}, cache=cache, quiet=True)
    assert (r.extracted, r.skipped) == (1, 3)

    write_posts(cache, "ds", rows + [post("p-new", save_image(cache / "images" / "new.jpg", 50), 7)])  # a new post
    r = api.extract("ds", "pixels", config={"image_size": 16}, cache=cache, quiet=True)
    assert (r.extracted, r.skipped) == (1, 4)

    r = api.extract("ds", "pixels", config={"image_size": 24}, cache=cache, quiet=True)  # another setting: its own store
    assert r.extracted == 5 and r.extractor_id != first.extractor_id


def test_a_fitted_extractor_is_never_taken_as_done_from_memory(tmp_path):
    """tokens' id follows the vocabulary fitted on the posts: it is not remembered."""
    cache = tmp_path / "cache"
    rows = [post(f"t{i}", None, i, title=f"word{i} common", text="more words") for i in range(6)]
    write_posts(cache, "ds", rows)
    api.extract("ds", "tokens", cache=cache, quiet=True)
    assert not (cache / "ds" / "features" / ".extract-requests.json").exists()


def test_the_request_key_follows_settings_and_the_files_they_name(tmp_path):
    from pipeline.extract.noop import request_key

    w = tmp_path / "w.pt"
    w.write_bytes(b"one")
    key = request_key("vgg16", {"weights": str(w), "image_size": 64})
    assert key == request_key("vgg16", {"image_size": "64", "weights": str(w), "layer": None})
    assert key != request_key("vgg16", {"weights": str(w), "image_size": 96})
    assert key != request_key("inception_v3", {"weights": str(w), "image_size": 64})
    w.write_bytes(b"other weights")  # the same path, other content: another request
    assert key != request_key("vgg16", {"weights": str(w), "image_size": 64})
