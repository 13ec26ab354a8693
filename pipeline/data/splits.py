"""Train/valid/test splits, chronological by default, recorded in every run.

Why chronological: a model is used on posts newer than those it learned from, so a random
split would let it peek at the future (trends, a user's later posts). Posts are ordered
by (posted_at, post_id) so ties break the same way on every machine.

- default / `0.7,0.1,0.2`: the first 70% by time train, the next 10% valid, the last 20% test.
- `0.8,0.1,0.1`: any chronological fractions (as DSN did).
- `uhan` or `uhan:SEED`: the first 70% by time train; the rest shuffled with SEED
  (default 0), one third valid and two thirds test (as UHAN did).
- `random` or `random:SEED`: 70/10/20 at random (the embedding task's default: DMAN's
  datasets have no time order that matters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.errors import PipeError

PARTS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class SplitSpec:
    kind: str  # "chrono": time blocks; "uhan": time block for train, random valid/test after it; "random"
    fractions: tuple[float, float, float]  # train, valid, test shares of the posts (sum to 1)
    seed: int = 0  # shuffles the post-train part for kind "uhan"; unused by "chrono"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "fractions": list(self.fractions), "seed": self.seed}

    @property
    def text(self) -> str:
        if self.kind in ("uhan", "random"):
            return f"{self.kind}:{self.seed}"
        return ",".join(f"{f:g}" for f in self.fractions)


def parse_split(text: str | None, default: str | None = None) -> SplitSpec:
    """`None` -> `default` or 0.7/0.1/0.2 chronological; `a,b,c` fractions; `uhan[:SEED]`; `random[:SEED]`."""
    if text is None or not text.strip():
        if default:
            return parse_split(default)
        return SplitSpec("chrono", DEFAULT_FRACTIONS)
    t = text.strip().lower()
    for kind in ("uhan", "random"):
        if t == kind or t.startswith(kind + ":"):
            seed_txt = t.partition(":")[2] or "0"
            try:
                seed = int(seed_txt)
            except ValueError:
                raise PipeError(f"--split {text!r}: the seed after '{kind}:' must be an integer") from None
            return SplitSpec(kind, DEFAULT_FRACTIONS, seed)
    parts = t.split(",")
    try:
        fr = tuple(float(p) for p in parts)
    except ValueError:
        fr = ()
    if len(fr) != 3 or any(f <= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise PipeError(
            f"--split {text!r}: expected three positive fractions that sum to 1 "
            "(train,valid,test, e.g. 0.8,0.1,0.1), 'uhan' / 'uhan:SEED' or 'random' / 'random:SEED'"
        )
    return SplitSpec("chrono", fr)  # type: ignore[arg-type]


def _sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    n_train = int(round(n * fractions[0]))
    n_valid = int(round(n * fractions[1]))
    return n_train, min(n_valid, n - n_train)


def part_labels(n: int, spec: SplitSpec, what: str = "labelled posts") -> np.ndarray:
    """train / valid / test for n examples already in time order."""
    n_train, n_valid = _sizes(n, spec.fractions)
    if n_train == 0 or n_valid == 0 or n - n_train - n_valid == 0:
        raise PipeError(
            f"{n} {what} are too few for the split {spec.text}: "
            f"train {n_train}, valid {n_valid}, test {n - n_train - n_valid}; every part needs at least one"
        )
    labels = np.empty(n, dtype=object)
    if spec.kind == "chrono":
        labels[:n_train] = "train"
        labels[n_train : n_train + n_valid] = "valid"
        labels[n_train + n_valid :] = "test"
    elif spec.kind == "uhan":
        labels[:n_train] = "train"
        rest = n - n_train
        n_valid = max(1, min(rest - 1, int(round(rest / 3))))  # one third of the rest, at least one each
        perm = np.random.default_rng(spec.seed).permutation(rest)
        tail = np.full(rest, "test", dtype=object)
        tail[perm[:n_valid]] = "valid"
        labels[n_train:] = tail
    elif spec.kind == "random":
        perm = np.random.default_rng(spec.seed).permutation(n)
        labels[perm[:n_train]] = "train"
        labels[perm[n_train : n_train + n_valid]] = "valid"
        labels[perm[n_train + n_valid :]] = "test"
    else:
        raise PipeError(f"unknown split kind {spec.kind!r}")
    return labels


def assign_split(posts: pl.DataFrame, spec: SplitSpec, order: tuple[str, ...] = ("posted_at", "post_id"),
                 what: str = "labelled posts") -> pl.DataFrame:
    """The rows in time order with a `split` column (train | valid | test)."""
    ordered = posts.sort(list(order))
    labels = part_labels(ordered.height, spec, what)
    return ordered.with_columns(pl.Series("split", labels.tolist(), dtype=pl.Utf8))


def split_summary(split_rows: pl.DataFrame, column: str = "posted_at", noun: str = "posts") -> dict[str, Any]:
    """Counts and time ranges per part, for config.json."""
    out: dict[str, Any] = {}
    for part in PARTS:
        p = split_rows.filter(pl.col("split") == part)
        out[part] = {
            noun: p.height,
            "first": None if p.height == 0 else str(p[column].min()),
            "last": None if p.height == 0 else str(p[column].max()),
        }
    return out
