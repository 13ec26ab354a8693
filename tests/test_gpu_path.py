"""The GPU path's logic, checked on CPU: which files go to the device decoder, the device
pipeline (decode_jpeg + tensor resize, run here on CPU) against the PIL path, failures
alike, batches fitted to memory, and CPU behaviour unchanged."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from tests._extract_data import image_posts, post, save_image, write_posts
from PIL import Image

from pipeline.core.errors import PipeError
from pipeline.data.contract import load_posts
from pipeline.extract import RunOptions, build_extractor, reader, run_extract
from pipeline.nn import device as nn_device
from pipeline.store import FeatureStore, read_failures


def _jpeg(mode: str = "RGB", size: tuple[int, int] = (40, 30), **save: object) -> bytes:
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    b = io.BytesIO()
    im.save(b, "JPEG", **save)
    return b.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[reader.EXIF_ORIENTATION] = 6  # rotate 90: PIL's exif_transpose turns it, nvjpeg would not
    return _jpeg(exif=exif.tobytes())


def test_only_plain_complete_jpegs_go_to_the_device():
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    assert reader.device_decodable(_jpeg())
    assert reader.device_decodable(_jpeg("L"))  # grey decodes to RGB on the device as in PIL
    assert not reader.device_decodable(_jpeg("CMYK"))
    assert not reader.device_decodable(_rotated_jpeg())
    assert not reader.device_decodable(_jpeg()[:-40])  # truncated: the CPU path names it
    assert not reader.device_decodable(png.getvalue())
    assert not reader.device_decodable(b"\xff\xd8\xff\xe0 not really a jpeg\xff\xd9")


@pytest.fixture
def mixed(tmp_path):
    """JPEGs of several sizes, a grey, a rotated and a CMYK JPEG, a PNG, a truncated and a broken JPEG."""
    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 3) + image_posts(cache, "d", 2, start=3, size=(50, 20))
    d = cache / "images"
    files = {"grey": _jpeg("L"), "rotated": _rotated_jpeg(), "cmyk": _jpeg("CMYK"), "truncated": _jpeg()[:-40],
             # a valid header and end marker around garbage: passes the header check, fails the decoders
             "broken": _jpeg()[:200] + b"\x00\x13" * 50 + b"\xff\xd9"}
    for i, (name, data) in enumerate(files.items()):
        (d / f"{name}.jpg").write_bytes(data)
        rows.append(post(name, str(d / f"{name}.jpg"), 10 + i))
    rows.append(post("png", save_image(d / "x.png", 7, (30, 30), "PNG"), 20))
    rows.append(post("missing", str(d / "nope.jpg"), 21))
    write_posts(cache, "d", rows)
    return cache


@pytest.mark.parametrize("name,over,tol", [
    ("vgg16", {"image_size": 64, "weights": "random"}, 0.02),
    ("clip", {"model": "ViT-S-32", "weights": "random"}, 0.05),  # tensor bicubic differs from PIL's by a few levels
])
@pytest.mark.slow
def test_device_pipeline_matches_the_pil_path(mixed, name, over, tol):
    a = run_extract("d", build_extractor(name, **over), cache=mixed, decode="cpu", shard_size=4, batch_size=3,
                    num_workers=0, quiet=True)
    # the same posts through the device pipeline (decode_jpeg and tensor resizes, here on CPU), into another cache
    b = run_extract("d", build_extractor(name, **over), cache=mixed / "dev", posts=load_posts("d", mixed), decode="device",
                    shard_size=4, batch_size=3, num_workers=1, quiet=True)
    sa, sb = FeatureStore(a.store), FeatureStore(b.store)
    assert sorted(sa.ids) == sorted(sb.ids) and "cmyk" in sa.ids and "rotated" in sa.ids and "png" in sa.ids
    fa, fb = read_failures(a.store).sort("post_id"), read_failures(b.store).sort("post_id")
    assert fa.equals(fb)  # the same failures with the same reasons
    assert set(fa["post_id"]) == {"truncated", "broken", "missing"}
    ids = sorted(sa.ids)
    x, y = sa.read(ids).astype(np.float32), sb.read(ids).astype(np.float32)
    scale = np.abs(x).max()
    assert scale > 0 and np.abs(x - y).max() <= tol * scale, np.abs(x - y).max() / scale


def test_decode_batch_falls_back_to_the_cpu_per_image():
    ex = build_extractor("vgg16", image_size=32, weights="random")
    good, broken = _jpeg(), _jpeg()[:200] + b"\x00\x13" * 50 + b"\xff\xd9"
    rows = [("g", torch.frombuffer(bytearray(good), dtype=torch.uint8), "s1", None, "jpeg"),
            ("b", torch.frombuffer(bytearray(broken), dtype=torch.uint8), "s2", None, "jpeg"),
            ("r", torch.zeros(3, 32, 32, dtype=torch.uint8), "s3", None, "ready"),
            ("m", None, "missing", "missing file: x", "failed")]
    out = reader.decode_batch(ex, reader.collate_raw(rows), "cpu")
    assert out["ids"] == ["g", "r"] and out["sources"] == ["s1", "s3"]
    assert out["x"].shape == (2, 3, 32, 32) and out["x"].dtype == torch.uint8
    assert [f[0] for f in out["failures"]] == ["m", "b"] and out["failures"][1][2] == "s2"
    assert out["failures"][1][1].startswith(("corrupt image", "truncated image"))


def test_batch_halves_on_out_of_memory_and_stays_halved():
    calls = []

    def forward(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return x.numpy() * 2

    fit = nn_device.FittedBatch(8)
    x = torch.arange(10.0)
    np.testing.assert_array_equal(fit(forward, x), x.numpy() * 2)
    assert fit.size == 2 and calls[:3] == [8, 4, 2]
    calls.clear()
    fit(forward, torch.arange(5.0))
    assert calls == [2, 2, 1]  # later batches start from the fitted size
    with pytest.raises(PipeError, match="batch size 1"):
        nn_device.FittedBatch(1)(lambda x: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom")), x)


def test_cpu_defaults_are_unchanged():
    assert nn_device.amp_dtype("cpu") is None
    with nn_device.autocast("cpu"):
        assert torch.get_autocast_dtype("cpu") is not None and not torch.is_autocast_enabled("cuda")
    ex = build_extractor("vgg16", image_size=32, weights="random")
    assert not reader.decodes_on_device(ex, "cpu", "auto") and reader.decodes_on_device(ex, "cuda", "auto")
    assert not reader.decodes_on_device(build_extractor("pixels"), "cuda", "auto")  # preprocess takes PIL only
    assert not reader.decodes_on_device(ex, "cuda", "cpu")
    opts = RunOptions()
    assert (opts.resolved_batch_size("cpu"), opts.resolved_batch_size("cuda:1")) == (32, 256)
    assert RunOptions(batch_size=8).resolved_batch_size("cuda") == 8
    with pytest.raises(PipeError, match="decode"):
        RunOptions(decode="gpu")
    model = nn_device.prepare_model(torch.nn.Conv2d(3, 4, 3).train(), "cpu")
    assert not model.training and model.weight.is_contiguous()  # no channels_last on CPU unless asked
    x = nn_device.images_to_device(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "cpu")
    assert x.dtype == torch.float32 and x.is_contiguous()
