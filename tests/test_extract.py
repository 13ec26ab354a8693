"""The extraction runner with vgg16: equality with torchvision, reruns, bad images, ids, options."""
from __future__ import annotations

import re
import urllib.error

import numpy as np
import polars as pl
import pytest
import torch
import torchvision
from tests._extract_data import image_posts, post, save_image, write_posts
from PIL import Image
from torchvision import transforms as T
from typer.testing import CliRunner

from pipeline.cli import _load_commands, app
from pipeline.core.errors import PipeError
from pipeline.extract import build_extractor, extractor_from_store, run_extract
from pipeline.nn.weights import seeded
from pipeline.store import FeatureStore, read_failures, verify_store

_load_commands()
runner = CliRunner()


def _ref_input(path: str, size: int) -> torch.Tensor:
    tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return tf(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_pool5_grid_equals_torchvision_with_weights_path(tmp_path):
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 5)
    rows.append(post("wide", save_image(cache / "images" / "wide.png", 99, (90, 20), "PNG"), 6))
    write_posts(cache, "d", rows)
    torch.manual_seed(5)
    model = torchvision.models.vgg16().eval()
    wfile = tmp_path / "vgg.pt"
    torch.save({k: v for k, v in model.state_dict().items() if k.startswith("features.")}, wfile)

    res = runner.invoke(app, ["extract", "--dataset", "d", "--backbone", "vgg16", "--image-size", "64",
                              "--weights", str(wfile), "--batch-size", "4", "--num-workers", "1", "--quiet",
                              "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    eid = re.search(r"extractor id: (\S+)", res.output).group(1)
    assert re.fullmatch(r"vgg16-pool5-64-[0-9a-f]{8}", eid)
    st = FeatureStore(cache / "d" / "features" / eid)
    assert (st.spec.kind, st.spec.shape, st.spec.dtype) == ("grid", (4, 512), "float16")
    ids = [r["post_id"] for r in rows]
    assert sorted(st.ids) == sorted(ids)

    x = torch.stack([_ref_input(r["image"], 64) for r in rows])
    with torch.no_grad():
        ref = model.features(x)  # (6, 512, 2, 2)
    ref = ref.permute(0, 2, 3, 1).reshape(len(rows), 4, 512).numpy()  # (6, 4, 512), regions row-major
    got = st.read(ids).astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    assert np.abs(ref).max() > 0

    # the exact extractor comes back from the store; a changed weights file is noticed
    again = extractor_from_store(st.directory)
    assert again.extractor_id() == eid and again.config.weights == str(wfile)
    torch.save({k: v * 2 for k, v in torch.load(wfile).items()}, wfile)
    with pytest.raises(PipeError, match="changed"):
        extractor_from_store(st.directory)


@pytest.mark.slow
def test_fc7_equals_torchvision_classifier_second_relu(tmp_path):
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 3)
    write_posts(cache, "d", rows)
    ex = build_extractor("vgg16", layer="fc7", image_size=32, weights="random")
    r = run_extract("d", ex, cache=cache, num_workers=0, quiet=True)
    assert r.extracted == 3 and re.fullmatch(r"vgg16-fc7-32-[0-9a-f]{8}", r.extractor_id)
    st = FeatureStore(r.store)
    assert (st.spec.kind, st.spec.shape, st.spec.dtype) == ("vector", (4096,), "float32")
    with seeded(0):
        model = torchvision.models.vgg16().eval()
    x = torch.stack([_ref_input(p["image"], 32) for p in rows])
    with torch.no_grad():
        ref = model.classifier[:5](torch.flatten(model.avgpool(model.features(x)), 1)).numpy()  # (3, 4096)
    got = st.read([p["post_id"] for p in rows])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert (got >= 0).all() and (got > 0).any()  # after a ReLU


def _bad_and_odd(cache):
    d = cache / "images"
    d.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    files = {}

    def put(name, data=None, image=None, **kw):
        p = d / name
        if image is not None:
            image.save(p, **kw)
        elif data is not None:
            p.write_bytes(data)
        files[name] = str(p.resolve())

    put("good.jpg", image=Image.fromarray(noise))
    put("empty.jpg", b"")
    put("text.jpg", b"this is not an image")
    put("trunc.jpg", (d / "good.jpg").read_bytes()[:200])
    Image.fromarray(noise).save(d / "tmp.png")
    corrupt = bytearray((d / "tmp.png").read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    put("corrupt.png", bytes(corrupt))
    put("bomb.png", image=Image.new("1", (10_000, 10_000)))
    put("rgba.png", image=Image.fromarray(np.dstack([noise, noise[..., :1]]), "RGBA"))
    put("cmyk.jpg", image=Image.fromarray(noise).convert("CMYK"))
    put("anim.gif", image=Image.fromarray(noise).convert("P"), save_all=True,
        append_images=[Image.new("P", (30, 20))])
    put("grey16.png", image=Image.fromarray((noise[..., 0].astype(np.uint16) * 257)))
    exif = Image.Exif()
    exif[0x0112] = 8
    put("exif.jpg", image=Image.fromarray(noise), exif=exif.tobytes())
    put("one.png", image=Image.new("RGB", (1, 1), (1, 2, 3)))
    files["missing.jpg"] = str(d / "missing.jpg")
    return files


BAD = {"empty.jpg": "empty file", "text.jpg": "not an image", "trunc.jpg": "truncated image",
       "corrupt.png": "corrupt image", "bomb.png": "decompression bomb", "missing.jpg": "missing file"}


@pytest.mark.slow
def test_bad_images_are_recorded_and_odd_ones_extracted(tmp_path):
    cache = tmp_path / "cache"
    files = _bad_and_odd(cache)
    rows = [post(name, path, i) for i, (name, path) in enumerate(files.items())] + [post("noimg", None, 99)]
    write_posts(cache, "d", rows)
    ex = build_extractor("vgg16", image_size=32, weights="random")
    r = run_extract("d", ex, cache=cache, batch_size=3, shard_size=4, num_workers=1, quiet=True)
    odd = sorted(set(files) - set(BAD))
    assert (r.extracted, r.failed, r.no_image) == (len(odd), len(BAD), 1)
    st = FeatureStore(r.store)
    assert sorted(st.ids) == odd
    assert np.isfinite(st.read(odd).astype(np.float32)).all()
    fails = dict(read_failures(r.store).select("post_id", "reason").iter_rows())
    assert fails.pop("noimg") == "no image"
    assert sorted(fails) == sorted(BAD)
    for name, reason in BAD.items():
        assert fails[name].startswith(reason), (name, fails[name])
    assert verify_store(r.store) == []

    r2 = run_extract("d", ex, cache=cache, quiet=True)  # recorded failures are not retried
    assert (r2.extracted, r2.failed, r2.skipped, r2.skipped_failed, r2.no_image) == (0, 0, len(odd), len(BAD), 1)
    r3 = run_extract("d", ex, cache=cache, retry_failed=True, num_workers=0, quiet=True)
    assert (r3.extracted, r3.failed) == (0, len(BAD))

    save_image(cache / "images" / "trunc.jpg", 5)  # the user fixes one file: its bytes changed
    r4 = run_extract("d", ex, cache=cache, num_workers=0, quiet=True)
    assert (r4.extracted, r4.failed, r4.skipped_failed) == (1, 0, len(BAD) - 1)
    assert "trunc.jpg" in FeatureStore(r.store) and "trunc.jpg" not in read_failures(r.store)["post_id"].to_list()


@pytest.mark.slow
def test_rerun_extracts_only_new_and_changed_posts(tmp_path):
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 6)
    write_posts(cache, "d", rows)
    ex = build_extractor("vgg16", image_size=32, weights="random")
    r = run_extract("d", ex, cache=cache, shard_size=4, num_workers=0, quiet=True)
    assert (r.extracted, r.shards_written) == (6, 2)
    before = {p.name: p.read_bytes() for p in r.store.glob("shard-*.h5")}
    old_row = FeatureStore(r.store).read(["p001"])

    rows += image_posts(cache, "d", 3, start=6)
    save_image(cache / "images" / "1.jpg", 1234)  # p001's image bytes change
    write_posts(cache, "d", rows)
    r2 = run_extract("d", ex, cache=cache, shard_size=4, num_workers=0, quiet=True)
    assert (r2.extracted, r2.skipped, r2.shards_written) == (4, 5, 1)
    assert all((r.store / n).read_bytes() == b for n, b in before.items())
    st = FeatureStore(r.store)
    assert sorted(st.ids) == sorted(p["post_id"] for p in rows)
    assert not np.array_equal(st.read(["p001"]), old_row)
    assert run_extract("d", ex, cache=cache, quiet=True).extracted == 0


@pytest.mark.slow
def test_id_depends_on_output_not_on_runtime_options(tmp_path):
    cache = tmp_path / "cache"
    write_posts(cache, "d", image_posts(cache, "d", 5))
    ex = build_extractor("vgg16", image_size=32, weights="random")
    a = run_extract("d", ex, cache=cache,
                    batch_size=2, shard_size=2, num_workers=0, device="cpu", quiet=True)
    b = run_extract("d", ex, cache=tmp_path / "other",
                    posts=pl.read_parquet(cache / "d" / "posts.parquet"),
                    batch_size=5, shard_size=10, num_workers=1, device="auto", quiet=True)
    assert a.extractor_id == b.extractor_id and a.shards_written == 3 and b.shards_written == 1
    ids = FeatureStore(a.store).ids
    np.testing.assert_allclose(FeatureStore(a.store).read(ids).astype(np.float32),
                               FeatureStore(b.store).read(ids).astype(np.float32), rtol=1e-2, atol=1e-2)

    def eid(**kw):
        return build_extractor("vgg16", **{"image_size": 32, "weights": "random", **kw}).extractor_id()

    w1, w2, w3 = tmp_path / "w1.pt", tmp_path / "w2.pt", tmp_path / "w3.pt"
    torch.save({"x": torch.zeros(2)}, w1)
    torch.save({"x": torch.ones(2)}, w2)
    w3.write_bytes(w1.read_bytes())
    assert eid() == a.extractor_id and eid(weights=str(w1)) == eid(weights=str(w3))  # content, not location
    others = [eid(image_size=64), eid(layer="fc7"), eid(seed=1), eid(weights=str(w1)), eid(weights=str(w2)),
              eid(weights="imagenet")]
    assert len({a.extractor_id, *others}) == 1 + len(others)


def test_imagenet_offline_points_to_weights_options(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    ex = build_extractor("vgg16", image_size=32)
    assert ex.config.weights == "imagenet" and ex.extractor_id().startswith("vgg16-pool5-32-")
    with pytest.raises(PipeError, match=r"--weights PATH.*--weights random"):
        ex.load("cpu")


def test_bad_options_and_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(PipeError, match="layer must be one of pool5, fc7"):
        build_extractor("vgg16", layer="conv3")
    with pytest.raises(PipeError, match="multiple of 32"):
        build_extractor("vgg16", image_size=50)
    with pytest.raises(PipeError, match="tokens takes no --image-size, --layer; its options: length, min_count"):
        build_extractor("tokens", layer="pool5", image_size=64, weights=None)
    with pytest.raises(PipeError, match="unknown backbone 'nope'.*vgg16"):
        build_extractor("nope")
    with pytest.raises(PipeError, match="not imagenet, random or an existing"):
        build_extractor("vgg16", weights=str(tmp_path / "none.pt")).extractor_id()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(PipeError, match="cannot read .*junk.pt"):
        build_extractor("vgg16", weights=str(junk), image_size=32).load("cpu")
    partial = tmp_path / "partial.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(PipeError, match="not a VGG16 state dict: missing"):
        build_extractor("vgg16", weights=str(partial), image_size=32).load("cpu")
    res = runner.invoke(app, ["extract", "--dataset", "absent", "--backbone", "vgg16", "--cache", str(tmp_path)])
    assert res.exit_code == 2 and "no posts table" in res.output and "Traceback" not in res.output


def test_set_reaches_any_config_field_with_its_type(tmp_path):
    assert build_extractor("tokens", min_count="2").config.min_count == 2
    assert build_extractor("vgg16", **{"seed": "3", "image-size": "64"}).config == build_extractor(
        "vgg16", seed=3, image_size=64).config
    with pytest.raises(PipeError, match="seed='x' is not a valid int"):
        build_extractor("vgg16", seed="x")
    res = runner.invoke(app, ["extract", "--dataset", "d", "--backbone", "vgg16", "--set", "bogus=1",
                              "--cache", str(tmp_path)])
    assert res.exit_code == 2 and "vgg16 takes no --bogus" in res.output
    res = runner.invoke(app, ["extract", "--dataset", "d", "--backbone", "vgg16", "--set", "seed", "--cache", str(tmp_path)])
    assert res.exit_code == 2 and "expected key=value" in res.output


def test_progress_plain_lines_off_a_terminal_and_quiet():
    import io

    from pipeline.core.progress import Progress

    buf = io.StringIO()
    with Progress(4, label="extract x", interval=0, stream=buf) as p:
        p.advance(1)
        p.advance(3)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "extract x: 4 images to do"
    assert lines[1].startswith("extract x: 1/4 images (25%)") and "images/s, ETA" in lines[1]
    assert lines[-1].startswith("extract x: 4/4 images (100%)") and "\r" not in buf.getvalue()
    quiet = io.StringIO()
    with Progress(4, quiet=True, stream=quiet) as p:
        p.advance(4)
    assert quiet.getvalue() == ""
