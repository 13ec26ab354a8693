"""UHAN (paper shapes, ablations, masks, training protocol, save/load) and its DualAtt/DMF baselines."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import heads
from pipeline.head.base import HeadData
from pipeline.nn.layers import TextEncoder, UserVocab, known_tokens, text_vocab_size
from heads.uhan import UHAN, UHANModel
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec
from pipeline.store import FeatureStore, StoreWriter

M, C, L, VOCAB, USERS = 4, 8, 50, 20, 4
SMALL = dict(dim=16, batch_size=32, eval_every=10, patience=4, lr=3e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


def planted(root, n=240, seed=0, no_image=10, vocab_artifact=True) -> HeadData:
    """Scores from a user level, one word (id 5) and region channel 0; the last posts have no image."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, USERS, n)
    grid = rng.normal(size=(n, M, C)).astype(np.float16)
    tok = np.zeros((n, L), np.int32)
    for i, k in enumerate(rng.integers(0, 12, n)):
        tok[i, :k] = rng.integers(1, VOCAB, k)
    y = users * 0.8 + (tok == 5).any(1) * 1.5 + grid[:, :, 0].astype(np.float32).mean(1) * 2 + rng.normal(0, 0.1, n)
    ids = [f"p{i}" for i in range(n)]
    with StoreWriter(root / "v", "vgg16-pool5-448-t", "vgg16", FeatureSpec("grid", (M, C), "float16"), {}) as w:
        w.write_shard(ids[: n - no_image], grid[: n - no_image], [""] * (n - no_image))
    with StoreWriter(root / "t", "tokens-t", "tokens", FeatureSpec("tokens", (L,), "int32"), {}) as w:
        w.write_shard(ids, tok, [""] * n)
        if vocab_artifact:
            words = [f"w{i}" for i in range(2, VOCAB)]  # extractors/tokens.py: word i has id i + 2
            w.save_artifact("vocab.json", json.dumps({"words": words, "dropped": [], "min_count": 5}).encode())
    posts = pl.DataFrame({"post_id": ids, "user_id": [f"u{u}" for u in users], "score": y.astype(float)})
    return HeadData(posts, {"visual": FeatureStore(root / "v"), "text": FeatureStore(root / "t")})


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = planted(tmp_path_factory.mktemp("uhan"))
    return d.subset(slice(0, 160)), d.subset(slice(160, 240))


@pytest.fixture(scope="module")
def trained(parts):
    train, valid = parts
    return UHAN(UHAN.Config(**SMALL, max_steps=200)).fit(train, valid)


def batch(n=6, seed=0, dim_in=512, m=196):
    g = torch.Generator().manual_seed(seed)
    tok = torch.zeros(n, L, dtype=torch.long)
    for i in range(n):
        tok[i, : 3 + i] = torch.randint(2, VOCAB, (3 + i,), generator=g)
    return {"user": torch.arange(n) % 3, "tokens": tok, "visual": torch.rand(n, m, dim_in, generator=g),
            "visual_present": torch.ones(n, dtype=torch.bool)}


def model(ablate=(), dim=512, c=512, seed=0):
    torch.manual_seed(seed)
    shape = None if "visual" in ablate else [196, c]
    text = None if "text" in ablate else TextEncoder(VOCAB, dim)
    return UHANModel(dim, 3, text, shape, 1.0, 0.0, tuple(ablate)).eval()


def test_parameter_shapes_follow_the_paper():
    sd = {k: tuple(v.shape) for k, v in model().state_dict().items()}
    square = ["W_Vv1", "W_Vu1", "W_Vt1", "W_Tt1", "W_Tu1", "W_Tv1", "W_V2", "W_U2", "W_T2", "W_U3", "W_F1"]
    for name in square:
        assert sd[f"{name}.weight"] == (512, 512), name
    for name in ["W_V1", "W_T1", "W_UVT2", "W_F2"]:
        assert sd[f"{name}.weight"] == (1, 512), name
    assert sd["W_F1.bias"] == (512,) and sd["W_F2.bias"] == (1,)
    no_bias = [n for n in square + ["W_V1", "W_T1", "W_UVT2"] if n != "W_F1"]
    assert not [n for n in no_bias if f"{n}.bias" in sd]
    assert sd["user.W_U.weight"] == (3, 512) and sd["text.W_W.weight"] == (VOCAB, 512)
    assert sd["text.lstm.weight_hh_l0"] == (4 * 512, 512)
    assert not any(k.startswith("visual.") for k in sd)  # 512-channel regions enter unprojected


DROPPED = {
    "intra": {"W_V1", "W_Vv1", "W_Vu1", "W_Vt1", "W_T1", "W_Tt1", "W_Tu1", "W_Tv1"},
    "inter": {"W_UVT2", "W_V2", "W_U2", "W_T2"},
    "shortcut": {"W_U3"},
    "user": {"user", "W_Vu1", "W_Tu1", "W_U2", "W_U3"},
    "visual": {"W_V1", "W_Vv1", "W_Vu1", "W_Vt1", "W_Tv1", "W_UVT2", "W_V2", "W_U2", "W_T2"},
    "text": {"text", "W_T1", "W_Tt1", "W_Tu1", "W_Tv1", "W_Vt1", "W_UVT2", "W_V2", "W_U2", "W_T2"},
}


@pytest.mark.parametrize("ablate", [("intra",), ("inter",), ("intra", "inter"), ("shortcut",), ("user",), ("visual",), ("text",)])
def test_each_ablation_drops_its_parameters_and_changes_the_forward_pass(ablate):
    full, abl = model(dim=32, c=32), model(ablate, dim=32, c=32)
    tops = lambda m: {k.split(".")[0] for k in m.state_dict()}  # noqa: E731
    assert tops(full) - tops(abl) == set().union(*(DROPPED[a] for a in ablate))
    abl.load_state_dict({k: v for k, v in full.state_dict().items() if k in abl.state_dict()})  # same shared weights
    b = batch(dim_in=32)
    assert not torch.allclose(full(b), abl(b), atol=1e-6)
    if "user" in ablate:  # the user is gone everywhere
        assert torch.equal(abl(b), abl({**b, "user": (b["user"] + 1) % 3}))
    if "visual" in ablate:
        assert torch.equal(abl(b), abl({**b, "visual": b["visual"] * 3}))
    if "text" in ablate:
        assert torch.equal(abl(b), abl({**b, "tokens": (b["tokens"] > 0) * 7}))


def test_roles_follow_the_ablations_and_bad_configs_fail():
    assert set(UHAN().roles()) == {"visual", "text"}
    assert UHAN().roles()["visual"].default == "vgg16-pool5-448"
    assert set(UHAN(UHAN.Config(ablate=("visual",))).roles()) == {"text"}
    assert set(UHAN(UHAN.Config(ablate=("text",))).roles()) == {"visual"}
    with pytest.raises(PipeError, match="--ablate attention: head 'uhan' knows intra"):
        UHAN(UHAN.Config(ablate=("attention",)))
    with pytest.raises(PipeError, match="no modality"):
        UHAN(UHAN.Config(ablate=("visual", "text")))


def test_padding_and_missing_images_do_not_leak_into_outputs():
    m = model(dim=32, c=32)
    b = batch(dim_in=32)
    short = {**b, "tokens": b["tokens"][:, :9]}  # the same words with less padding
    torch.testing.assert_close(m(b), m(short), rtol=0, atol=1e-5)
    alone = {k: v[:1] for k, v in b.items()}  # the shortest post without longer posts in its batch
    torch.testing.assert_close(m(alone), m(b)[:1], rtol=0, atol=1e-5)
    gone = {**b, "visual_present": torch.tensor([False, True, True, True, True, True])}
    d = m.details(gone)
    assert torch.equal(d["a"][0], torch.tensor([0.0, 1.0])) and torch.all(d["alpha_V"][0] == 0)
    junk = {**gone, "visual": torch.where(gone["visual_present"][:, None, None], gone["visual"], torch.full_like(gone["visual"], 9.0))}
    assert torch.equal(m(gone), m(junk))  # an absent image's row is never read
    assert torch.all(torch.isfinite(m({**b, "tokens": torch.zeros_like(b["tokens"])})))  # empty texts


def test_fits_a_planted_dataset_and_restores_the_best_weights(parts, trained):
    train, valid = parts
    h = trained.history
    assert h[-1]["valid_mse"] < 0.3 * h[0]["valid_mse"]  # the loss falls clearly
    assert h[-1]["train_loss"] < 0.3 * np.var(train.y)
    mse = float(np.mean((trained.predict(valid).astype(np.float64) - valid.y) ** 2))
    assert mse == pytest.approx(min(e["valid_mse"] for e in h), rel=1e-5)
    assert mse == pytest.approx(trained.train_info["best_valid"], rel=1e-5)


def test_deterministic_for_a_seed(parts):
    train, valid = parts
    cfg = UHAN.Config(**SMALL, max_steps=20, seed=7)
    a, b = UHAN(cfg).fit(train, valid), UHAN(cfg).fit(train, valid)
    np.testing.assert_array_equal(a.predict(valid), b.predict(valid))
    assert [e["valid_mse"] for e in a.history] == [e["valid_mse"] for e in b.history]


def test_save_load_round_trip_and_unseen_users(parts, trained, tmp_path):
    _, valid = parts
    trained.save(tmp_path / "m")
    torch.load(tmp_path / "m" / "model.pt", weights_only=True)  # plain tensors only
    back = heads.get("uhan").load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(valid), trained.predict(valid))
    assert back.history == trained.history
    new = HeadData(valid.posts.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("stranger"))
                                            .otherwise(pl.col("user_id")).alias("user_id")), valid.stores)
    np.testing.assert_array_equal(back.unseen_users(new), np.arange(len(new)) < 5)
    assert np.all(np.isfinite(back.predict(new)))


def test_unknown_users_train_row_zero():
    vocab = UserVocab.fit(["b", "a", "b", None])
    assert len(vocab) == 3 and vocab.encode(["a", "b", "zz", None]).tolist() == [1, 2, 0, 0]
    assert UserVocab.from_json(vocab.to_json()).encode(["b"]).tolist() == [2]


def test_text_vocabulary_from_the_store(tmp_path):
    d = planted(tmp_path / "a", n=30, no_image=0)
    tokens, _ = d.features("text")
    assert text_vocab_size(d.stores["text"], tokens) == VOCAB  # 18 words + pad + unknown
    d2 = planted(tmp_path / "b", n=30, no_image=0, vocab_artifact=False)
    assert text_vocab_size(d2.stores["text"], np.array([[3, 2, 0]])) == 4  # no artifact: max id + 1
    assert known_tokens(np.array([[4, 1, 0], [2, 4, 0]])) == [2, 4]
    enc = TextEncoder(VOCAB, 8, known=[2, 4])
    assert enc.W_W.num_embeddings == 4  # pad, unknown, 2 training words
    h = [enc(torch.tensor([[2, t, 0]]))[0] for t in (1, 3, 99)]  # unknown, untrained, beyond the vocabulary
    assert torch.equal(h[0], h[1]) and torch.equal(h[0], h[2])
    assert not torch.equal(h[0], enc(torch.tensor([[2, 4, 0]]))[0])


@pytest.mark.parametrize("name", ["dualatt", "dmf"])
def test_baselines_fit_predict_and_round_trip(name, parts, tmp_path):
    train, valid = parts
    H = heads.get(name)
    h = H(H.Config(**SMALL, max_steps=60)).fit(train, valid)
    p = h.predict(valid)
    assert p.shape == (len(valid),) and np.all(np.isfinite(p))
    assert h.history[-1]["valid_mse"] < h.history[0]["valid_mse"]
    h.save(tmp_path / name)
    np.testing.assert_array_equal(H.load(tmp_path / name).predict(valid), p)


def test_baseline_inputs_follow_the_paper_reading():
    from heads.dmf import DMFModel
    from heads.dualatt import DualAttModel

    dmf = {k.split(".")[0] for k in DMFModel(16, 3, TextEncoder(VOCAB, 16), [M, C], 1.0, 0.0, False).state_dict()}
    assert "user" not in dmf and not any(k.startswith("W_V") for k in dmf)  # no user, no attention
    b = batch(dim_in=C, m=M)
    torch.manual_seed(0)
    da = DualAttModel(16, 3, TextEncoder(VOCAB, 16), [M, C], 1.0, 0.0, True).eval()
    assert not torch.equal(da(b), da({**b, "user": (b["user"] + 1) % 3}))  # the user guides the attention
    assert {"W_Vu", "W_Tu"} <= {k.split(".")[0] for k in da.state_dict()}
    assert "vector" in heads.get("dmf")().roles()["visual"].kinds
