"""The trainer's resumable state: what `pipe train --resume` needs to continue a fit exactly.

At every validation evaluation the trainer writes one file (atomically): the model's and
the optimizer's state, the step, examples seen, the best evaluation so far with its
weights, the evaluations since it (patience), the curve, and torch's random state (dropout,
user dropout) as it is before the next training step. The batch order needs no state: it is
a pure function of the seed, so a resumed fit draws the same epochs and skips the batches
already trained on. Evaluations consume no randomness, so a fit resumed from step k takes
the same steps an uninterrupted one takes after k.

The file holds tensors, numbers, strings and lists only and is read with
`weights_only=True`: a checkpoint never runs code.
"""
from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import IntegrityError
from pipeline.core.io import atomic_write_bytes


@dataclass
class Checkpoint:
    """One fit's resumable state on disk (`<run>/checkpoint/repeat-K.pt`)."""

    path: Path  # the file; written at every evaluation, read back by a resumed fit

    def save(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the fit never reached its first evaluation."""
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: torch, zip or pickle errors
            raise IntegrityError(f"{self.path}: unreadable checkpoint ({type(e).__name__}); remove it to restart "
                                 "this repeat from its beginning") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """torch's random state (CPU, and every CUDA device once CUDA is in use)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": list(cuda)}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class FitState:
    """The running state of one `Trainer.fit`: the curve, the best evaluation so far, the clocks."""

    crit: Any  # what early stopping watches (a pipeline.train.loop.Criterion)
    sign: float  # -1 when higher is better: `best` is always a loss (lower is better, inf when not finite)
    t0: float = field(default_factory=time.perf_counter)  # when the fit started
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    step: int = 0  # training batches done
    seen: int = 0  # training examples seen
    best: float = float("inf")  # the best evaluation, as a loss
    best_step: int = 0  # the step it was made at
    best_state: dict[str, Any] = field(default_factory=dict)  # the model's weights then
    bad: int = 0  # evaluations since the best
    eval_s: float = 0.0  # seconds spent evaluating
    t_train: float = 0.0  # when training started (after the first evaluation)
    eval_before: float = 0.0  # eval_s then
    terms: tuple[str, ...] = ()  # names of the loss's terms when it returns them (history: train_<name>)

    def start_training(self) -> None:
        self.t_train, self.eval_before = time.perf_counter(), self.eval_s

    def train_seconds(self) -> float:
        """Wall time since training started, evaluations left out (batch waits included)."""
        return time.perf_counter() - self.t_train - (self.eval_s - self.eval_before)

    def saved(self, model: nn.Module, opt: torch.optim.Optimizer, stop: str | None) -> dict[str, Any]:
        """The state a resumed fit starts from (`stop`: why the fit ended, None while it goes on)."""
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": self.step, "seen": self.seen,
                "best": self.best, "best_step": self.best_step, "best_state": self.best_state, "bad": self.bad,
                "history": self.history, "terms": list(self.terms), "stop": stop, "rng": rng_state()}

    def restore(self, saved: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer) -> str | None:
        """Model, optimizer, counters, curve and random state as `saved` left them; why it stopped."""
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        self.step, self.seen, self.bad = saved["step"], saved["seen"], saved["bad"]
        self.best, self.best_step, self.best_state = saved["best"], saved["best_step"], saved["best_state"]
        self.history, self.terms = list(saved["history"]), tuple(saved["terms"])
        set_rng_state(saved["rng"])
        return saved["stop"]

    def keep_if_best(self, value: float, model: nn.Module) -> None:
        if value < self.best:
            self.best, self.best_step, self.bad = value, self.step, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1
