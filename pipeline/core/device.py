"""The one device resolver: `auto`, `cpu`, `cuda`, `cuda:N` -> a device name torch accepts.

Devices are run settings (`--device`, `--set device=`), never part of a model: a model
trained on CUDA is saved on CPU tensors and scores anywhere. torch is imported only when
a device is resolved, so commands that never touch a model start fast.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from pipeline.core.errors import PipeError

DEVICES = ("auto", "cpu", "cuda")  # plus cuda:N


def check_device(name: str) -> str:
    """A valid device name (without looking for hardware); PipeError otherwise."""
    if name not in DEVICES and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise PipeError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def resolve_device(name: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; cuda without a GPU is an error."""
    import torch

    check_device(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipeError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu")
    return name


def is_cuda(device: object) -> bool:
    return str(device).startswith("cuda")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with n torch CPU threads, restoring the previous count afterwards."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
