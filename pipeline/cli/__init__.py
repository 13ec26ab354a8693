"""The command line: the only place that parses arguments.

Each command group lives in its own module and registers on the shared `app`.
"""
from __future__ import annotations

import importlib
import pkgutil

from pipeline.cli.app import app


def _load_commands() -> None:
    import pipeline.cli as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name != "app":
            importlib.import_module(f"pipeline.cli.{m.name}")


def main() -> None:
    _load_commands()
    app()
