"""Ctrl-C and SIGTERM while `pipe train` fits: one line said and recorded, the run marked.

SIGTERM is raised like Ctrl-C while the block runs (as `Interrupted`, a KeyboardInterrupt whose
one line says where it stopped and the best so far: the CLI prints it and exits 130 / 143); an
interrupted or failed run gets `interrupted.json`; `pipe train --resume` continues it.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline.core.errors import Interrupted
from pipeline.head.base import Head
from pipeline.run.rundir import RunWriter


@dataclass
class Fitting:
    """The repeat in progress, as the interruption context sees it."""

    head: Head | None = None  # the head being fitted (--keep-interrupted saves it)
    done: int = 0  # repeats finished
    repeat: int = 0  # the repeat in progress
    last: dict[str, Any] | None = None  # its latest validation evaluation (step, best, best_step), None before one

    def stopped_at(self, how: str, criterion: str, repeats: int) -> str:
        """The one line said and recorded when the run is stopped: where, and the best so far."""
        e = self.last or {}
        where = f"repeat {self.repeat + 1}/{repeats}, " if repeats > 1 else ""
        line = f"interrupted ({how}) at {where}step {e.get('step', 0):,}"
        if e.get("best") is not None:
            return line + f"; best so far: valid {criterion} {e['best']:.4f} at step {e.get('best_step', 0):,}"
        return line + "; no validation evaluation yet"


@contextmanager
def interruption(run: RunWriter, plan: Any, say: Callable[[str], None]) -> Iterator[Fitting]:
    """SIGTERM raised like Ctrl-C while the block runs; an interrupted or failed run is marked
    `interrupted` (with --keep-interrupted, a first repeat's best model so far is kept); the
    fine-tuning image feeds are closed in any case. `plan` is the run's RunPlan (train.py)."""
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM", 143)

    fitting = Fitting()
    try:
        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:  # not the main thread: leave signals alone
            pass
        yield fitting
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM raised as Interrupted by the handler above
        how, code = ("SIGTERM", 143) if isinstance(e, Interrupted) and e.exit_code == 143 else ("Ctrl-C", 130)
        line = fitting.stopped_at(how, plan.task.criterion, plan.options.repeats)
        run.mark_interrupted(line)
        head = fitting.head
        kept = ""
        if plan.options.keep_interrupted and not fitting.done and head is not None and head.is_fitted:
            run.save_model(head)  # the trainer left the best weights so far in the model
            kept = f"; that model is kept in {run.model_dir}"
        raise Interrupted(f"{line}{kept}; run {run.dir} marked interrupted", code) from None
    except Exception as e:
        run.mark_interrupted(f"{type(e).__name__}: {e}")
        raise
    finally:
        if plan.finetune:
            plan.finetune.close()
        try:
            signal.signal(signal.SIGTERM, old_term)
        except ValueError:
            pass
