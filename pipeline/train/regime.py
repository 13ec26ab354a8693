"""Data-aware defaults: the paper's settings at the paper's scale, a small-data regime below it.

Why: the torch heads' defaults are the papers' (UHAN: dim 512, batch 128, evaluate every
64 batches, patience 20, no regularization), sized for 100K+ posts. On a few thousand
posts the same model memorizes its training part (issue 9: training MSE 0.3, validation
at HisAve's level) and a 64-batch evaluation interval is several epochs.

The rule (`regime`, a `TrainConfig` field, resolved once before training by `pipe train`
and `pipe tune`):

- `auto` (default): `small` when the training part has fewer than `SMALL_DATA` (20,000)
  examples, else `paper`;
- `paper`: the config's own defaults; asked for explicitly (`--set regime=paper`), also the
  head's declared `paper_settings`, where a default was changed away from the paper's by a
  measurement (AMNL: fusion, optimizer), so the paper's settings exactly. `auto` above
  SMALL_DATA keeps the measured defaults;
- `small`: the head's `small_data` values (declared next to its Config: smaller dims,
  dropout, weight decay, text regularization) plus a schedule scaled to the training
  part: evaluate about twice an epoch (`eval_every` = epoch/2 batches, 4..64), stop after
  `SMALL_PATIENCE` evaluations without improvement (~6 epochs), at most `SMALL_EPOCHS`
  epochs (`max_steps`).

An explicit `--set key=value` always wins: a key given on the command line is never
changed. The resolved regime and the values it set go to the run's notes and to
`config.json` (`regime`), and the saved config holds the resolved values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from pipeline.core.errors import PipeError
from pipeline.train.loop import TrainConfig

SMALL_DATA = 20_000  # training examples below which `regime=auto` picks the small-data regime
SMALL_PATIENCE = 12  # evaluations without improvement (about 6 epochs at two evaluations per epoch)
SMALL_EPOCHS = 100  # max_steps = this many epochs of the training part
REGIMES = ("auto", "small", "paper")

# Text regularization of the small-data regime, shared by every head with a token text encoder:
# fixed MiniLM token vectors (a learned embedding memorizes a small part: on the wordy synth
# UHAN's test MSE 0.90 learned vs 0.64 frozen MiniLM, w/o text 0.89), dropout on words and
# embeddings, and L2 on the LSTM.
TEXT_SMALL: dict[str, Any] = {"word_vectors": "minilm", "freeze_embeddings": True, "word_dropout": 0.25,
                              "embed_dropout": 0.25, "text_weight_decay": 1e-3}
# Search ranges of the text options (pipe tune), shared the same way.
TEXT_SPACE: dict[str, tuple] = {
    "word_dropout": ("float", 0.0, 0.5),
    "embed_dropout": ("float", 0.0, 0.5),
    "text_weight_decay": ("log", 1e-5, 1e-2),
}
TRAIN_SPACE: dict[str, tuple] = {"lr": ("log", 1e-4, 3e-3), "weight_decay": ("log", 1e-6, 1e-2)}


def small_schedule(n_train: int, batch_size: int) -> dict[str, int]:
    """eval_every, patience and max_steps scaled to a training part of n_train examples."""
    epoch = max(1, math.ceil(n_train / max(batch_size, 1)))  # batches per epoch
    return {"eval_every": min(max(round(epoch / 2), 4), 64), "patience": SMALL_PATIENCE, "max_steps": SMALL_EPOCHS * epoch}


def resolve_regime(head_cls: type, config: Any, n_train: int, explicit: set[str] | frozenset[str] = frozenset()
                   ) -> tuple[Any, dict[str, Any] | None]:
    """(config with the regime applied, what was decided) — (config, None) for a config without `regime`
    (not a TrainConfig). `head_cls.small_data`: the head's declared small-data values (pipeline/head/base.py)."""
    if not isinstance(config, TrainConfig):
        return config, None
    asked = config.regime
    if asked not in REGIMES:
        raise PipeError(f"--set regime={asked}: expected one of {', '.join(REGIMES)}")
    use = "small" if asked == "small" or (asked == "auto" and n_train < SMALL_DATA) else "paper"
    info: dict[str, Any] = {"regime": use, "asked": asked, "train_examples": n_train,
                            "rule": f"small below {SMALL_DATA:,} training examples", "applied": {}}
    if use == "paper":
        names = {f.name for f in dataclasses.fields(config)}
        paper = head_cls.paper_settings if asked == "paper" else {}
        info["applied"] = {k: v for k, v in paper.items() if k in names and k not in explicit}
        return dataclasses.replace(config, regime="paper", **info["applied"]), info
    names = {f.name for f in dataclasses.fields(config)}
    values = dict(head_cls.small_data)
    bs = config.batch_size if "batch_size" in explicit else values.get("batch_size", config.batch_size)
    values.update(small_schedule(n_train, bs))
    applied = {k: v for k, v in values.items() if k in names and k not in explicit}
    info["applied"] = applied
    return dataclasses.replace(config, regime="small", **applied), info


def describe(info: dict[str, Any] | None) -> str | None:
    """The run note for a resolved regime."""
    if info is None:
        return None
    n = info["train_examples"]
    if info["regime"] == "paper":
        paper = ", ".join(f"{k}={v}" for k, v in info["applied"].items())
        return (f"regime paper ({n:,} training examples): the config's defaults"
                + (f", with the paper's {paper}" if paper else ""))
    vals = ", ".join(f"{k}={v}" for k, v in info["applied"].items()) or "nothing (all given with --set)"
    return (f"regime small ({n:,} training examples, {info['rule']}): set {vals}; "
            "--set regime=paper for the paper's settings, --set key=value to change one")
