"""Progress for long runs: a rich bar on a terminal, periodic plain lines in logs, or nothing.

A bar full of carriage returns is noise in a CI log or a batch job's output file, so
when the stream is not a terminal the same numbers (done/total, rate, ETA) come as one
line every `interval` seconds instead.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class Progress:
    """`with Progress(total, ...) as p: p.advance(n)`; rate and ETA count from entering the block."""

    def __init__(
        self,
        total: int,
        label: str = "extract",
        unit: str = "images",
        quiet: bool = False,
        interval: float = 10.0,
        stream: IO[str] | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.quiet = quiet
        self.interval = interval  # seconds between plain log lines
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._t0: float | None = None  # set on entering: enter after loading the model
        self._last = 0.0
        self._bar: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> "Progress":
        self._t0 = self._last = time.perf_counter()
        if self.quiet or self.total == 0:
            return self
        console = Console(file=self.stream)
        if console.is_terminal:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(self.unit),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            self._line(f"{self.label}: {self.total} {self.unit} to do")
        return self

    def advance(self, n: int) -> None:
        now = time.perf_counter()
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        elif not self.quiet and self.total and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._line(self.status())

    def rate(self) -> float:
        if self._t0 is None:
            return 0.0
        elapsed = time.perf_counter() - self._t0
        return self.done / elapsed if elapsed > 0 else 0.0

    def status(self) -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else None
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.1f} {self.unit}/s, ETA {_clock(eta)}"

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
