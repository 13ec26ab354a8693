"""The shared trainer's optimizers: `--set optimizer=adam|adagrad|sgd` for every torch head.

Why a choice: the papers differ (UHAN: Adam; AMNL: AdaGrad at .01; DMAN: SGD with
Nesterov momentum at .01), and issue 19 found heads judged at Adam where their paper's
optimizer behaves otherwise. Adam stays the trainer's default, so a config that does not
name one trains exactly as before. `momentum` and `nesterov` apply to `sgd` only.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from pipeline.core.errors import PipeError

OPTIMIZERS = ("adam", "adagrad", "sgd")


def check_optimizer(name: str, momentum: float, nesterov: bool) -> None:
    """A PipeError for a setting torch would reject later (or silently ignore)."""
    if name not in OPTIMIZERS:
        raise PipeError(f"--set optimizer={name}: expected one of {', '.join(OPTIMIZERS)}")
    if momentum < 0:
        raise PipeError(f"--set momentum={momentum}: must be >= 0")
    if nesterov and name == "sgd" and momentum <= 0:
        raise PipeError("--set nesterov=true needs --set momentum > 0 (e.g. 0.9)")


def build_optimizer(params: Iterable[Any], config: Any) -> torch.optim.Optimizer:
    """The optimizer `config` (a TrainConfig) names over `params` (tensors or param groups;
    a group's own `weight_decay` or `lr` wins over the config's)."""
    c = config
    check_optimizer(c.optimizer, c.momentum, c.nesterov)
    if c.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay)
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay)
    return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
