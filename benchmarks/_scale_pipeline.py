"""The end-to-end stages of benchmarks/scale.py (issue 21, item 6): ingest, tokens, tfidf, a
torch head, score, evaluate and report, each through the Python API that `pipe` calls, on
synthetic posts without images to extract.

Per size N, built once under $TMPDIR/pipe-scale-e2e-N and reused by every stage: a posts
file of N posts (titles of Zipf-drawn words, 90 % with an image path that is never opened),
the dataset `scale` ingested with its tokens and tfidf stores and the ranking task's side
tables (users ~ N/10 following 10 authors each, one retweet event per post), a 64-d visual
vector store and a (4, 16) visual grid store written through the project's writer (as fc7
and pool5 stores would be; no image is decoded), a DMF run (one epoch) and a LightGBM run
on the tfidf text (20 rounds). Posts carry 3 Zipf-drawn labels of 300 and their slugs as
tags. Each stage then times its own step on a fresh target, its libraries imported beforehand (`setup`):
  ingest    the N-post file into an empty cache
  tokens    / tfidf: extraction of the N posts (the posts table copied into a fresh dataset)
  torch     DMF (visual vector + tokens, dim 16, batch 256): one epoch, then its predictions
  amnl      AMNL (visual vector + tokens, dim 16): the task's candidate lists, STEPS steps,
            then the valid and test candidates' predictions
  dman      DMAN (visual grid, 64 tags): the links of every training post, STEPS steps, its
            classifier, then every valid and test post's predictions
  score     `pipe score` of N/4 new posts with the LightGBM run (ingest, tfidf, predict, write)
  evaluate  the comparison rows of the two runs
  report    the HTML report of the two runs
"""
from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

VISUAL = "vgg16-fc7-64-5ca1e000"  # the synthetic visual store (extractor "vgg16", as the test stores)
BATCH = 256  # DMF's batch: one epoch is ceil(train posts / BATCH) steps
QUIET = dict(quiet=True, device="cpu", num_workers=0)
GRID = "vgg16-pool5-4x16-5ca1e000"  # the synthetic visual grid store (DMAN's role)
STEPS = 20  # training steps of the ranking and embedding heads: their other work grows with N


def posts_file(path: Path, n: int, seed: int, labelled: bool = True, prefix: str = "p") -> Path:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(3, 16, n)
    words = vocab[rng.zipf(1.2, lengths.sum()) % len(vocab)]
    titles = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
    t0 = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    frame = {
        "post_id": [f"{prefix}{i}" for i in range(n)],
        "user_id": [f"u{u}" for u in rng.integers(0, max(20, n // 40), n)],
        "posted_at": pl.Series(t0 + rng.integers(0, 365 * 86400 * 10**6, n)).cast(pl.Datetime("us", "UTC")),
        "image": [f"img/{prefix}{i}.jpg" if labelled and i % 10 else None for i in range(n)],
        "title": titles,
        "user_followers": rng.integers(1, 10**5, n).astype(np.float64),
    }
    if labelled:
        frame["score"] = rng.normal(size=n) + 0.1 * lengths
        p = 1 / np.arange(1, 301)
        labels = rng.choice(300, (n, 3), p=p / p.sum())  # 3 Zipf-drawn labels a post (repeats collapse)
        frame["labels"] = [sorted({f"l{x}" for x in row}) for row in labels.tolist()]
        frame["tags"] = frame["labels"]
    pl.DataFrame(frame).write_parquet(path)
    return path


def side_tables(root: Path, posts: Path, seed: int = 0) -> tuple[Path, Path]:
    """follows (users ~ N/10, 10 authors each) and interactions (one retweet per post, 1-48 h after it; a repeated pair kept once)."""
    rng = np.random.default_rng(seed)
    p = pl.read_parquet(posts, columns=["post_id", "user_id", "posted_at"])
    n, authors = p.height, p["user_id"].unique().sort().to_list()
    n_users = max(40, n // 10)
    fu = np.repeat(np.arange(n_users), 10)
    pl.DataFrame({"user_id": [f"r{u}" for u in fu],
                  "followee_id": np.array(authors)[rng.integers(0, len(authors), len(fu))].tolist()}
                 ).unique(maintain_order=True).write_parquet(root / "follows.parquet")
    ep = rng.integers(0, n, n)
    at = p["posted_at"].dt.epoch("us").to_numpy()[ep] + rng.integers(3600 * 10**6, 48 * 3600 * 10**6, n)
    pl.DataFrame({"user_id": [f"r{u}" for u in rng.integers(0, n_users, n)], "post_id": p["post_id"].gather(ep),
                  "at": pl.Series(at).cast(pl.Datetime("us", "UTC"))}).unique(["user_id", "post_id"], keep="first",
                                                                            maintain_order=True) \
        .write_parquet(root / "interactions.parquet")
    return root / "interactions.parquet", root / "follows.parquet"


def _synthetic_store(w: dict, name: str, spec, ids: list[str]) -> None:
    from pipeline.core import paths
    from pipeline.store import StoreWriter

    with StoreWriter(paths.features_dir("scale", w["cache"]) / name, name, "vgg16", spec, {"bench": "scale"}) as sw:
        for s in range(0, len(ids), 16384):
            part = ids[s : s + 16384]
            rows = np.random.default_rng(s).random((len(part), *spec.shape), dtype=np.float32)
            sw.write_shard(part, rows.astype(np.float16), ["x"] * len(part))


def world(n: int) -> dict:
    """The size's cache, runs and files, built once (a `done` marker) and reused."""
    from pipeline import api
    from pipeline.core.specs import FeatureSpec

    root = Path(tempfile.gettempdir()) / f"pipe-scale-e2e-{n}"
    w = {"root": root, "n": n, "cache": root / "cache", "runs": root / "runs", "posts": root / "posts.parquet",
         "new": root / "new.parquet", "dmf": root / "runs" / "dmf", "gbm": root / "runs" / "gbm"}
    if (root / "done").exists():
        return w
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    posts_file(w["posts"], n, 0)
    posts_file(w["new"], max(n // 4, 10), 1, labelled=False, prefix="new")
    interactions, follows = side_tables(root, w["posts"])
    api.ingest(w["posts"], "scale", cache=w["cache"], interactions=interactions, follows=follows)
    for backbone in ("tokens", "tfidf"):
        api.extract("scale", backbone, cache=w["cache"], **QUIET)
    ids = [p for p, img in pl.read_parquet(w["posts"]).select("post_id", "image").iter_rows() if img]
    _synthetic_store(w, VISUAL, FeatureSpec("vector", (64,), "float16"), ids)
    _synthetic_store(w, GRID, FeatureSpec("grid", (4, 16), "float16"), ids)
    train_dmf(w, "dmf")
    api.train("scale", "lightgbm", text="tfidf", ablate="visual", name="gbm", cache=w["cache"], runs=w["runs"],
              config={"n_estimators": 20, "early_stopping_rounds": 20})
    (root / "done").touch()
    return w


WARM = {"tokens": (("tokens",), ()), "tfidf": (("tfidf",), ()), "torch": ((), ("dmf",)), "amnl": ((), ("amnl",)),
        "dman": ((), ("dman",)), "score": (("tfidf",), ("lightgbm",))}  # stage: (extractors, heads) it imports


def setup(n: int, stage: str) -> dict:
    """The size's world, with the stage's libraries imported (its extractors' and heads' modules)
    before it is timed: an import (0.5 s warm, up to 9 s from a cold disk) is a constant that
    blurs the growth exponents."""
    import extractors
    import heads

    names, head_names = WARM.get(stage, ((), ()))
    for name in names:
        extractors.get(name)
    for name in head_names:
        heads.get(name)
    return world(n)


def train_dmf(w: dict, name: str):
    from pipeline import api

    steps = -(-int(pl.read_parquet(w["posts"])["score"].is_not_null().sum() * 0.7) // BATCH)  # ~ one epoch of the train part
    return api.train("scale", "dmf", visual=VISUAL, text="tokens", name=name, cache=w["cache"], runs=w["runs"],
                     config={"max_steps": steps, "eval_every": steps, "batch_size": BATCH, "dim": 16, "device": "cpu"})


def _fresh_dataset(w: dict, name: str) -> Path:
    """A new dataset `name` in a fresh cache holding only the size's posts table."""
    from pipeline.core import paths

    cache = Path(tempfile.mkdtemp(prefix="pipe-scale-"))
    dest = paths.posts_path(name, cache)
    dest.parent.mkdir(parents=True)
    shutil.copy(paths.posts_path("scale", w["cache"]), dest)
    return cache


def run(w: dict, stage: str) -> None:
    from pipeline import api

    if stage == "ingest":
        api.ingest(w["posts"], "fresh", cache=Path(tempfile.mkdtemp(prefix="pipe-scale-")))
    elif stage in ("tokens", "tfidf"):
        api.extract("fresh", stage, cache=_fresh_dataset(w, "fresh"), **QUIET)
    elif stage == "torch":
        train_dmf(w, f"dmf-{datetime.now().strftime('%H%M%S%f')}")
    elif stage == "amnl":
        api.train("scale", "amnl", visual=VISUAL, text="tokens", name=f"amnl-{datetime.now().strftime('%H%M%S%f')}",
                  cache=w["cache"], runs=w["runs"], config={"max_steps": STEPS, "eval_every": STEPS, "dim": 16,
                                                           "text_dim": 16, "device": "cpu"})
    elif stage == "dman":
        api.train("scale", "dman", visual=GRID, name=f"dman-{datetime.now().strftime('%H%M%S%f')}", cache=w["cache"],
                  runs=w["runs"], config={"max_steps": STEPS, "eval_every": STEPS, "clf_epochs": 2, "device": "cpu"},
                  task_config={"tags": 64})
    elif stage == "score":
        out = Path(tempfile.mkdtemp(prefix="pipe-scale-")) / "scores.parquet"
        api.score(w["gbm"], w["new"], out, dataset=f"new-{datetime.now().strftime('%H%M%S%f')}", cache=w["cache"],
                  **QUIET)
    elif stage == "evaluate":
        api.evaluate([w["dmf"], w["gbm"]])
    elif stage == "report":
        api.report([w["dmf"], w["gbm"]], out=Path(tempfile.mkdtemp(prefix="pipe-scale-")) / "report.html",
                   cache=w["cache"])
    else:
        raise ValueError(stage)


STAGES = ("ingest", "tokens", "tfidf", "torch", "amnl", "dman", "score", "evaluate", "report")
