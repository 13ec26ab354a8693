"""The command line's conventions: fast start-up, `--json`, `pipe list`, `--version`, `-h`,
`--quiet`/`--verbose` everywhere, flags shown as flags, a default in every `--help`."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import typer.main
from typer.testing import CliRunner

from pipeline.cli import _load_commands, app
from pipeline.cli.app import FORMATS

_load_commands()
runner = CliRunner()
HEAVY = ("torch", "numpy", "polars", "scipy", "sklearn", "h5py", "lightgbm", "pandas")


def pipe(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _best_of(code: str, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def test_cli_module_imports_fast_and_light():
    """Regression guard for `pipe --help` start-up: loading every command module in a fresh
    interpreter costs a small multiple of a bare interpreter (it was ~90x with torch and
    sklearn at top level; ~7x now), and pulls in none of the heavy libraries."""
    load = "import pipeline.cli as c; c._load_commands()"
    out = subprocess.run([sys.executable, "-c", f"{load}; import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert out == "[]", f"heavy modules imported by the CLI at start-up: {out}"
    ratio = _best_of(load) / _best_of("pass")
    assert ratio < 40, f"CLI import takes {ratio:.0f}x a bare interpreter"


def _commands():
    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd
    return list(walk(typer.main.get_command(app), []))


def test_every_command_has_quiet_verbose_and_short_help_and_shows_defaults():
    cmds = _commands()
    assert {"list", "ingest", "extract", "train", "evaluate", "score", "synth", "demo"} <= {p[0] for p, _ in cmds}
    for path, cmd in cmds:
        opts = {o for p in cmd.params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, path
        res = pipe(*path, "-h")
        assert res.exit_code == 0 and "Usage:" in res.output, path
        assert "<bool>" not in res.output, f"{path}: a flag shown with a value"
        for p in cmd.params:
            if p.param_type_name != "option" or p.required or (p.is_flag and not p.secondary_opts and not p.default):
                continue
            assert isinstance(p.show_default, str) or p.default is not None, f"{path} {p.opts}: no default shown"


def test_version_help_and_format_lists():
    from pipeline.data.readers import FORMATS as READ_FORMATS

    res = pipe("--version")
    assert res.exit_code == 0 and res.output.startswith("pipe ")
    assert pipe("-h").exit_code == 0 and "--install-completion" in pipe("--help").output  # typer's own completion
    assert FORMATS == READ_FORMATS
    for cmd in ("ingest", "score"):
        assert " | ".join(FORMATS) in " ".join(pipe(cmd, "-h").output.split()), cmd


@pytest.mark.parametrize("what,keys", [("heads", {"name", "task", "roles", "tune", "paper"}),
                                       ("backbones", {"name", "modality", "output", "about"}),
                                       ("tasks", {"name", "summary"})])
def test_list(what, keys):
    res = runner.invoke(app, ["list", what, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows and all(set(r) == keys for r in rows)
    text = pipe("list", what)
    assert text.exit_code == 0 and len(text.stdout.strip().splitlines()) == len(rows) + 1  # header + one line each
    if what == "heads":
        uhan = next(r for r in rows if r["name"] == "uhan")
        assert uhan["task"] == "regression" and "visual" in uhan["roles"] and "UHAN" in uhan["paper"]
    if what == "backbones":
        assert {"tokens", "vgg16", "tfidf"} <= {r["name"] for r in rows}


def test_set_takes_one_pair():
    from pipeline.core.config import parse_sets
    from pipeline.core.errors import PipeError

    assert parse_sets(["lr=0.001", "ablate=user,visual"]) == {"lr": "0.001", "ablate": "user,visual"}
    with pytest.raises(PipeError, match="one key=value per --set"):
        parse_sets(["lr=0.001 batch_size=64"])
