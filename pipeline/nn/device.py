"""Models on a device: mixed precision, channels_last, batches fitted to GPU memory.

Every helper is the plain path on CPU, so CPU output is unchanged.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipeline.core.device import is_cuda
from pipeline.core.errors import PipeError


# -- model side -----------------------------------------------------------------------
def amp_dtype(device: str) -> torch.dtype | None:
    """bfloat16 where the GPU supports it (fp32's range: no overflow), else float16; None on CPU."""
    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str, enabled: bool = True) -> Any:
    """Mixed precision around a forward pass on CUDA; nothing on CPU (CPU output unchanged)."""
    dtype = amp_dtype(device) if enabled else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def _channels_last(device: str, asked: bool | None) -> bool:
    return is_cuda(device) if asked is None else asked


def prepare_model(model: nn.Module, device: str, channels_last: bool | None = None) -> nn.Module:
    """Eval mode on `device`; channels_last on CUDA (tensor-core convolutions) unless told otherwise."""
    if is_cuda(device):
        torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
    model = model.eval()
    if _channels_last(device, channels_last):
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch on `device` (non-blocking from pinned memory); float16 becomes float32 there."""
    if device.type == "cpu":
        return batch
    out = {}
    for k, t in batch.items():
        t = t.to(device, non_blocking=True)
        out[k] = t.float() if t.dtype == torch.float16 else t
    return out


def images_to_device(batch: torch.Tensor, device: str, channels_last: bool | None = None) -> torch.Tensor:
    """(B, C, H, W) uint8 images -> float on `device` (non-blocking from pinned memory), channels_last on CUDA."""
    x = batch.to(device, non_blocking=True).float()
    if _channels_last(device, channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class FittedBatch:
    """Runs `fn` on chunks of at most `size` rows; on CUDA out-of-memory halves `size`, for this
    batch and every later one, and retries the chunk (start from the requested size)."""

    def __init__(self, size: int) -> None:
        self.size = size  # rows per forward call; only shrinks

    def __call__(self, fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor) -> np.ndarray:
        out, i = [], 0
        while i < len(x):
            chunk = x[i : i + self.size]
            try:
                out.append(fn(chunk))
            except torch.cuda.OutOfMemoryError:
                if self.size == 1:
                    raise PipeError("out of GPU memory at batch size 1: use a smaller --image-size or a larger GPU") from None
                self.size = max(1, self.size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            i += len(chunk)
        return np.concatenate(out)
