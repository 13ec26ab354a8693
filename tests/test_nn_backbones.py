"""pipeline.nn backbones on tiny inputs with random weights: the store an extractor writes is
their forward, a store's manifest config rebuilds them, and gradients reach the first layer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tests._extract_data import image_posts, write_posts
from PIL import Image

from pipeline.core.config import config_to_dict
from pipeline.core.errors import PipeError
from pipeline.extract import build_extractor, run_extract
from extractors import build_network
from pipeline.nn.backbone import Backbone
from pipeline.store import FeatureStore

pytestmark = pytest.mark.slow

# name, extractor overrides, the first layer's weight (None: no weights)
CASES = {
    "vgg16-pool5": ("vgg16", {"image_size": 32, "weights": "random"}, lambda b: b.features[0].weight),
    "vgg16-fc7": ("vgg16", {"image_size": 32, "weights": "random", "layer": "fc7", "seed": 3},
                  lambda b: b.features[0].weight),
    "inception_v3": ("inception_v3", {"image_size": 75, "weights": "random"}, lambda b: b.Conv2d_1a_3x3.conv.weight),
    # ViT-S-32: the small open_clip ViT (224 px is fixed by the model); the default ViT-B-32 adds nothing here
    "clip": ("clip", {"model": "ViT-S-32", "weights": "random"}, lambda b: b.visual.conv1.weight),
    "clip-grid": ("clip", {"model": "ViT-S-32", "weights": "random", "output": "grid", "seed": 1},
                  lambda b: b.visual.conv1.weight),
    "pixels": ("pixels", {"image_size": 16}, None),
}


@pytest.fixture(scope="module")
def posts(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    rows = image_posts(cache, "d", 3)
    write_posts(cache, "d", rows)
    return cache, rows


@pytest.fixture(scope="module", params=list(CASES))
def written(request, posts, one_thread):
    """(case, extractor after writing its store, the store, the backbone its manifest rebuilds)."""
    cache, _ = posts
    name, over, _ = CASES[request.param]
    ex = build_extractor(name, **over)
    r = run_extract("d", ex, cache=cache, num_workers=0, quiet=True)
    store = FeatureStore(r.store)
    return request.param, ex, store, build_network(name, store.config)


def _input(ex, rows) -> torch.Tensor:
    """The posts' images as the backbone reads them: the extractor's resize, then [0, 1] pixels."""
    batch = torch.stack([ex.preprocess(Image.open(r["image"]).convert("RGB")) for r in rows])  # (B, 3, H, W) uint8
    return batch.float() / 255


def test_forward_is_what_the_extractor_writes(written, posts):
    case, ex, store, bb = written
    _, rows = posts
    assert isinstance(bb, Backbone) and not bb.training
    with torch.no_grad():
        got = bb(bb.normalize(_input(ex, rows))).numpy()
    stored = store.read([r["post_id"] for r in rows])
    assert got.shape == stored.shape
    if case == "pixels":
        got = got * 255  # the store keeps uint8; the backbone reads [0, 1]
    ref = stored.astype(np.float32)
    tol = 2e-3 if store.spec.dtype == "float16" else 1e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(np.abs(ref).max(), 1e-6))
    assert np.abs(ref).max() > 0


def test_manifest_config_rebuilds_the_extractors_weights(written):
    _, ex, store, bb = written
    assert store.extractor_id == ex.extractor_id()
    mine = getattr(ex, "backbone", None) or getattr(ex, "model", None)  # clip: the image tower of its model
    if mine is None:  # pixels: no network
        assert not list(bb.parameters())
        return
    a, b = mine.state_dict(), bb.state_dict()
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert bb.preprocessing == mine.preprocessing


@pytest.mark.parametrize("case", ["vgg16-pool5", "vgg16-fc7", "inception_v3"])  # torchvision-backed only:
def test_saved_torchvision_backbone_is_a_weights_file(case, tmp_path, one_thread):  # open_clip reads whole models
    name, over, _ = CASES[case]
    config = config_to_dict(build_extractor(name, **over).config)
    bb = build_network(name, config)
    path = tmp_path / "backbone.pt"
    torch.save(bb.state_dict(), path)  # fc7: no classifier.6 (the ImageNet logits) needed
    again = build_network(name, {**config, "weights": str(path)})
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in bb.state_dict().items())


def test_backward_reaches_the_first_layer(written, posts):
    case, ex, _, bb = written
    _, rows = posts
    first = CASES[case][2]
    bb.train()
    try:
        x = _input(ex, rows).requires_grad_(True)
        out = bb(bb.normalize(x))
        out.float().square().mean().backward()
        grads = [x.grad] if first is None else [first(bb).grad]
        assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    finally:
        bb.eval()
        bb.zero_grad(set_to_none=True)


def test_backbone_config_errors():
    with pytest.raises(PipeError, match="no backbone 'glove'"):
        build_network("glove", {})
    with pytest.raises(PipeError, match="image_size, layer, seed, weights; got image_size"):
        build_network("vgg16", {"image_size": 32})
    with pytest.raises(PipeError, match="layer must be one of pool5, fc7"):
        build_network("vgg16", {"image_size": 32, "layer": "conv3", "weights": "random", "seed": 0})
