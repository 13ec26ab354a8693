"""Issue 22, item 6: explain and rank pages keep each image's aspect ratio, rank.html opens
with a summary table, and a sequence head (DSN) explains with its weights over earlier posts
or `pipe explain` refuses it (no empty page with exit 0)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from pipeline.core.errors import NotApplicable
from pipeline.evaluate.report import page
from pipeline.explain import anchor, explanations
from pipeline.rank import summary_html
from tests.test_dsn import _fit, parts  # noqa: F401  (the module fixture DSN's tests train on)


def test_page_images_are_not_stretched_to_the_row_height():
    css = page("t", "")
    plots = re.search(r"\.plots\{([^}]*)\}", css).group(1)
    imgs = re.search(r"\.plots img\{([^}]*)\}", css).group(1)
    assert "align-items:flex-start" in plots  # a flex row's default (stretch) distorts every shorter image
    assert "height:auto" in imgs and "object-fit:contain" in imgs


def test_rank_page_opens_with_a_summary_table_linking_each_section():
    ranked = pl.DataFrame({"rank": [1, 2, 3], "post_id": ["b", "a/x", "c"], "score": [2.5, 1.25, -0.5],
                           "gain": [0.5, -0.75, -2.5], "unseen_user": [False] * 3, "missing_image": [False, True, False]})
    html = summary_html(ranked)
    rows = re.findall(r"<tr><td>(\d+)</td><td class=\"l\"><a href=\"#([^\"]+)\">([^<]+)</a></td><td>([^<]+)</td>"
                      r"<td>([^<]+)</td><td class=\"l\">([^<]*)</td></tr>", html)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("1", anchor("b"), "b", "2.5000", "+0.5000", ""), ("2", anchor("a/x"), "a/x", "1.2500", "-0.7500", "no image"),
        ("3", anchor("c"), "c", "-0.5000", "-2.5000", "")]
    unseen = summary_html(ranked.with_columns(pl.lit(None, pl.Float64).alias("gain"), pl.lit(True).alias("unseen_user")))
    assert unseen.count("<td>n/a</td>") == 3 and "no image, unseen user" in unseen


def test_dsn_explains_its_weights_over_earlier_posts(parts, one_thread):  # noqa: F811
    head, p = _fit(parts)
    test = p["test"]
    exps = head.explain(test)
    windows = head.attended(test)
    assert len(exps) == len(test) and all(e.history is not None for e in exps)
    order = {pid: i for i, pid in enumerate(test.history.posts["post_id"].to_list())}
    seen = 0
    for e, win in zip(exps, windows):
        assert win[[w is not None for w in win].index(False) - 1 if None in win else -1] == e.post_id  # post last
        if e.history:
            seen += 1
            assert sum(w for _, w in e.history) == pytest.approx(1, abs=1e-5)
            assert all(order[q] < order[e.post_id] for q, _ in e.history)  # strictly earlier posts only
    assert seen > len(exps) // 2


def test_explain_refuses_a_head_that_gives_no_map(parts, one_thread):  # noqa: F811
    head, p = _fit(parts, ablate=["long_term"])
    exps = head.explain(p["test"])
    assert all(e.history is None and e.regions is None and e.words is None for e in exps)
    run = SimpleNamespace(head="dsn", name="r1")
    with pytest.raises(NotApplicable, match="no attention map.*long_term"):
        explanations(run, head, p["test"], np.zeros(len(p["test"]), bool), None)
