#!/usr/bin/env python3
"""Set-up and entry points that need nothing but Python 3.11: `python3 tasks.py demo|test|bench`.

Creates `.venv` on first use (torch is taken from the pinned local wheels), installs the
project in editable mode with its test extras, then runs the demo, the tests or the
benchmarks inside it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def ensure_env() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    if not PY.exists():
        run(sys.executable, "-m", "venv", VENV)
    run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "-q", "-e", ".[test]")
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "bench", "env"}:
        print(__doc__)
        return 2
    ensure_env()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    task, rest = argv[0], argv[1:]
    if task == "demo":
        run(VENV / "bin" / "pipe", "demo", *rest, env=env)
    elif task == "test":
        run(PY, "-m", "pytest", "-q", *rest, env=env)
    elif task == "bench":
        for script in sorted((ROOT / "benchmarks").glob("[!_]*.py")):  # _*.py: helpers of a benchmark
            run(PY, script, *rest, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
