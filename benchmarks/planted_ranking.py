"""Do the ranking heads find the planted retweet signals? (issue 11's ranking table)

`pipe synth --task ranking` data (pipeline/data/synth_ranking.py: 480 image tweets by 40
accounts, 200 users, tastes shared with an influential followee, ~2,700 retweets), random-
weight VGG16 fc7 at 64 px and tokens (no internet here; extraction is resumable, so a
second run only trains), the ranking task's default split (retweet events 70/10/20 in
time order) and candidates (each test positive + 2 negatives), the same for every row.
Each row trains `--seeds` seeds (`--repeats`); one table of test P@1, P@3 and AUC (mean and
95 % interval over seeds) and, per row, the paired difference of AMNL's AUC to it seed by
seed ("within noise" where the interval crosses zero; benchmarks/_seeds.py), written as
JSON, with the planted ceiling (the true topic and popularity as the score) for scale.

Every row at the head's defaults (no `--set` but the row's own): the training schedule is
the data's (`regime=auto`: about two evaluations per epoch, patience 12), unless `--steps N`
caps each torch head at N batches (evaluating every 30, patience 5) for a quick look.

`--shape followee` runs the second shape (`pipe synth --task ranking --shape followee`: 300
users, 60 accounts, 1,500 tweets, tastes driven by the influential followee), in its own folder under the workdir.
Measured (issue 19, 5 seeds, both shapes; the README's ranking section has the table): AMNL
0.681 / 0.669 test AUC against popularity 0.651 / 0.648, VBPR 0.635 / 0.646, BPR 0.500 (those
five rows: 2 / 4 minutes on 2 loaded cores); the whole table took 33 / 25 minutes before runs
were sized in groups, 20 of the first for the `regime=paper` row (dim 400, ~4 min a seed).
After (this session, 3-4 processes on 2 cores): 5.6 / 8.4 minutes without that row, which
alone took 27 minutes (AUC 0.551 [0.520, 0.582], AMNL +0.130 [+0.097, +0.162], 5/5).

The `regime=paper` row (the paper's sizes, dim 400, AdaGrad, the product score) runs only with
`--paper` (or `--only "AMNL (paper settings)"`): at 5-6 minutes a seed it alone took the table
past 30 minutes; without it the table is the rows a user compares at the defaults.

    python benchmarks/planted_ranking.py [--shape default|followee] [--posts 480] [--steps N] [--seeds 5] [--paper] [--only LABEL ...] [--workdir ...]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline import api
from pipeline.data.contract import load_posts, load_side_tables
from pipeline.data.splits import parse_split
from pipeline.data.synth_ranking import SHAPES, synth
from pipeline.train import tasks

from _seeds import add_seeds_flag, comparison_lines, per_seed, summary

AMNL: dict = {}  # the head's defaults: `regime=auto` picks its small-data values here
METRICS = ("p@1", "p@3", "auc")
RUNS: list[tuple[str, str, list[str], dict]] = [  # (label, head, ablations, config)
    ("Popularity", "popularity", [], {}),
    ("BPR", "bpr", [], {}),
    ("VBPR", "vbpr", [], {}),
    ("AMNL", "amnl", [], AMNL),
    ("AMNL (no author bias)", "amnl", [], {**AMNL, "author_bias": False}),
    ("AMNL (product)", "amnl", [], {**AMNL, "fusion": "product"}),
    ("AMNL (paper settings)", "amnl", [], {"regime": "paper"}),
    ("AMNL_i (w/o text)", "amnl", ["text"], AMNL),
    ("AMNL_d (w/o visual)", "amnl", ["visual"], AMNL),
    ("AMNL w/o followees", "amnl", ["followees"], AMNL),
]
PAPER_SCALE = {"AMNL (paper settings)"}  # rows at the paper's sizes (dim 400): with --paper only (5-6 min a seed)


def ceiling(dataset: str, cache: Path, signals: dict) -> dict[str, float]:
    """Test metrics of the planted score itself (true topic match and author popularity)."""
    task = tasks.get("ranking")()  # the default candidate lists, those every head of the table is judged on
    data = task.prepare(load_posts(dataset, cache), load_side_tables(dataset, cache), parse_split(None), {}).data["test"]
    topic = {t["post_id"]: t["topic"] for t in signals["tweets"]}
    author = dict(data.posts.select("post_id", "user_id").iter_rows())
    eff = signals["config"]["taste_effect"]
    s = [eff * (signals["users"][u]["taste"] == topic[p]) + signals["accounts"][author[p]]["popularity"]
         for u, p in data.examples.select("user_id", "post_id").iter_rows()]
    return task.metrics(data, np.asarray(s, np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="default", choices=list(SHAPES), help="the synth's shape (synth_ranking.SHAPES)")
    ap.add_argument("--posts", type=int, help="tweets (default: the shape's, 480 / 1,500)")
    ap.add_argument("--steps", type=int, help="cap every torch head at this many batches (default: the regime's schedule)")
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/out/planted_ranking"))
    ap.add_argument("--only", nargs="*", help="labels of RUNS to train (default: all)")
    ap.add_argument("--full", default="AMNL", help="the row every paired difference is taken from")
    ap.add_argument("--paper", action="store_true",
                    help="add the rows at the paper's sizes (regime=paper: ~25 more minutes at 5 seeds)")
    add_seeds_flag(ap)
    a = ap.parse_args()
    config, posts = SHAPES[a.shape]
    a.posts = a.posts or posts
    w = a.workdir if a.shape == "default" else a.workdir / a.shape
    cache, runs, data = w / "cache", w / "runs", w / "data"
    t0 = time.perf_counter()
    if not (data / "posts.parquet").exists():
        synth(data, a.posts, image_size=64, seed=0, config=config)
    api.ingest(data / "posts.parquet", "ranking", cache=cache, interactions=data / "interactions.parquet",
               follows=data / "follows.parquet")
    visual = api.extract("ranking", "vgg16", layer="fc7", image_size=64, weights="random", cache=cache, quiet=True)
    text = api.extract("ranking", "tokens", cache=cache, quiet=True)
    prep_s = time.perf_counter() - t0
    rows = []
    for label, head, ablate, config in RUNS:
        if (a.only is not None and label not in a.only) or (a.only is None and label in PAPER_SCALE and not a.paper):
            continue
        t = time.perf_counter()
        torch = head != "popularity"
        cap = {"max_steps": a.steps, "eval_every": 30, "patience": 5} if a.steps else {}
        sets = {**config, **({**cap, "threads": 1} if torch else {})}
        run = api.train("ranking", head, config=sets, ablate=ablate, cache=cache, runs=runs, repeats=a.seeds,
                        stores={"visual": visual.extractor_id, "text": text.extractor_id})
        seeds = {k: per_seed(run.dir, k) for k in METRICS}
        rows.append({"label": label, "head": head, "ablate": ablate, "config": config, "run": run.dir.name,
                     "seeds": seeds, "seconds": round(time.perf_counter() - t, 1)})
        print(f"{label:24s} " + "  ".join(f"{k} {summary(v)}" for k, v in seeds.items()) + f"  ({rows[-1]['seconds']}s)",
              flush=True)
    schedule = f"capped at {a.steps} steps" if a.steps else "on the regime's schedule"
    print(f"\n{a.seeds} seed(s), torch heads {schedule}; paired differences of test AUC:")
    print("\n".join(comparison_lines(rows, a.full, "auc")))
    top = ceiling("ranking", cache, json.loads((data / "signals.json").read_text()))
    print(f"{'planted score (ceiling)':22s} P@1 {top['p@1']:.3f}  P@3 {top['p@3']:.3f}  AUC {top['auc']:.3f}")
    out = {"shape": a.shape, "posts": a.posts, "steps": a.steps, "seeds": a.seeds, "prepare_seconds": round(prep_s, 1),
           "rows": rows, "ceiling": {k: round(v, 4) for k, v in top.items()}}
    path = w / "planted_ranking.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
