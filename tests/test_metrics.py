"""Each metric against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.train.metrics import (
    average_precision,
    cross_modal_precision,
    embedding_metrics,
    mean_std,
    precision_at_ks,
    ranking_metrics,
    regression_metrics,
)


def test_regression_by_hand():
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 8.0]))
    # errors 0, 1, -1, 4: MSE 18/4, MAE 6/4, MedAE median(0,1,1,4) = 1; ranks 1,3,2,4 vs 1,2,3,4: rho = 1 - 6*2/(4*15)
    assert m["mse"] == 4.5 and m["mae"] == 1.5 and m["medae"] == 1.0
    assert m["src"] == pytest.approx(0.8)
    assert math.isnan(regression_metrics(np.array([1.0, 2.0]), np.array([3.0, 3.0]))["src"])


def test_ranking_by_hand():
    users = ["a", "a", "a", "a", "b", "b", "b"]
    labels = np.array([1, 0, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.7, 0.6, 0.2])
    m = ranking_metrics(users, labels, scores)
    # a: ranked 1,0,1,0 -> P@1 1, P@3 2/3; pairs (0.9>0.8, 0.9>0.1, 0.5<0.8, 0.5>0.1) -> 3/4
    # b: ranked 0,1,0 -> P@1 0, P@3 1/3; pairs (0.6<0.7, 0.6>0.2) -> 1/2
    assert m["p@1"] == pytest.approx(0.5)
    assert m["p@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["auc"] == pytest.approx((0.75 + 0.5) / 2)
    tie = ranking_metrics(["u", "u"], np.array([1, 0]), np.array([0.5, 0.5]))
    assert tie["auc"] == 0.5


def test_precision_at_ks_by_hand():
    users = ["a", "a", "a", "a", "b", "b", "b"]
    labels = np.array([1, 0, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.5, 0.7, 0.6, 0.2])
    # a ranked 1,0,1,0; b ranked 0,1,0 (a list shorter than k counts what it has)
    p = precision_at_ks(users, labels, scores, ks=(1, 2, 4, 10))
    assert p[1] == pytest.approx(0.5)
    assert p[2] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert p[4] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert p[10] == p[4]


def test_average_precision_by_hand():
    # ranked truth 1,0,1,0,0 -> precisions at hits 1/1 and 2/3
    assert average_precision(np.array([1, 0, 1, 0, 0]), np.array([5, 4, 3, 2, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(np.zeros(3), np.arange(3)))


def test_embedding_by_hand():
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    conf = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.7], [0.1, 0.3]])
    m = embedding_metrics(truth, conf)
    # predicted (>0.5): [1,0],[0,1],[1,1],[0,0]; label 0: tp 1 fp 1 fn 1; label 1: tp 2 fp 0 fn 0
    assert m["micro_p"] == pytest.approx(3 / 4) and m["micro_r"] == pytest.approx(3 / 4)
    assert m["micro_f1"] == pytest.approx(3 / 4)
    macro_p, macro_r = (1 / 2 + 1) / 2, (1 / 2 + 1) / 2
    assert m["macro_p"] == pytest.approx(macro_p) and m["macro_r"] == pytest.approx(macro_r)
    assert m["macro_f1"] == pytest.approx(2 * macro_p * macro_r / (macro_p + macro_r))
    assert m["macro_f1_per_class"] == pytest.approx((0.5 + 1.0) / 2)
    # label 0 ranked by conf: rows 0 (1), 2 (0), 1 (1), 3 (0) -> AP (1 + 2/3)/2; label 1: rows 1, 2 first -> 1
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_cross_modal_precision_by_hand():
    relevant = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    distance = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    m = cross_modal_precision(relevant, distance, ks=(1, 2, 4))
    assert m["p@1"] == pytest.approx((1 + 1) / 2)
    assert m["p@2"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["p@4"] == pytest.approx((0.5 + 0.25) / 2)


def test_mean_std_over_repeats():
    mean, std = mean_std([{"mse": 1.0}, {"mse": 3.0}], ["mse"])
    assert mean["mse"] == 2.0 and std["mse"] == pytest.approx(math.sqrt(2))
    assert mean_std([{"mse": 1.0}], ["mse"])[1]["mse"] is None  # one repeat: no std


def test_paired_difference_against_hand_computed_values():
    """d = (.1, .1, -.05): mean .05, s = sqrt(.0075), se = .05, t(.975, 2) = 4.302653: +/- .2151327."""
    from pipeline.train.metrics import describe_difference, mean_interval, paired_difference

    d = paired_difference([0.7, 0.8, 0.6], [0.6, 0.7, 0.65])
    assert d["mean"] == pytest.approx(0.05)
    assert (d["low"], d["high"]) == pytest.approx((0.05 - 0.2151327, 0.05 + 0.2151327), abs=1e-6)
    assert d["wins"] == 2 and d["n"] == 3 and d["within_noise"]
    assert describe_difference(d) == "+0.050 [-0.165, +0.265], wins 2/3, within noise"
    lower = paired_difference([1.0, 1.1, 0.9, 1.0], [1.5, 1.5, 1.4, 1.6], higher_is_better=False)  # MSE: lower wins
    assert lower["wins"] == 4 and not lower["within_noise"] and lower["high"] < 0
    one = mean_interval([0.3])
    assert one["mean"] == 0.3 and math.isnan(one["low"])
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
