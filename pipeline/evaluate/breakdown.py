"""The per-run breakdowns of `pipe report` beyond the task's plots: errors per user
(regression: count, MAE, MSE; ranking: AUC over the user's candidates), precision-recall
curves per label (embedding) and a tree head's feature importances.

Each reads what the run saved, never the model: `user_id` from predictions.parquet (runs
from before it was kept get a note), every label's confidence from predictions.parquet,
and the importances file a tree head writes beside its model (`IMPORTANCES`), so the page
is drawn without lightgbm installed.
"""
from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from pipeline.evaluate import plots
from pipeline.evaluate.markup import img, note, table
from pipeline.head.tabular import IMPORTANCES
from pipeline.run.rundir import MODEL_DIR, Run
from pipeline.train.metrics import average_precision, pair_auc

TOP_USERS = 10  # users with the most test rows shown
WORST_USERS = 5  # worst users shown, among those with at least MIN_ROWS test rows
MIN_ROWS = 3  # fewer test rows than this: too noisy to call a user worst (unless no user has as many)
TOP_FEATURES = 20  # importances drawn, largest first
MAX_PANELS = 16  # labels given a precision-recall panel, the most frequent in test first

NO_USER_ID = ("no per-user table: this run's predictions.parquet has no user_id (a run trained before it was "
              "kept; train it again to get one)")


def _worst_pool(g: pl.DataFrame, count: str) -> tuple[pl.DataFrame, str]:
    """The users eligible for "worst": those with MIN_ROWS rows or more, else every user."""
    pool = g.filter(pl.col(count) >= MIN_ROWS)
    return (pool, f"at least {MIN_ROWS} test rows") if pool.height else (g, "every user")


def user_errors(preds: pl.DataFrame) -> str:
    """Regression: per user, test posts, MAE and MSE (and training posts): the users with the
    most test posts, then the worst by MAE."""
    if "user_id" not in preds.columns:
        return note(NO_USER_ID)
    train = preds.filter(pl.col("split") == "train").group_by("user_id").agg(pl.len().alias("train posts"))
    err = pl.col("yhat") - pl.col("y")
    g = (preds.filter(pl.col("split") == "test").group_by("user_id")
         .agg(pl.len().alias("test posts"), err.abs().mean().alias("MAE"), (err ** 2).mean().alias("MSE"))
         .join(train, on="user_id", how="left").with_columns(pl.col("train posts").fill_null(0)))
    if g.height == 0:
        return note("no per-user table: no test predictions")
    cols = ["user_id", "test posts", "train posts", "MAE", "MSE"]
    top = g.sort(["test posts", "user_id"], descending=[True, False]).head(TOP_USERS).select(cols)
    pool, who = _worst_pool(g, "test posts")
    worst = pool.sort(["MAE", "user_id"], descending=[True, False]).head(WORST_USERS).select(cols)
    head = ["user", "test posts", "train posts", "MAE", "MSE"]
    return _two_tables(head, top, worst, g.height, "test errors", "test posts",
                       f"the {worst.height} worst users by MAE ({who})")


def _two_tables(head: list[str], top: pl.DataFrame, worst: pl.DataFrame, users: int, what: str, most: str,
                worst_caption: str) -> str:
    """The top users' table, and the worst users' when the top one does not already list every user."""
    every = top.height == users
    caption = (f"{what} of all {users} users" if every
               else f"{what} of the {top.height} users with the most {most} (of {users})")
    out = table(head, top.rows(), caption, cls="users")
    if not every:
        out += table(head, worst.rows(), worst_caption, cls="users")
    return f'<div class="users">{out}</div>'


def user_aucs(preds: pl.DataFrame) -> str:
    """Ranking: per user, the AUC over their test candidates (positive above negative, ties
    count 1/2): the users with the most candidates, then the worst by AUC."""
    if "user_id" not in preds.columns:
        return note(NO_USER_ID)
    test = preds.filter(pl.col("split") == "test")
    rows = []
    for (user,), part in test.partition_by("user_id", as_dict=True, maintain_order=True).items():
        lab, sc = part["label"].to_numpy(), part["score"].to_numpy().astype(np.float64)
        auc = pair_auc(sc, lab)
        rows.append((str(user), part.height, int((lab > 0).sum()), None if math.isnan(auc) else auc))
    if not rows:
        return note("no per-user table: no test candidates")
    g = pl.DataFrame(rows, schema=["user_id", "candidates", "positives", "AUC"], orient="row")
    top = g.sort(["candidates", "user_id"], descending=[True, False]).head(TOP_USERS)
    pool, who = _worst_pool(g.drop_nulls("AUC"), "candidates")
    worst = pool.sort(["AUC", "user_id"]).head(WORST_USERS)
    head = ["user", "candidates", "positives", "AUC (—: one class only)"]
    return _two_tables(head, top, worst, g.height, "test AUC", "candidates",
                       f"the {worst.height} worst users by AUC ({who})")


def pr_curves(run: Run, test: pl.DataFrame) -> list[str]:
    """Embedding: one precision-recall panel per label (the most frequent MAX_PANELS), from every
    label's test confidence; AP (as in the AP bars) and positives in each panel's title."""
    from sklearn.metrics import precision_recall_curve

    if "confidence" not in test.columns or test.height == 0:
        return [note("no precision-recall curves: the run kept only its top-3 confidences per post "
                     "(a run trained before every label's was kept)")] if test.height else []
    every = test["confidence"].struct.unnest()
    truth = test["labels"].to_list()
    counts: dict[str, int] = {}
    for row in truth:
        for lab in row or []:
            if lab in every.columns:
                counts[lab] = counts.get(lab, 0) + 1
    order = sorted(counts, key=lambda k: (-counts[k], k))
    panels = []
    for lab in order[:MAX_PANELS]:
        y = np.array([lab in (row or []) for row in truth])
        conf = every[lab].fill_null(0.0).to_numpy().astype(np.float64)
        precision, recall, _ = precision_recall_curve(y, conf)
        panels.append((lab, recall, precision, average_precision(y, conf), counts[lab]))
    if not panels:
        return [note("no precision-recall curves: no test post has a label the model scores")]
    more = f" ({len(panels)} most frequent of {len(order)} labels)" if len(order) > len(panels) else ""
    return [img(plots.pr_grid(panels, f"test: precision-recall per label{more}"), f"{run.name}: PR curves")]


def importances(run: Run) -> list[str]:
    """A tree head's feature importances (the file it saved with its model), the largest
    TOP_FEATURES as bars; nothing for a head that saved none."""
    path = run.dir / MODEL_DIR / IMPORTANCES
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text())
        feats = [(str(n), float(v)) for n, v in saved["features"]]
    except (OSError, ValueError, KeyError, TypeError):
        return [note(f"{path}: unreadable feature importances")]
    top = [(n, v) for n, v in feats if v > 0][:TOP_FEATURES]
    if not top:
        return [note("feature importances: no split was made (every importance is 0)")]
    kind = str(saved.get("kind", "gain"))
    title = f"feature importance ({kind}), top {len(top)} of {len(feats)}"
    return [img(plots.bars([n for n, _ in top], [v for _, v in top], title, f"total {kind}", horizontal=True),
                f"{run.name}: feature importances")]
