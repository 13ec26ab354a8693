"""The embedding heads (dman and its ablations, probe): links, tag vocabularies and label
statistics from the training part only; DMAN's similarity and loss; the synthetic data."""
from __future__ import annotations

from pathlib import Path

from tests import _tiny_data as tiny
from tests import _tiny_tasks
import numpy as np
import polars as pl
import pytest
import torch

import heads
from heads.dman import DMANConfig, DMANModel, dman_loss, sample_links, sim
from pipeline.core.config import build_config, parse_sets
from pipeline.core.errors import PipeError
from pipeline.data.splits import parse_split
from pipeline.store import open_store
from pipeline.train.data import HeadData, RunSettings
from pipeline.train.tasks.embedding import tag_vocabulary

SMALL = ["max_steps=8", "eval_every=4", "patience=2", "batch_size=16", "clf_epochs=5", "seed=3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = tmp_path_factory.mktemp("cache")
    tiny.make_dataset(c, n=80, seed=5)
    return c


CLASSES = ("ant", "bee", "cat", "dog")  # class k is shown where grid channel k peaks above 1


def _labelled_posts(cache: Path) -> pl.DataFrame:
    """The tiny posts with `labels` read off their grid (class k when channel k of some region
    exceeds 1; the strongest of the four otherwise, "ant" without an image) and `tags`: the
    labels' names, dropped on every 5th post, plus a noise tag."""
    posts = pl.read_parquet(cache / "tiny" / "posts.parquet")
    store = open_store("tiny", tiny.GRID, cache)
    labels, tags = [], []
    for i, pid in enumerate(posts["post_id"].to_list()):
        peak = store.read([pid])[0].astype(np.float32).max(0)[:4] if pid in store else np.array([1.5, 0, 0, 0])
        shown = [c for c, v in zip(CLASSES, peak) if v > 1] or [CLASSES[int(peak.argmax())]]
        labels.append(shown)
        tags.append([c for c in shown if i % 5] + [("photo", "nikon", "summer")[i % 3]])
    return posts.with_columns(pl.Series("labels", labels, pl.List(pl.Utf8)), pl.Series("tags", tags, pl.List(pl.Utf8)))


def _parts(cache: Path, posts: pl.DataFrame, tags: int | None = None) -> dict[str, HeadData]:
    """The parts under the embedding task with the dman default (`tags` given: that vocabulary size)."""
    stores = {"visual": open_store("tiny", tiny.GRID, cache)}
    task = _tiny_tasks.task_for(heads.get("dman"), {"tags": tags} if tags is not None else {})
    return task.prepare(posts, {}, parse_split(None, task.default_split), stores).data


def _fit(cache: Path, posts: pl.DataFrame, name: str = "dman", ablate: list[str] | None = None):
    cls = heads.get(name)
    fields = set(cls.Config.__dataclass_fields__)
    head = cls(build_config(name, cls.Config, {k: v for k, v in parse_sets(SMALL).items() if k in fields}, ablate or []))
    head.settings = RunSettings(device="cpu", threads=1, prefetch=0)
    parts = _parts(cache, posts)
    head.fit(parts["train"], parts["valid"])
    return head, parts


def test_sample_links_share_a_label_and_stay_among_the_rows():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    links = sample_links(labels, per_post=50, seed=0)
    assert [sorted(x.tolist()) for x in links] == [[1, 4], [0, 2, 4], [1], [], [0, 1]]
    many = np.zeros((400, 2), np.float32)
    many[:, 0] = 1
    many[::2, 1] = 1
    big = sample_links(many, per_post=50, seed=1)  # the rejection-sampling path
    assert all(len(x) == 50 and i not in x and len(set(x.tolist())) == 50 for i, x in enumerate(big))
    assert sample_links(many, 50, 1)[7].tolist() == big[7].tolist()  # seeded


def test_similarity_divides_by_the_sum_of_norms():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0]])
    assert sim(a, b).item() == pytest.approx((18 + 32) / (5 + 10))


def test_loss_is_hinge_plus_weighted_bce():
    """One anchor with a linked positive and one candidate negative, checked by hand."""
    c = DMANConfig(lam=10.0, beta=1.0, margin=0.3, negatives=3)
    model = DMANModel([1, 2], n_tags=2, n_labels=2, c=c, scale=1.0)
    raw = torch.tensor([[2.0, -1.0], [0.0, 0.0], [1.0, 1.0], [-2.0, 2.0]])  # anchors (2), then positives (2)
    batch = {"visual": torch.zeros(2, 1, 2), "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
             "labels_pos": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "has_pos": torch.tensor([1.0, 0.0]),
             "tags": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    y = torch.sigmoid(raw)
    neg = [1, 3]  # post 0's candidates sharing no label: anchor 1 and positive 1
    hinge = sum(max(0.0, 0.3 - sim(y[0:1], y[2:3]).item() + sim(y[0:1], y[j:j + 1]).item()) for j in neg) / 2
    t = batch["tags"]
    bce = -(10 * t * torch.log(y[:2]) + (1 - t) * torch.log(1 - y[:2])).sum(1).mean().item()
    got = dman_loss(model, c)(raw, batch).item()
    assert got == pytest.approx(hinge + bce, rel=1e-5)


def test_training_statistics_come_from_the_training_part_only(cache):
    """Changing the test posts' labels and tags changes nothing the model learned; changing a
    training post's labels changes the links."""
    posts = _labelled_posts(cache)
    head, parts = _fit(cache, posts)
    test_ids = parts["test"].ids
    other = posts.with_columns(
        labels=pl.when(pl.col("post_id").is_in(test_ids)).then(pl.lit(["zebra"])).otherwise(pl.col("labels")),
        tags=pl.when(pl.col("post_id").is_in(test_ids)).then(pl.lit(["zebra", "yak"])).otherwise(pl.col("tags")))
    again, parts2 = _fit(cache, other)
    assert parts2["test"].ids == test_ids
    assert again.meta["tags"] == head.meta["tags"] == tag_vocabulary(parts["train"].posts, 1000)
    assert again.meta["labels"] == head.meta["labels"] and "zebra" not in again.meta["labels"]
    assert again.train_info["links"] == head.train_info["links"]
    for k, v in head.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    a, b = head.predict(parts["test"]), again.predict(parts2["test"])
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    train_ids = parts["train"].ids
    relabelled = posts.with_columns(labels=pl.when(pl.col("post_id").is_in(train_ids[:10])).then(pl.lit(["zebra"]))
                                    .otherwise(pl.col("labels")))
    moved, _ = _fit(cache, relabelled)
    assert moved.train_info["links"] != head.train_info["links"] and "zebra" in moved.meta["labels"]


def test_posts_without_a_vocabulary_tag_or_image_are_left_out_and_counted(cache):
    posts = _labelled_posts(cache)
    head = heads.get("dman")(build_config("dman", DMANConfig, parse_sets(SMALL)))
    head.settings = RunSettings(device="cpu", threads=1, prefetch=0)
    parts = _parts(cache, posts, tags=2)
    vocab = set(tag_vocabulary(parts["train"].posts, 2))
    no_tag = sum(1 for r in parts["train"].posts["tags"].to_list() if not vocab & set(r))
    head.fit(parts["train"], parts["valid"])
    left = head.train_info["left_out"]
    no_image = sum(1 for p in parts["train"].ids if p not in parts["train"].stores["visual"])
    assert left["no_image"] == no_image and left["no_vocabulary_tag"] >= 1
    assert head.train_info["trained_on"] == len(parts["train"]) - no_image - left["no_vocabulary_tag"]
    task = _tiny_tasks.task_for(heads.get("dman"), {"tags": 2})
    notes = task.prepare(posts, {}, parse_split(None, task.default_split), parts["train"].stores).notes
    assert any(f"{no_tag} training posts have none of the 2 vocabulary tags" in n for n in notes)


@pytest.mark.parametrize("ablate", [[], ["attention"], ["tags"]])
def test_variants_output_what_their_branch_gives(cache, ablate):
    head, parts = _fit(cache, _labelled_posts(cache), ablate=ablate)
    out = head.predict(parts["test"])
    assert out.confidence.shape == (len(parts["test"]), len(head.meta["labels"]))
    if ablate == ["tags"]:
        assert out.tags is None and out.vectors.shape[1] == head.config.dim
    else:
        assert out.tags == head.meta["tags"] and out.tag_confidence.shape[1] == len(out.tags)
        assert ((out.tag_confidence >= 0) & (out.tag_confidence <= 1)).all()
    assert ("att" in dict(head.model.named_children())) == (not ablate)


def test_dman_without_a_tags_column_needs_the_tags_ablation(cache):
    posts = _labelled_posts(cache).drop("tags")
    with pytest.raises(PipeError, match="--ablate tags"):
        _fit(cache, posts)
    head, _ = _fit(cache, posts, ablate=["tags"])
    assert head.meta["tags"] == []


def test_synth_embedding_writes_ingestible_posts(tmp_path):
    from pipeline.data.ingest import ingest
    from pipeline.data.synth_embedding import class_names, synth

    path = synth(tmp_path / "s", 40, image_size=32, seed=1, classes=5)
    posts = pl.read_parquet(path)
    assert posts.height == 40 and set(posts.columns) >= {"post_id", "labels", "tags", "image", "score"}
    sizes = posts["labels"].list.len().to_list()
    assert min(sizes) >= 1 and max(sizes) <= 3
    assert {x for r in posts["labels"].to_list() for x in r} <= set(class_names(5))
    assert pl.read_parquet(path).equals(pl.read_parquet(synth(tmp_path / "t", 40, image_size=32, seed=1, classes=5)))
    rep = ingest(path, "synemb", "auto", tmp_path / "cache")
    assert rep.rows == 40
    with pytest.raises(PipeError, match="unknown option"):
        synth(tmp_path / "u", 10, colours=3)


def _fit_with(cache: Path, extra: list[str]):
    head = heads.get("dman")(build_config("dman", DMANConfig, parse_sets(SMALL + extra)))
    head.settings = RunSettings(device="cpu", threads=1, prefetch=0)
    parts = _parts(cache, _labelled_posts(cache))
    head.fit(parts["train"], parts["valid"])
    return head, parts


@pytest.mark.slow
def test_stop_on_classifier_watches_the_reported_classifiers_valid_map(cache):
    """Issue 19: with stop_on=classifier the early-stopping criterion is the valid mAP of the
    classifier fitted on the probe posts' embeddings; a tiny valid part doubles the patience."""
    from heads.dman import SMALL_VALID, sized_patience
    from pipeline.train.tasks.embedding import embedding_metrics

    head, parts = _fit_with(cache, ["stop_on=classifier"])
    assert len(parts["valid"]) < SMALL_VALID and head.config.patience == 4 == sized_patience(2, len(parts["valid"]))
    assert any("patience doubled to 4" in n for n in head.fit_notes())
    best = max(h["valid_map"] for h in head.history if h["valid_map"] is not None)
    assert head.train_info["best_valid"] == pytest.approx(best)
    # the best weights are restored: the classifier criterion recomputed on them gives the best value
    train = parts["train"].subset(np.flatnonzero(head.usable(parts["train"])[0]))
    rows = np.sort(np.random.default_rng(head.config.seed).permutation(len(train))[: head.config.probe_posts])
    ref, emb = head.embed(train.subset(rows)), head.embed(parts["valid"])
    conf = head._probe_classifier(ref, head.targets(train.subset(rows)), emb, parts["valid"])
    assert embedding_metrics(head.targets(parts["valid"]), conf)["map"] == pytest.approx(best, abs=1e-6)
    probe, _ = _fit_with(cache, [])
    assert probe.config.patience == 2 and not any("patience" in n for n in probe.fit_notes())
    assert [h["valid_map"] for h in probe.history] != [h["valid_map"] for h in head.history]
    with pytest.raises(PipeError, match="stop_on"):
        heads.get("dman")(build_config("dman", DMANConfig, parse_sets(["stop_on=never"]))).check_config()


@pytest.mark.slow
def test_dead_tag_outputs_go_to_the_notes(cache, monkeypatch):
    import heads.dman as dman

    monkeypatch.setattr(dman, "dead_outputs", lambda outputs, tol=1e-6: 3)
    head, _ = _fit_with(cache, [])
    assert head.train_info["dead_tag_outputs"] == 3
    assert any(n.startswith(f"3 of {len(head.meta['tags'])} tag outputs are constant") for n in head.fit_notes())


def test_synth_embedding_noisy_shape_more_classes_noisier_tags(tmp_path):
    """Issue 19: `--shape noisy`: 12 classes, up to 4 per image, fewer true tags and more false ones."""
    from typer.testing import CliRunner

    from pipeline.cli import _load_commands, app

    _load_commands()
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "n"), "--task", "embedding", "--shape", "noisy",
                                   "--posts", "300", "--image-size", "16"])
    assert res.exit_code == 0, res.output
    posts = pl.read_parquet(tmp_path / "n" / "posts.parquet")
    truth = pl.read_parquet(tmp_path / "n" / "truth.parquet")
    assert len({x for r in posts["labels"].to_list() for x in r}) == 12 and posts["labels"].list.len().max() == 4
    shown = truth["classes"].list.len().sum()
    recall = 1 - truth["tags_dropped"].list.len().sum() / shown
    assert 0.5 < recall < 0.7 and 0.2 < (truth["tags_false"].list.len() > 0).mean() < 0.4


def test_standardized_regions_use_the_training_channel_statistics(cache, tmp_path):
    """`standardize_visual`: per-channel mean / sd of the training regions (saved with the head);
    the model standardizes its regions with them instead of the 1/RMS scale."""
    posts = _labelled_posts(cache)
    head = heads.get("dman")(build_config("dman", DMANConfig, parse_sets(SMALL + ["standardize_visual=true"])))
    head.settings = RunSettings(device="cpu", threads=1, prefetch=0)
    parts = _parts(cache, posts)
    head.fit(parts["train"], parts["valid"])
    store = parts["train"].stores["visual"]
    c = store.spec.shape[-1]
    regions = store.read([p for p in parts["train"].ids if p in store]).astype(np.float64).reshape(-1, c)  # (n * D, M)
    np.testing.assert_allclose(head.meta["channel_mean"], regions.mean(0), rtol=1e-9)
    np.testing.assert_allclose(head.meta["channel_std"], np.maximum(regions.std(0), 1e-6), rtol=1e-9)
    model = head.model
    plain = DMANModel(head.meta["visual_shape"], len(head.meta["tags"]), len(head.meta["labels"]), head.config, 1.0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("mean", "std")})
    x = torch.from_numpy(store.read(parts["test"].ids[:5]).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(model.eval().logits(x), plain.eval().logits((x - model.mean) / model.std), rtol=1e-5)
    head.save(tmp_path / "m")
    again = heads.get("dman").load(tmp_path / "m")
    again.settings = head.settings
    np.testing.assert_allclose(again.predict(parts["test"]).confidence, head.predict(parts["test"]).confidence, rtol=1e-6)
    head.meta.pop("channel_mean"), head.meta.pop("channel_std")  # a run saved before the option
    assert not hasattr(head.build_model(), "mean")
