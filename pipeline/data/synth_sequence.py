"""`pipe synth --task sequence`: posts whose score also depends on what was published just
before them, for the window heads (DSN) and the baselines they must beat.

The regression synth (`pipeline/data/synth.py`: user level, user-conditional lucky object
and word, time trend, three-level categories, followers, near-duplicates) with weaker
object and word effects (0.5 each), plus a planted temporal context effect:

    score += sequence_effect * (c - mean c)

where c counts, among the `context` posts published just before the post in the global
stream (ordered by posted_at, ties by post_id, posts of every user), those sharing the
post's top-level category; mean c is the dataset's mean. With 5 categories and users'
70 % favourites, c has a standard deviation near 1, so the effect's is about 0.6.

What a window model should win: c is a function of the earlier posts' categories, which
no single-post model sees, whatever it knows about the user or the category. With the
default `context` = 7, DSN at `window` = 8 (the post + 7 before) can count them (its
attention has the target as the query), DSN at window = 1 and LightGBM with the category
levels and the user history cannot: the part of the variance they must leave
unexplained is sequence_effect² · var(c) (`signals.json` records it).
`truth.parquet` gains `same_category_before` (c) and `sequence_effect` per post.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.data.synth import DEFAULT_POSTS, SynthConfig
from pipeline.data.synth import synth as synth_posts


@dataclass(frozen=True)
class SequenceSynthConfig:
    users: int | None = None  # as the regression synth: exactly U users, or its default
    context: int = 7  # earlier posts (global stream) the planted effect counts
    sequence_effect: float = 0.6  # score per earlier post sharing the top category, centred
    object_effect: float = 0.5  # the regression synth's lucky-object effect, weakened
    word_effect: float = 0.5  # the regression synth's lucky-word effect, weakened


# `--shape` (issue 19: every benchmark on two differently shaped datasets): name -> (config, posts).
# `short`: twice the users, more posts, a shorter and stronger context (3 posts, +1.0 each) and
# weaker per-user image and text effects.
SHAPES: dict[str, tuple[SequenceSynthConfig, int]] = {
    "default": (SequenceSynthConfig(), DEFAULT_POSTS),
    "short": (SequenceSynthConfig(users=24, context=3, sequence_effect=1.0, object_effect=0.3, word_effect=0.3), 1600),
}


def same_category_before(posts: pl.DataFrame, context: int) -> np.ndarray:
    """c for every post, in the order of `posts` sorted by (posted_at, post_id)."""
    cats = posts["category"].to_list()
    return np.array([sum(c == cats[i] for c in cats[max(0, i - context):i]) for i in range(len(cats))], np.float64)


def synth(out: Path, posts: int, image_size: int = 64, seed: int = 0,
          config: SequenceSynthConfig | None = None) -> Path:
    """Write the dataset under `out` (the regression synth's files, re-scored); returns the posts file."""
    cfg = config or SequenceSynthConfig()
    base = SynthConfig(users=cfg.users, object_effect=cfg.object_effect, word_effect=cfg.word_effect)
    path = synth_posts(Path(out), posts, image_size=image_size, seed=seed, config=base)
    df = pl.read_parquet(path).sort("posted_at", "post_id")
    c = same_category_before(df, cfg.context)
    effect = cfg.sequence_effect * (c - c.mean())
    score = df["score"].to_numpy() + effect
    df = df.with_columns(pl.Series("score", score),
                         pl.Series("views", np.round((2.0 ** score - 1) * df["days"].to_numpy())))
    df.write_parquet(path)
    truth = pl.read_parquet(Path(out) / "truth.parquet").join(
        pl.DataFrame({"post_id": df["post_id"], "same_category_before": c, "sequence_effect": effect}), on="post_id")
    truth.write_parquet(Path(out) / "truth.parquet")
    signals = json.loads((Path(out) / "signals.json").read_text())
    signals["task"] = "sequence"
    signals["sequence"] = {**asdict(cfg), "mean_c": round(float(c.mean()), 4), "var_c": round(float(c.var()), 4),
                           "effect_variance": round(float(effect.var()), 4)}
    (Path(out) / "signals.json").write_text(json.dumps(signals, indent=2) + "\n")
    return path
