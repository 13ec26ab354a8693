"""Each extractor on tiny inputs, offline: spec matches output, ids, artifacts, weights."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import extractors
from pipeline.core.errors import PipeError

TEXTS = [
    "Sunset over the lake, golden light",
    "My cat sleeping on the sofa again",
    "",
    "Golden retriever puppy at the lake",
    "Café crème and croissants",
    "the the the cat",
]


def make(name, **overrides):
    cls = extractors.get(name)
    return cls(cls.Config(**overrides))


def check_rows(ex, out, n):
    """Output rows match the documented spec exactly and hold finite values."""
    spec = ex.spec()
    assert isinstance(out, np.ndarray)
    assert out.shape == (n, *spec.shape)
    assert out.dtype == np.dtype(spec.dtype)
    assert np.isfinite(out.astype(np.float64)).all()


def images(sizes=((48, 32), (32, 64), (40, 40))):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in sizes]


def save_artifacts(ex, directory):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in ex.artifacts().items():
        (directory / name).write_bytes(data)
    return directory


# -- tfidf / bow ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tfidf", "bow"])
def test_sklearn_text_spec_ids_and_artifacts(name, tmp_path):
    ex = make(name, max_features=8)
    assert ex.modality == "text" and ex.needs_fit
    ex.fit(TEXTS)
    out = ex.transform(TEXTS)
    check_rows(ex, out, len(TEXTS))
    assert ex.spec().shape == (8,)  # the cap binds: the texts hold more than 8 words
    assert ex.extractor_id().startswith(f"{name}-8-")
    assert not out[2].any()  # the empty post
    assert out[5].any()

    # Same config and texts -> same id; another cap or another vocabulary -> another id.
    again = make(name, max_features=8)
    again.fit(TEXTS)
    assert again.extractor_id() == ex.extractor_id()
    wider = make(name, max_features=9)
    wider.fit(TEXTS)
    assert wider.extractor_id() != ex.extractor_id()
    other = make(name, max_features=8)
    other.fit(TEXTS[:2] + ["entirely different words here for another vocabulary"])
    assert other.extractor_id() != ex.extractor_id()

    # fit -> artifacts -> a fresh instance -> identical transform of new texts, same id.
    fresh = make(name, max_features=8)
    fresh.load_artifacts(save_artifacts(ex, tmp_path / "store"))
    new = ["a golden cat at the lake", "nothing known", "LAKE lake Lake"]
    np.testing.assert_array_equal(fresh.transform(new), ex.transform(new))
    assert fresh.extractor_id() == ex.extractor_id()
    assert fresh.spec() == ex.spec()


def test_tfidf_weights_and_bow_counts():
    bow = make("bow", max_features=100)
    bow.fit(TEXTS)
    vocab = bow._vectorizer.get_feature_names_out().tolist()
    assert bow.transform(["the the the cat"])[0, vocab.index("the")] == 3.0
    tfidf = make("tfidf", max_features=100)
    tfidf.fit(TEXTS)
    row = tfidf.transform(["the cat"])[0]
    assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-6)  # l2 rows by default
    # "cat" is rarer than "the" in TEXTS, so it weighs more.
    assert row[vocab.index("cat")] > row[vocab.index("the")]


@pytest.mark.parametrize("name", ["tfidf", "bow"])
def test_sklearn_text_errors(name, tmp_path):
    with pytest.raises(PipeError, match="vocabulary"):
        make(name).fit(["", "  ", "!"])
    with pytest.raises(PipeError, match="not fitted"):
        make(name).transform(["text"])
    with pytest.raises(PipeError, match="vocabulary.json"):
        make(name).load_artifacts(tmp_path)
    (tmp_path / "vocabulary.json").write_text("{not json")
    with pytest.raises(PipeError, match="vocabulary"):
        make(name).load_artifacts(tmp_path)
    with pytest.raises(PipeError, match="max_features"):
        make(name, max_features=0)


# -- glove ---------------------------------------------------------------------------------
GLOVE = """the 0.1 0.2 0.3 0.4
The 9 9 9 9
cat 1.0 0.0 -1.0 0.5
lake 0.0 2.0 0.0 -2.0
don't 0.5 0.5 0.5 0.5
"""


@pytest.fixture
def glove_file(tmp_path):
    p = tmp_path / "glove.tiny.4d.txt"
    p.write_text(GLOVE)
    return p


def test_glove_mean_vectors(glove_file):
    ex = make("glove", path=str(glove_file))
    ex.load("cpu")
    out = ex.transform(["The cat!", "the LAKE, the cat", "unknown words only", "", "I don't"])
    check_rows(ex, out, 5)
    assert ex.spec().shape == (4,)
    the, cat, lake, dont = (np.array(v, dtype=np.float32) for v in
                            ([0.1, 0.2, 0.3, 0.4], [1, 0, -1, 0.5], [0, 2, 0, -2], [0.5] * 4))
    np.testing.assert_allclose(out[0], (the + cat) / 2, rtol=1e-6)  # "The" -> "the", first line wins
    np.testing.assert_allclose(out[1], (2 * the + lake + cat) / 4, rtol=1e-6)
    assert not out[2].any() and not out[3].any()  # no known word -> zeros
    np.testing.assert_allclose(out[4], dont, rtol=1e-6)


def test_glove_id_follows_file_content(glove_file, tmp_path):
    ex = make("glove", path=str(glove_file))
    assert ex.extractor_id().startswith("glove-4d-")
    copy = tmp_path / "elsewhere.txt"
    copy.write_text(GLOVE)
    assert make("glove", path=str(copy)).extractor_id() == ex.extractor_id()  # content, not location
    copy.write_text(GLOVE.replace("0.5 0.5 0.5 0.5", "0.5 0.5 0.5 0.6"))
    assert make("glove", path=str(copy)).extractor_id() != ex.extractor_id()


def test_glove_errors(tmp_path):
    with pytest.raises(PipeError, match="GloVe text file"):
        make("glove").spec()
    with pytest.raises(PipeError, match="no such file"):
        make("glove", path=str(tmp_path / "nope.txt")).spec()
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(PipeError, match="line 2"):
        make("glove", path=str(bad)).load("cpu")
    bad.write_text("a 1 2 3\nb 1 x 3\n")
    with pytest.raises(PipeError, match="line 2"):
        make("glove", path=str(bad)).load("cpu")


# -- minilm --------------------------------------------------------------------------------
def test_minilm_sentence_vectors():
    ex = make("minilm")
    ex.load("cpu")
    out = ex.transform(["a cat on the sofa", "", "a cat on the sofa", "stock market news"])
    check_rows(ex, out, 4)
    assert ex.spec().shape == (384,)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # the model normalises
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[3])
    assert make("minilm").extractor_id() == ex.extractor_id()
    assert make("minilm", max_seq_length=16).extractor_id() != ex.extractor_id()
    assert ex.extractor_id().startswith("minilm-")


# -- pixels --------------------------------------------------------------------------------
def test_pixels_rows():
    ex = make("pixels")
    assert ex.modality == "image"
    batch = np.stack([ex.preprocess(im).numpy() for im in images()])
    import torch

    out = ex.forward(torch.from_numpy(batch))
    check_rows(ex, out, 3)
    assert ex.spec().shape == (3, 64, 64) and ex.spec().kind == "pixels"
    red = Image.new("RGB", (50, 30), (255, 0, 0))
    px = ex.preprocess(red).numpy()
    assert (px[0] == 255).all() and (px[1:] == 0).all()
    small = make("pixels", image_size=16)
    assert small.preprocess(red).shape == (3, 16, 16)
    assert small.extractor_id().startswith("pixels-16-")
    assert small.extractor_id() != ex.extractor_id()
    assert make("pixels").extractor_id() == ex.extractor_id()


# -- inception_v3 --------------------------------------------------------------------------
def batch_of(ex, ims):
    import torch

    return torch.stack([ex.preprocess(im) for im in ims])


@pytest.mark.slow
def test_inception_v3_random_weights_and_ids():
    ex = make("inception_v3", weights="random", image_size=96)
    ex.load("cpu")
    out = ex.forward(batch_of(ex, images()[:2]))
    check_rows(ex, out, 2)
    assert not np.allclose(out[0], out[1])
    assert ex.extractor_id().startswith("inception_v3-96-")
    assert make("inception_v3", weights="random", image_size=96).extractor_id() == ex.extractor_id()
    for changed in ({"seed": 1}, {"image_size": 299}, {"weights": "imagenet"}):
        assert make("inception_v3", **{"weights": "random", "image_size": 96, **changed}).extractor_id() != ex.extractor_id()


@pytest.mark.slow
def test_inception_v3_weights_path_roundtrip(tmp_path):
    """At 299 px, a state dict saved from torchvision's model (aux classifier included) reproduces it."""
    import torch
    from torchvision.models import inception_v3

    with torch.random.fork_rng():
        torch.manual_seed(3)
        ref = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True).eval()
    path = tmp_path / "inception.pt"
    torch.save(ref.state_dict(), path)
    ex = make("inception_v3", weights=str(path))
    ex.load("cpu")
    x = batch_of(ex, images()[:2])
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.uint8
    out = ex.forward(x)
    check_rows(ex, out, 2)
    assert ex.spec() == extractors.base.FeatureSpec("vector", (2048,), "float32")
    ref.fc = torch.nn.Identity()
    with torch.inference_mode():
        norm = (x.float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        expected = ref(norm).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert ex.extractor_id().startswith("inception_v3-299-")
    assert ex.extractor_id() != make("inception_v3", weights="random").extractor_id()


def test_inception_v3_weight_errors(tmp_path, monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(*a, **k):
        raise OSError("no internet")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(PipeError, match="--weights PATH.*--weights random"):
        make("inception_v3").load("cpu")
    with pytest.raises(PipeError, match="not imagenet, random or an existing"):
        make("inception_v3", weights=str(tmp_path / "nope.pt")).extractor_id()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PipeError, match="cannot read"):
        make("inception_v3", weights=str(bad)).load("cpu")
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(PipeError, match="not an Inception-v3 state dict"):
        make("inception_v3", weights=str(tmp_path / "other.pt")).load("cpu")
    with pytest.raises(PipeError, match="at least 75"):
        make("inception_v3", image_size=64)


# -- clip / clip_text ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_small():
    """A smaller open_clip ViT (63M parameters) where the default model's size adds nothing."""
    ex = make("clip", model="ViT-S-32", weights="random")
    ex.load("cpu")
    return ex


@pytest.mark.slow
def test_clip_image_embedding_and_open_clip_preprocessing():
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    ex = make("clip", weights="random")  # the default model, ViT-B-32
    ex.load("cpu")
    ims = images()[:2]
    x = batch_of(ex, ims)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 224, 224)
    out = ex.forward(x)
    check_rows(ex, out, 2)
    assert ex.spec() == extractors.base.FeatureSpec("vector", (512,), "float32")
    # Exactly open_clip's own inference transform (as create_model_and_transforms builds it) and encode_image.
    pre = image_transform_v2(PreprocessCfg(**ex.model.visual.preprocess_cfg), is_train=False)
    ref_x = torch.stack([pre(im) for im in ims])
    with torch.inference_mode():
        np.testing.assert_allclose(out, ex.model.encode_image(ref_x).numpy(), rtol=1e-5, atol=1e-5)
    assert ex.extractor_id().startswith("clip-ViT-B-32-")
    assert make("clip", weights="random").extractor_id() == ex.extractor_id()
    for changed in ({"seed": 1}, {"weights": "openai"}, {"output": "grid"}, {"model": "ViT-B-16"}):
        assert make("clip", **{"weights": "random", **changed}).extractor_id() != ex.extractor_id()
    # The pretrained tag brings its preprocessing into the id (e.g. another mean/std).
    assert make("clip", weights="openai").preprocess_cfg()["mean"] == open_clip.OPENAI_DATASET_MEAN


@pytest.mark.slow
def test_clip_weights_path_roundtrip(clip_small, tmp_path):
    import torch

    path = tmp_path / "clip.pt"
    torch.save(clip_small.model.state_dict(), path)
    ex = make("clip", model="ViT-S-32", weights=str(path))
    ex.load("cpu")
    x = batch_of(ex, images()[:1])
    np.testing.assert_array_equal(ex.forward(x), clip_small.forward(x))
    assert ex.extractor_id().startswith("clip-ViT-S-32-") and ex.extractor_id() != clip_small.extractor_id()


def test_clip_grid():
    ex = make("clip", model="ViT-S-32", weights="random", output="grid")
    ex.load("cpu")
    out = ex.forward(batch_of(ex, images()[:1]))
    check_rows(ex, out, 1)
    assert ex.spec() == extractors.base.FeatureSpec("grid", (49, 384), "float16")  # 7x7 patches, width 384
    assert ex.extractor_id().startswith("clip-ViT-S-32-grid-")
    with pytest.raises(PipeError, match="vision transformer"):
        make("clip", model="RN50", output="grid")


def test_clip_text():
    ex = make("clip_text", model="ViT-S-32", weights="random")
    assert ex.modality == "text"
    ex.load("cpu")
    out = ex.transform(["a cat on the sofa", "", "a cat on the sofa", "lake " * 200])  # the last one is truncated
    check_rows(ex, out, 4)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    assert ex.extractor_id().startswith("clip_text-ViT-S-32-")
    assert make("clip_text", model="ViT-S-32", weights="random").extractor_id() == ex.extractor_id()
    assert make("clip_text", model="ViT-S-32", weights="random", seed=2).extractor_id() != ex.extractor_id()
    assert ex.transform([]).shape == (0, 384)


def test_clip_errors(monkeypatch, tmp_path):
    import open_clip

    def offline(*a, **k):
        raise RuntimeError("Failed to download weights")

    with pytest.raises(PipeError, match="unknown open_clip model"):
        make("clip", model="ViT-Nope")
    with pytest.raises(PipeError, match="embedding, grid"):
        make("clip", output="pixels")
    with pytest.raises(PipeError, match="pretrained tag of ViT-B-32"):
        make("clip", weights=str(tmp_path / "nope.pt")).extractor_id()
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(PipeError, match="--weights PATH.*--weights random"):
        make("clip_text").load("cpu")


def test_one_glove_reader_for_the_extractor_and_word_vectors(tmp_path):
    """The `glove` extractor and `word_vectors=PATH` read a file by the same rules: header
    skipped, lowercased, first entry wins, multi-word entries kept whole (never a word)."""
    from pipeline.nn.word_vectors import load_word_vectors, read_glove

    f = tmp_path / "g.txt"
    f.write_text("4 2\nthe 1 0\nThe 9 9\nnew york 5 5\nnew 0 3\n")
    index, table = read_glove(f)
    assert set(index) == {"the", "new york", "new"}
    np.testing.assert_array_equal(table[index["the"]], [1, 0])
    ex = extractors.get("glove")(extractors.get("glove").Config(path=str(f)))
    np.testing.assert_array_equal(ex.transform(["The new"]), [[0.5, 1.5]])  # mean of "the" and "new", not "The"
    vecs, found = load_word_vectors(str(f), ["the", "new", "york", "zzz"])
    assert found == 2
    rms = np.sqrt(np.mean(np.square(np.array([[1, 0], [0, 3]], np.float64))))
    np.testing.assert_allclose(vecs[:2], np.array([[1, 0], [0, 3]]) / rms, rtol=1e-6)
