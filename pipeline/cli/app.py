"""The typer app and its shared options. Command modules add themselves to `app`.

Start-up matters (`pipe --help` should answer at once): command modules import only
typer, rich and `pipeline.core` at top level; numpy, polars, torch, sklearn and the
stores are imported inside the commands that use them.

Conventions every command shares: `-h`/`--help`, `-q`/`--quiet` and `-v`/`--verbose`
(added by `friendly`), status on stderr, results on stdout (`--json` where a summary is
printed), plain help with flags shown as flags.
"""
from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.core.errors import Interrupted, PipeError
from pipeline.core.terminal import SafeConsole

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT,
                  help="Predict social media popularity from cached deep features.")
console = SafeConsole(stderr=True)  # status and errors; results go to stdout (control characters shown, never obeyed)

CacheOpt = typer.Option(None, "--cache", help="Store root.", show_default="$PIPE_CACHE or ./cache")
RunsOpt = typer.Option(None, "--runs", help="Runs root.", show_default="$PIPE_RUNS or ./runs")
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout (no table).")
FORMATS = ("auto", "generic", "parquet", "csv", "jsonl", "smpd")  # `--format` of ingest and score
FORMAT_HELP = ("Posts file format: " + " | ".join(FORMATS) + " (auto: from the extension; a folder with "
               "*_img_filepath.txt is SMPD).")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"pipe {version('pipe')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_version, is_eager=True),
) -> None:
    """Predict social media popularity from cached deep features."""


def results_console() -> Console:
    """stdout for results. Piped or redirected, lines are never cut, so ids stay whole for grep and cut."""
    out = SafeConsole(highlight=False, soft_wrap=True)
    return out if out.is_terminal else SafeConsole(highlight=False, soft_wrap=True, width=100_000)


def print_json(obj: Any) -> None:
    """Strict JSON (NaN -> null) on stdout, one document."""
    from pipeline.core.io import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), indent=2, default=str) + "\n")


_QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
    False, "--quiet", "-q", help="No progress or status messages (results and errors still print)."))
_VERBOSE = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
    False, "--verbose", "-v", help="Log messages, and a full traceback with every error."))


_OS_HINTS = {errno.ENOSPC: "free some space and run again", errno.EDQUOT: "free some space and run again",
             errno.EROFS: "the file system is read-only: point --cache/--runs/--out elsewhere",
             errno.EACCES: "no permission: point --cache/--runs/--out elsewhere or fix the folder's rights",
             errno.EPERM: "not permitted: point --cache/--runs/--out elsewhere",
             errno.ENAMETOOLONG: "a file name too long for the file system"}


def os_error_message(e: OSError) -> str:
    """One line: the path, the cause and what to do, e.g. `cache/d/posts.parquet: No space left
    on device (ENOSPC); free some space and run again`. Nothing half-written is left looking
    finished: every output is written to a temp file and renamed (pipeline/core/io.py)."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "(path not known)"
    code = errno.errorcode.get(e.errno or 0, "")
    cause = (e.strerror or str(e)) + (f" ({code})" if code else "")
    hint = _OS_HINTS.get(e.errno or 0)
    return f"{where}: {cause}" + (f"; {hint}" if hint else "")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on (PipeError, and OSError: a full disk, a read-only cache)
    into one clear message and a non-zero exit, and give
    the command `--quiet` and `--verbose` (passed on when `fn` takes a parameter of that name)."""
    sig = inspect.signature(fn)
    passes = {p for p in ("quiet", "verbose") if p in sig.parameters}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet, verbose = bool(kwargs.pop("quiet", False)), bool(kwargs.pop("verbose", False))
        kwargs.update({k: v for k, v in (("quiet", quiet), ("verbose", verbose)) if k in passes})
        was_quiet, console.quiet = console.quiet, quiet and not verbose
        if verbose:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during a run (Interrupted): one line, 130 / 143
            console.quiet = False
            console.print(str(e) if isinstance(e, Interrupted) else "interrupted", highlight=False, markup=False,
                          soft_wrap=True)
            raise typer.Exit(e.exit_code if isinstance(e, Interrupted) else 130) from None
        except (PipeError, FileNotFoundError) as e:  # a KeyError is a bug: it keeps its traceback
            console.quiet = False
            if verbose:
                console.print_exception()
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None
        except OSError as e:  # a full disk, a read-only cache, a denied folder: the path and the cause, exit 1
            console.quiet = False
            if verbose:
                console.print_exception()
            console.print(f"[bold red]error:[/] {escape(os_error_message(e))}", highlight=False, markup=True,
                          soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            console.quiet = was_quiet

    params = [p for p in sig.parameters.values() if p.name not in ("quiet", "verbose")]
    wrapper.__signature__ = sig.replace(parameters=[*params, _QUIET, _VERBOSE])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, "quiet": bool, "verbose": bool}
    return wrapper

