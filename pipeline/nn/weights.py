"""Weights and weight files shared by the backbones (and glove's file hash): one wording of every failure.

`--weights` is a pretrained name the backbone's own library loads (torchvision weights,
open_clip tags), `random` (seeded, for tests and offline demos) or a PATH to a state
dict saved with `torch.save(model.state_dict())`, read with `weights_only=True` so the
file cannot run code. The fingerprint that goes into the extractor id is the pretrained
name, `random-<seed>`, or the file's sha256 (content, not location).
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import torch

from pipeline.core.errors import PipeError
from pipeline.core.io import sha256_file


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a (possibly large) file, hashed once per process while it is unchanged."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def weights_file(name: str, weights: str, named: str) -> Path:
    """The state-dict file `weights` names, or an error listing what else it could be."""
    p = Path(weights).expanduser()
    if not p.is_file():
        raise PipeError(f"{name}: --weights {weights!r} is not {named}, random or an existing state-dict file")
    return p


def file_fingerprint(path: Path) -> str:
    return "sha256:" + file_sha256(path)


def random_fingerprint(seed: int) -> str:
    return f"random-{seed}"


def read_state_dict(name: str, path: Path) -> dict[str, Any]:
    """A state dict from `path`, refusing anything that would need to run code to load."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PipeError(f"{name}: cannot read {path} as a state dict: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise PipeError(f"{name}: {path} holds a {type(state).__name__}, not a state dict (save model.state_dict())")
    return state


def download_failed(name: str, what: str, error: BaseException) -> PipeError:
    """The error for pretrained weights that cannot be had (typically: no internet)."""
    return PipeError(
        f"{name}: could not load the {what} weights ({type(error).__name__}: {error}). Without internet, "
        "pass --weights PATH (a state dict saved with torch.save(model.state_dict())) or --weights random"
    )


RESOLVE_TIMEOUT_S = 1.5  # how long the download host's name may take to resolve before we call it offline


def host_resolves(host: str, timeout: float = RESOLVE_TIMEOUT_S) -> bool:
    """True when `host`'s name resolves within `timeout` seconds (getaddrinfo has no timeout
    of its own, so it runs in a daemon thread that may outlive the answer)."""
    import socket
    import threading

    answer: list[bool] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(timeout)
    return bool(answer and answer[0])


def require_host(name: str, what: str, url: str) -> None:
    """Refuse at once (no download attempt) when the host serving `url` cannot be resolved:
    offline, a download would otherwise retry for a minute before failing."""
    from urllib.parse import urlparse

    host = urlparse(url if "://" in url else f"https://{url}").hostname or url
    if not host_resolves(host):
        raise download_failed(name, what, ConnectionError(f"cannot resolve {host}: no network?"))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
