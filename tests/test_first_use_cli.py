"""Issue 22, items 8 and 9: `pipe train --json`, global -q/-v before the command, -q silencing
third-party progress bars, and offline default weights failing at once (no download attempt)."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import _load_commands
from pipeline.cli.app import GLOBAL, app, friendly
from pipeline.core.errors import PipeError
from pipeline.nn import weights as nn_weights
from tests._tiny_data import FC, make_dataset

_load_commands()


def _no_dns(monkeypatch):
    def refuse(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_host_resolves_gives_up_after_its_timeout(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(5))
    t = time.monotonic()
    assert not nn_weights.host_resolves("example.org", timeout=0.2)
    assert time.monotonic() - t < 1


def test_offline_imagenet_weights_fail_fast_naming_weights_path(monkeypatch, tmp_path):
    from pipeline.nn import vgg16

    _no_dns(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    t = time.monotonic()
    with pytest.raises(PipeError, match=r"cannot resolve download\.pytorch\.org.*--weights PATH"):
        vgg16.build("pool5", 32, "imagenet", 0)
    assert time.monotonic() - t < 2


@pytest.mark.slow
def test_offline_clip_weights_fail_fast_without_download(monkeypatch, tmp_path):
    import huggingface_hub.constants
    import open_clip

    from pipeline.nn import clip

    _no_dns(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    tried = []
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: tried.append(k) or 1 / 0)
    t = time.monotonic()
    with pytest.raises(PipeError, match=r"cannot resolve huggingface\.co.*--weights PATH"):
        clip.build_model("clip", "ViT-B-32", "openai", 0)
    assert time.monotonic() - t < 2 and tried == []  # no download attempted


def test_quiet_silences_third_party_progress_bars():
    import transformers.utils.logging as tl

    seen = {}
    probe = typer.Typer()

    @probe.command()
    @friendly
    def show(quiet: bool = False) -> None:
        seen["bars"] = tl.is_progress_bar_enabled()
        seen["env"] = (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), os.environ.get("TQDM_DISABLE"))

    assert CliRunner().invoke(probe, ["-q"]).exit_code == 0
    assert seen == {"bars": False, "env": ("1", "1")}
    assert tl.is_progress_bar_enabled() and os.environ.get("TQDM_DISABLE") is None  # undone afterwards
    assert CliRunner().invoke(probe, []).exit_code == 0 and seen["bars"]


def test_global_quiet_and_verbose_before_the_command(tmp_path):
    r = CliRunner().invoke(app, ["-q", "synth", str(tmp_path / "s"), "--posts", "20", "--image-size", "32"])
    assert r.exit_code == 0, r.output
    loud = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--posts", "20", "--image-size", "32"])
    assert loud.exit_code == 0 and len(r.output) < len(loud.output)
    assert CliRunner().invoke(app, ["-v", "list", "heads"]).exit_code == 0 and GLOBAL["verbose"]
    assert CliRunner().invoke(app, ["list", "heads"]).exit_code == 0 and not GLOBAL["verbose"]  # reset each call


def test_train_json_is_one_object_on_stdout(tmp_path):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    make_dataset(cache, n=60, stores=(FC,))
    r = CliRunner().invoke(app, ["train", "--dataset", "tiny", "--head", "svr", "--cache", str(cache), "--runs",
                                 str(runs), "--name", "j", "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert out["run"] == str(runs / "j") and out["name"] == "j" and out["never_improved"] in (False, True)
    assert "mse" in json.dumps(out["metrics"])
