"""Fault tests of issue 20, items 9 and 11: numbers validated once at ingest, bounded input handling.
"""
from __future__ import annotations

import json
import math

import polars as pl

from pipeline.data.contract import load_posts
from tests.test_faults import pipe


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _post(i, **kw):
    return {"post_id": f"p{i}", "user_id": "u", "posted_at": 1_700_000_000 + i, **kw}


# -- numbers (item 11) ------------------------------------------------------------------
def test_an_absurd_or_infinite_target_is_refused_at_ingest_naming_file_row_and_column(tmp_path):
    f = tmp_path / "posts.csv"
    f.write_text("post_id,user_id,posted_at,score,retweets,user_followers\n"
                 "a,u,1700000000,1e308,3,10\n"
                 "b,u,1700000001,2,inf,10\n"
                 "c,u,1700000002,2,1,1e39\n"
                 "d,u,1700000003,2,4,10\n")
    r = pipe("ingest", f, "--name", "x", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and str(f) in r.output, r.output
    assert "column score: score beyond ±1e+15: line 2 (post_id 'a'), value '1e308'" in r.output
    assert "column retweets: infinite, or beyond float32" in r.output and "(post_id 'b')" in r.output
    assert "column user_followers: infinite, or beyond float32" in r.output and "(post_id 'c')" in r.output
    r = pipe("ingest", f, "--name", "x", "--cache", tmp_path / "cache", "--skip-invalid")
    assert r.exit_code == 0 and load_posts("x", tmp_path / "cache")["post_id"].to_list() == ["d"]


def test_a_nan_score_is_never_replaced_by_the_views_formula(tmp_path):
    f = _jsonl(tmp_path / "p.jsonl", [_post(0, score="NaN", views=100, days=2), _post(1, score=None, views=100, days=3),
                                      _post(2, score=1.5, views=1e300, days=1)])
    r = pipe("ingest", f, "--name", "x", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "column score: score is NaN" in r.output and "(post_id 'p0')" in r.output, r.output
    assert "column views: views beyond 1e+15" in r.output and "(post_id 'p2')" in r.output
    assert "p1" not in r.output  # an empty score is computed from views and days, as documented
    assert pipe("ingest", f, "--name", "x", "--cache", tmp_path / "cache", "--skip-invalid").exit_code == 0
    got = load_posts("x", tmp_path / "cache")
    assert got["post_id"].to_list() == ["p1"] and got["score"][0] == math.log2(100 / 3 + 1)
    assert pl.read_parquet(tmp_path / "cache" / "x" / "rejected.parquet").height == 2


# -- bounded input handling (item 9) ----------------------------------------------------
def test_an_image_path_that_is_a_fifo_or_dev_zero_is_a_failure_not_a_hang(tmp_path):
    """A FIFO hung extract (leaving a store folder holding only a manifest); /dev/zero was read without end."""
    import os
    import signal

    from pipeline.extract import build_extractor, run_extract
    from pipeline.store import FeatureStore
    from tests._extract_data import image_posts, write_posts

    cache = tmp_path / "cache"
    rows = image_posts(cache, "d", 3)
    os.mkfifo(tmp_path / "fifo.jpg")
    rows[1]["image"], rows[2]["image"] = str(tmp_path / "fifo.jpg"), "/dev/zero"
    write_posts(cache, "d", rows)
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("extract hung")))
    signal.alarm(60)
    try:
        rep = run_extract("d", build_extractor("pixels", image_size=16), cache, quiet=True, num_workers=0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    st = FeatureStore(rep.store)
    assert st.ids == ["p000"]
    reasons = dict(zip(st.failures()["post_id"].to_list(), st.failures()["reason"].to_list()))
    assert set(reasons) == {"p001", "p002"} and all("not a regular file" in r for r in reasons.values()), reasons


def _wide_csv(path, n_columns: int) -> None:
    cols = {"post_id": [f"p{i}" for i in range(4)], "user_id": ["u"] * 4,
            "posted_at": ["2020-01-01T00:00:00Z"] * 4, "score": [1.0] * 4}
    cols.update({f"c{j}": [float(j)] * 4 for j in range(n_columns)})
    pl.DataFrame(cols).write_csv(path)


def test_a_wide_posts_file_costs_no_work_per_column_pair(tmp_path, monkeypatch):
    """A CSV with 10^5 columns did not finish in 300 s: every column was looked up by name in the
    frame (polars scans the names) and every name counted in the list of names. Now the number of
    lookups by name does not grow with the columns (10^5 columns ingest in ~73 s on a loaded machine:
    the closing note's figure), and every extra numeric column is still kept."""
    from pipeline.data import contract, readers

    lookups = []
    real = pl.DataFrame.__getitem__

    def counting(self, key):
        if isinstance(key, str):
            lookups.append(key)
        return real(self, key)

    monkeypatch.setattr(pl.DataFrame, "__getitem__", counting)
    counts = {}
    for n in (50, 500):
        _wide_csv(tmp_path / f"w{n}.csv", n)
        lookups.clear()
        table, problems = contract.normalise(readers.read_raw(tmp_path / f"w{n}.csv"))
        counts[n] = len(lookups)
        assert problems.height == 0 and table.width == len(contract.CONTRACT) + n
    assert counts[500] == counts[50]  # no lookup per column
    monkeypatch.undo()
    _wide_csv(tmp_path / "dup.csv", 3)
    text = (tmp_path / "dup.csv").read_text().replace("c2", "C1", 1)
    (tmp_path / "dup.csv").write_text(text)
    r = pipe("ingest", tmp_path / "dup.csv", "--name", "d", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and "c1" in r.output and "more than once" in r.output
