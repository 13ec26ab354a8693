"""DMAN's cross-modal search (issue 19): cosine on the tag outputs beside the paper's
Euclidean distance, `p@k` = the head's search and `p@k_euclidean` = the paper's; dead
(constant) tag outputs counted."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from heads.dman import DMAN, DMANConfig, dead_outputs
from pipeline.core.errors import PipeError
from pipeline.train.data import HeadData
from pipeline.train.tasks.embedding import Embedding, EmbeddingOutput, tag_query_distance

# image 0 shows tag "a" weakly, image 1 has every output high but is not an "a"
OUTPUTS = np.array([[0.3, 0.0], [0.8, 0.5]])


def test_cosine_and_euclidean_distances_by_hand():
    np.testing.assert_allclose(tag_query_distance(OUTPUTS, [0]), [[0.7, np.sqrt(0.04 + 0.25)]])
    np.testing.assert_allclose(tag_query_distance(OUTPUTS, [0], "cosine"), [[0.0, 1 - 0.8 / np.sqrt(0.89)]])
    with pytest.raises(PipeError, match="search"):
        tag_query_distance(OUTPUTS, [0], "dot")


@pytest.mark.parametrize("search, p1", [("euclidean", 0.0), ("cosine", 1.0)])
def test_metrics_report_the_heads_search_and_the_papers(search, p1):
    posts = pl.DataFrame({"post_id": ["x", "y"], "labels": [["a"], ["b"]]})
    out = EmbeddingOutput(OUTPUTS.astype(np.float32), ["a", "b"], np.full((2, 2), 0.5, np.float32), ["a", "b"],
                          OUTPUTS.astype(np.float32), search)
    m = Embedding().metrics(HeadData(posts, {}), out)
    assert m["p@1_euclidean"] == 0.5  # query a: image 1 first (wrong); query b: image 1 first (right)
    assert m["p@1"] == pytest.approx((p1 + 1.0) / 2)


def test_dead_tag_outputs_are_counted():
    y = np.array([[0.5, 0.1, 1.0], [0.5, 0.9, 1.0], [0.5, 0.4, 1.0]])
    assert dead_outputs(y) == 2 and dead_outputs(None) == 0


def test_search_setting_is_checked():
    assert DMAN(DMANConfig(search="cosine")).search() == "cosine"
    with pytest.raises(PipeError, match="search"):
        DMAN(DMANConfig(search="dot"))


def test_small_data_regime_stops_dman_on_the_reported_classifier():
    """Below 20K training posts: lr .001, regions standardized per channel and early stopping on
    the classifier's valid mAP (issue 19, measured); `regime=paper` keeps the paper's lr .01, the
    1/RMS scale and the cheaper probe."""
    from heads.dman import DMAN
    from pipeline.train.regime import resolve_regime

    small, _ = resolve_regime(DMAN, DMAN.Config(), 400)
    assert (small.regime, small.lr, small.stop_on, small.standardize_visual) == ("small", 0.001, "classifier", True)
    paper, _ = resolve_regime(DMAN, DMAN.Config(regime="paper"), 400)
    assert (paper.lr, paper.stop_on, paper.standardize_visual) == (0.01, "probe", False)
