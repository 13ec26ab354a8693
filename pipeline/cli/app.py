"""The typer app and its shared options. Command modules add themselves to `app`."""
from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.core.errors import PipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Predict social media popularity from cached deep features.")
console = Console(stderr=True)

CacheOpt = typer.Option(None, "--cache", help="Store root (default $PIPE_CACHE or ./cache).")
RunsOpt = typer.Option(None, "--runs", help="Runs root (default $PIPE_RUNS or ./runs).")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on into one clear message and a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PipeError, KeyError, FileNotFoundError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper

