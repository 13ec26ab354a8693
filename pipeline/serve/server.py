"""Binding and running: loopback by default, a token to bind elsewhere, SIGTERM drains.

uvicorn handles SIGTERM and SIGINT: it stops accepting connections, lets the requests in
flight finish (up to `GRACE_S`), then runs the app's shutdown, which drains the batchers
before the model threads stop. With `workers > 1` each uvicorn worker process loads the
runs itself (the settings travel in an environment variable to `app_from_environment`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from pipeline.core.errors import PipeError
from pipeline.serve.uploads import Limits

ENV = "PIPE_SERVE_SETTINGS"  # JSON settings for worker processes
GRACE_S = 30  # seconds in-flight requests get to finish after SIGTERM


@dataclass
class ServeSettings:
    """Everything `pipe serve` was told."""

    runs: list[str]  # run folders or names
    runs_root: str | None = None  # --runs
    cache: str | None = None  # --cache
    host: str = "127.0.0.1"  # interface to bind
    port: int = 8000  # TCP port
    workers: int = 1  # uvicorn worker processes, each with its own copy of the models
    token: str | None = None  # required as `Authorization: Bearer TOKEN` when set
    device: str = "auto"  # device for heads and extractors
    window_ms: float = 5.0  # micro-batching window
    max_batch: int = 64  # drafts in one forward pass at most
    cache_mb: int = 256  # in-memory feature cache per run
    limits: Limits = field(default_factory=Limits)  # request limits


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(s: ServeSettings) -> None:
    if not s.runs:
        raise PipeError("name at least one run (--run RUN)")
    if not is_loopback(s.host) and not s.token:
        raise PipeError(f"binding to {s.host} exposes the service beyond this machine: give --token TOKEN "
                        "(clients then send Authorization: Bearer TOKEN)")
    if s.workers < 1:
        raise PipeError(f"--workers must be at least 1, got {s.workers}")
    if s.window_ms < 0 or s.max_batch < 1:
        raise PipeError("--batch-window-ms must be >= 0 and --max-batch >= 1")


def build_app(s: ServeSettings, say: Callable[[str], None] = lambda m: None) -> Any:
    from pipeline.serve.app import create_app
    from pipeline.serve.engine import Engine
    from pipeline.serve.uploads import Uploads

    uploads = Uploads(s.cache)
    engines = []
    for ref in s.runs:
        engines.append(Engine(ref, s.runs_root, s.cache, s.device, s.cache_mb * 2**20, uploads, s.limits))
        say(f"loaded run {engines[-1].name} ({engines[-1].run.head}, {engines[-1].run.task})")
    names = [e.name for e in engines]
    if len(set(names)) != len(names):
        raise PipeError(f"two runs share a name: {', '.join(names)}")
    return create_app(engines, s.token, s.limits, s.window_ms, s.max_batch)


def app_from_environment() -> Any:
    """The app of a uvicorn worker process (`--workers N`)."""
    raw = json.loads(os.environ[ENV])
    raw["limits"] = Limits(**raw["limits"])
    return build_app(ServeSettings(**raw))


def serve(s: ServeSettings, say: Callable[[str], None] = lambda m: None) -> None:
    """Load the runs and serve until SIGTERM or SIGINT."""
    import uvicorn

    check(s)
    common = dict(host=s.host, port=s.port, timeout_graceful_shutdown=GRACE_S, log_level="info",
                  limit_concurrency=1024)
    say(f"serving on http://{s.host}:{s.port} ({'token required' if s.token else 'no token'})")
    # uvicorn drains, then raises the signal it caught again with the handler found at start: exit 0 then
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if s.workers > 1:
        os.environ[ENV] = json.dumps(asdict(s))
        uvicorn.run("pipeline.serve.server:app_from_environment", factory=True, workers=s.workers, **common)
    else:
        uvicorn.run(build_app(s, say), **common)
