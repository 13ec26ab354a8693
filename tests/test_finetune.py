"""`pipe train --finetune`: a few steps on tiny images with random weights change the
trainable block and leave the frozen ones bit-identical; bad images are recorded, not
fatal; the run saves a torchvision-keyed backbone and `pipe score` reproduces its test
predictions with it."""
from __future__ import annotations

import json

from tests import _end_to_end as syn
import numpy as np
import polars as pl
import pytest
import torch

from pipeline import api
from pipeline.core.errors import PipeError
from extractors import build_network

pytestmark = pytest.mark.slow

SETS = {"max_steps": 3, "eval_every": 3, "batch_size": 16, "dim": 16, "device": "cpu", "threads": 1,
        "finetune_workers": 1, "finetune_blocks": 1, "backbone_lr": 1e-2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pipeline.train.tasks.regression import Regression

    root = tmp_path_factory.mktemp("ft")
    cache = syn.make(root, posts=60, seed=1, bad=2)  # the first two images are garbage
    syn.extract(cache, "tokens")
    calls = iter(range(1000, 0, -1))  # every evaluation "improves": the trained weights are kept, not step 0's
    mp = pytest.MonkeyPatch()
    mp.setattr(Regression, "criterion_fn", lambda self, valid, y, output: lambda pred: float(next(calls)))
    r = api.train("syn", "uhan", config=SETS, finetune="vgg16", weights="random", image_size=syn.SIZE,
                  name="ft", runs=root / "runs", cache=cache)
    mp.undo()
    return r, cache


def test_trainable_block_changes_and_frozen_blocks_stay_bit_identical(run):
    r, _ = run
    saved = torch.load(r.dir / "model" / "backbone.pt", map_location="cpu", weights_only=True)
    start = build_network("vgg16", {"layer": "pool5", "image_size": syn.SIZE, "weights": "random", "seed": 0})
    ref = start.state_dict()
    assert set(saved) == set(ref) and all(k.startswith("features.") for k in saved)  # torchvision's own key names
    last = {"features.24.weight", "features.24.bias", "features.26.weight", "features.26.bias",
            "features.28.weight", "features.28.bias"}  # conv5_1..conv5_3: the last block
    for k, v in saved.items():
        if k in last:
            assert not torch.equal(v, ref[k]), f"{k} did not train"
        else:
            assert torch.equal(v, ref[k]), f"frozen {k} changed"


def test_run_records_backbone_and_bad_images(run):
    r, _ = run
    cfg = json.loads((r.dir / "config.json").read_text())
    ft = cfg["finetune"]
    assert ft["backbone"] == "vgg16" and ft["finetune_blocks"] == 1 and ft["backbone_file"].endswith("backbone.pt")
    assert cfg["stores"]["visual"]["extractor_id"] == ft["store"]  # predictions and score read the fine-tuned store
    fails = pl.read_parquet(r.dir / "finetune_failures.parquet")
    assert fails.height >= 1 and all("image" in x or "corrupt" in x for x in fails["reason"].to_list())
    assert r.metrics is not None and np.isfinite(r.metrics["test"]["mse"])


def test_score_of_a_finetuned_run_reproduces_its_test_predictions(run):
    r, cache = run
    pred, scores = syn.rescore(r.dir, cache, "ft-again")
    both = scores.join(pred, on="post_id")
    assert both.height == pred.height
    assert float((both["score"] - both["yhat"]).abs().max()) <= 1e-4
    eid = json.loads((r.dir / "config.json").read_text())["finetune"]["store"]
    assert (cache / "ft-again" / "features" / eid).is_dir()  # extracted with the fine-tuned backbone


def test_finetune_refuses_heads_without_gradients(run, tmp_path):
    _, cache = run
    with pytest.raises(PipeError, match="torch head"):
        api.train("syn", "svr", finetune="vgg16", weights="random", image_size=syn.SIZE, runs=tmp_path, cache=cache)
    with pytest.raises(PipeError, match="only with --finetune"):
        api.train("syn", "uhan", config={"finetune_blocks": 2}, runs=tmp_path, cache=cache)
