"""`pipe train --logger tensorboard|mlflow`: each validation evaluation also goes to a tracker.

The run calls a `MetricLogger` next to the line it appends to `train_log.jsonl`, with the same
entry, so the tracker holds the same numbers: the validation criterion (`valid_<name>`), the
mean training loss since the last evaluation (`train_loss`, and `train_<term>` for a loss of
named terms) and the best validation value so far (`best`), each at its training step. Both
trackers are optional extras (`pip install 'pipe[tensorboard]'` / `'pipe[mlflow]'`); a
missing package is refused before the run folder is made.

TensorBoard: one event folder per repeat, `<run>/tensorboard/repeat-K` (`tensorboard --logdir
<run>/tensorboard`). MLflow: one MLflow run per `pipe train` named after the run folder, in
the tracking store MLflow's own settings choose (`MLFLOW_TRACKING_URI`, default ./mlruns), the
head's config as its params; with --repeats above 1 the metrics are `repeat-K/<name>`.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipeError

KINDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # --logger value -> the package (and extra) it needs


def scalars(entry: dict[str, Any]) -> dict[str, float]:
    """The metrics of one evaluation entry that a tracker records (None values, not finite, are left out)."""
    return {k: float(v) for k, v in entry.items()
            if (k.startswith(("valid_", "train_")) or k == "best") and isinstance(v, (int, float))
            and not isinstance(v, bool)}


class MetricLogger(ABC):
    """Where evaluations go besides train_log.jsonl."""

    @abstractmethod
    def start(self, run_dir: Path, repeats: int, params: dict[str, Any]) -> None:
        """Called once when the run's folder exists, with the head's resolved config."""

    @abstractmethod
    def log(self, entry: dict[str, Any], repeat: int) -> None:
        """One evaluation entry (its `step` and metrics) of repeat `repeat`."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release (called however the run ends)."""


class TensorBoardLogger(MetricLogger):
    def __init__(self, module: Any) -> None:
        self.SummaryWriter = module.SummaryWriter
        self.root: Path | None = None
        self.writers: dict[int, Any] = {}

    def start(self, run_dir: Path, repeats: int, params: dict[str, Any]) -> None:
        self.root = run_dir / "tensorboard"

    def log(self, entry: dict[str, Any], repeat: int) -> None:
        if repeat not in self.writers:
            self.writers[repeat] = self.SummaryWriter(log_dir=str(self.root / f"repeat-{repeat}"))
        w = self.writers[repeat]
        for k, v in scalars(entry).items():
            w.add_scalar(k, v, global_step=int(entry.get("step", 0)))
        w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


class MLflowLogger(MetricLogger):
    def __init__(self, module: Any) -> None:
        self.mlflow = module
        self.repeats = 1
        self.active = False

    def start(self, run_dir: Path, repeats: int, params: dict[str, Any]) -> None:
        self.repeats = repeats
        self.mlflow.start_run(run_name=run_dir.name)
        self.active = True
        self.mlflow.log_params({k: str(v) for k, v in params.items()})

    def log(self, entry: dict[str, Any], repeat: int) -> None:
        prefix = f"repeat-{repeat}/" if self.repeats > 1 else ""
        self.mlflow.log_metrics({prefix + k: v for k, v in scalars(entry).items()}, step=int(entry.get("step", 0)))

    def close(self) -> None:
        if self.active:
            self.mlflow.end_run()
            self.active = False


def open_logger(kind: str | None) -> MetricLogger | None:
    """The logger `--logger KIND` asks for (None: none); its package is imported here, so a
    missing one fails in one line naming the extra to install."""
    if kind is None or kind == "" or kind == "none":
        return None
    if kind not in KINDS:
        raise PipeError(f"--logger {kind!r}: known loggers are {', '.join(KINDS)}")
    module = "torch.utils.tensorboard" if kind == "tensorboard" else "mlflow"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise PipeError(f"--logger {kind} needs the {KINDS[kind]} package, which is not installed "
                        f"({type(e).__name__}: {e}); install it with: pip install 'pipe[{kind}]'") from None
    return TensorBoardLogger(mod) if kind == "tensorboard" else MLflowLogger(mod)
