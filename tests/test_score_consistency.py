"""For every registered regression head, `pipe score` of the run's own test posts (ingested
under another dataset name, features extracted again by the run's extractors) reproduces
the run's test predictions in predictions.parquet (max abs difference <= 1e-4 on CPU).
Fine-tuned runs are checked in tests/test_finetune.py."""
from __future__ import annotations

import dataclasses

from tests import _end_to_end as syn
import pytest

import heads
from pipeline import api

pytestmark = pytest.mark.slow

TINY = {"max_steps": 4, "eval_every": 2, "patience": 2, "batch_size": 16, "dim": 16, "n_estimators": 20,
        "n_jobs": 1, "max_train_rows": 60, "min_child_samples": 5}
STORES = {"grid": "vgg16-pool5", "vector": "vgg16-fc7", "pixels": "pixels", "tokens": "tokens"}
TEXT = {"tokens": "tokens", "vector": "tfidf"}
REGRESSION = [n for n in heads.names() if heads.get(n).task == "regression"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c = syn.make(tmp_path_factory.mktemp("consistency"), posts=90, seed=2)
    syn.extract(c, "vgg16", "tokens", "pixels", "tfidf")
    api.extract("syn", "vgg16", cache=c, quiet=True, device="cpu", num_workers=0, layer="fc7", image_size=syn.SIZE,
                weights="random")
    return c


def _stores(head: heads.Head) -> dict[str, str]:
    """Per role, the test store of the first kind it accepts (text roles: tokens, else tfidf)."""
    out = {}
    for role, spec in head.roles().items():
        table = TEXT if role == "text" else STORES
        kind = next((k for k in spec.kinds if k in table), None)
        if kind is None:  # a new head must not drop out of the check unnoticed
            pytest.fail(f"no test store of kind {spec.kinds} for role {role!r}: add one to the fixture")
        out[role] = table[kind]
    return out


@pytest.mark.parametrize("name", REGRESSION)
def test_score_reproduces_test_predictions(name, cache, tmp_path):
    cls = heads.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in TINY.items() if k in fields}
    window = {"window": 2} if cls.task_defaults.get("window") else {}  # a sequence head: a short window
    run = api.train("syn", name, config={**config, "device": "cpu", "threads": 1}, stores=_stores(cls()), name=name,
                    runs=tmp_path / "runs", cache=cache, task_config=window)
    pred, scores = syn.rescore(run.dir, cache, f"{name}-again")
    both = scores.join(pred, on="post_id")
    assert both.height == pred.height > 0
    assert float((both["score"] - both["yhat"]).abs().max()) <= 1e-4
