"""Measuring tools of benchmarks/gpu.py: stage timers inside `run_extract`, a GPU utilisation
sampler, decode rates (device vs PIL) and the fine-tuning step rate.

The stage timers wrap pipe's own functions for one run (restored afterwards) instead of
copying the pipeline: what they time is what `pipe extract` runs. On CUDA each timed call
synchronizes the device before and after, so a stage's time is its own and not the queue
of kernels before it; that serializes the pipeline, which is why gpu.py takes its images/s
from a separate, untimed run. A renamed function fails here loudly (getattr), and the CPU
test of gpu.py catches it.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch

STAGES = ("loader_wait", "decode", "resize", "copy", "forward", "write_thread", "other")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class StageTimers:
    """Seconds and calls per stage; `wrap` returns a timed version of a function."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, stage: str, s: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + s
        self.calls[stage] = self.calls.get(stage, 0) + 1

    def wrap(self, stage: str, fn: Callable[..., Any], synced: bool = True) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            if synced:
                sync(self.device)
            t = time.perf_counter()
            out = fn(*args, **kw)
            if synced:
                sync(self.device)
            self.add(stage, time.perf_counter() - t)
            return out
        return timed

    def ms_per_image(self, wall_s: float, images: int) -> dict[str, float | None]:
        """Per stage, ms per image; None for a stage that never ran in this process (e.g. decode on
        the CPU path, which happens in the DataLoader workers and shows as loader_wait).
        forward excludes copy (it calls it); write_thread overlaps the rest; other = wall - main thread."""
        s = dict(self.seconds)
        if "forward" in s:
            s["forward"] -= s.get("copy", 0.0)
        main = sum(s.get(k, 0.0) for k in ("loader_wait", "decode", "resize", "copy", "forward"))
        s["other"] = max(wall_s - main, 0.0)
        calls = {**self.calls, "other": 1}
        return {k: round(1000 * s[k] / images, 3) if calls.get(k) else None for k in STAGES}


def _timed_loader(base: type, timers: StageTimers) -> type:
    class TimedLoader(base):  # type: ignore[misc, valid-type]
        """The DataLoader, with the main process's wait for each batch timed."""

        def __iter__(self) -> Iterator[Any]:
            it = super().__iter__()
            while True:
                t = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    return
                timers.add("loader_wait", time.perf_counter() - t)
                yield b
    return TimedLoader


@contextmanager
def stage_timers(ex: Any, device: str) -> Iterator[StageTimers]:
    """Time pipe's extraction stages for the runs inside the block (one extractor `ex`)."""
    import torch.utils.data as tud

    import extractors._imagenet as imagenet
    import extractors.clip as clip
    from pipeline.extract import local, reader

    t = StageTimers(device)
    targets = [(reader, "_decode_jpegs", "decode", True), (reader, "_resize_on_device", "resize", True),
               (imagenet, "images_to_device", "copy", True), (clip, "images_to_device", "copy", True),
               (local, "write_result", "write_thread", False)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _, _ in targets]
    try:
        for (obj, name, stage, synced), (_, _, fn) in zip(targets, saved):
            setattr(obj, name, t.wrap(stage, fn, synced))
        saved.append((tud, "DataLoader", tud.DataLoader))
        tud.DataLoader = _timed_loader(tud.DataLoader, t)
        ex.forward = t.wrap("forward", ex.forward)  # instance attribute: the mapper calls ex.forward
        yield t
    finally:
        ex.__dict__.pop("forward", None)
        for obj, name, fn in saved:
            setattr(obj, name, fn)


class UtilSampler:
    """GPU utilisation (%) every `every` s in a thread: torch.cuda.utilization (NVML), else nvidia-smi.
    On CPU it samples nothing and reports None. `summary(window)` keeps the samples taken inside a
    (start, end) wall-clock window: the steady state, without the DataLoader's start."""

    def __init__(self, device: str, every: float = 0.1) -> None:
        self.device, self.every = device, every
        self.samples: list[tuple[float, float]] = []  # (time.time(), %)
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        if self.source in (None, "nvml"):
            try:
                v = float(torch.cuda.utilization())
                self.source = "nvml"
                return v
            except Exception:
                self.source = "nvidia-smi" if shutil.which("nvidia-smi") else "none"
        if self.source == "nvidia-smi":
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(torch.cuda.current_device())], capture_output=True, text=True)
            return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            v = self._read()
            if v is not None:
                self.samples.append((time.time(), v))

    def __enter__(self) -> "UtilSampler":
        if self.device.startswith("cuda"):
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        s = [v for t, v in self.samples if window is None or window[0] <= t <= window[1]]
        return {"gpu_util_mean": round(float(np.mean(s)), 1) if s else None,
                "gpu_util_max": round(float(np.max(s)), 1) if s else None,
                "gpu_util_samples": len(s) if self.device.startswith("cuda") else None}


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _rate(n: int, fn: Callable[[], Any], device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return round(n / (time.perf_counter() - t), 1)


def decode_rates(paths: list[str], ex: Any, device: str, batch: int, device_images: int, pil_images: int) -> dict:
    """Images/s of pipe's device decode (reader._decode_jpegs: nvjpeg on CUDA, libjpeg on CPU) and of its
    device decode + resize (reader.decode_batch), against PIL decode (+ the extractor's resize) in one process."""
    from pipeline.extract import reader
    from pipeline.extract.images import decode_image, read_bytes

    blobs = [read_bytes(p) for p in paths[:device_images]]
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    chunks = [datas[i : i + batch] for i in range(0, len(datas), batch)]

    def batch_of(c: list[torch.Tensor]) -> dict[str, Any]:
        return {"ids": [""] * len(c), "payloads": c, "kinds": ["jpeg"] * len(c), "sources": [""] * len(c),
                "failures": []}

    reader.decode_batch(ex, batch_of(chunks[0]), device)  # warm-up (nvjpeg handles, resize kernels)
    dec = _rate(len(datas), lambda: [reader._decode_jpegs(c, device) for c in chunks], device)
    dec_resize = _rate(len(datas), lambda: [reader.decode_batch(ex, batch_of(c), device) for c in chunks], device)
    pil = blobs[:pil_images]
    return {"device": device, "device_images": len(datas), "pil_images": len(pil), "batch": batch,
            "resize_to": ex.config.image_size, "device_decode_images_per_s": dec,
            "device_decode_resize_images_per_s": dec_resize,
            "pil_decode_images_per_s": _rate(len(pil), lambda: [decode_image(b) for b in pil], "cpu"),
            "pil_decode_resize_images_per_s": _rate(len(pil), lambda: [ex.preprocess(decode_image(b)) for b in pil],
                                                    "cpu")}


def finetune_rates(device: str, size: int, batch: int, steps: int) -> dict:
    """Training samples/s of UHAN through VGG16 pool5 with the last conv block trainable, as `pipe train
    --finetune vgg16` builds it (pipeline.run.finetune.FinetuneModel), against a bare forward + backward
    of the same backbone path (FinetuneModel.features: normalisation, autocast, channels_last) on the same
    batch; both with Adam on what they train. The pixels are already on the device as the trainer hands
    them over (float32 0..255), so image decoding (measured elsewhere) is not in either rate."""
    from pipeline.nn.layers import TextEncoder
    from heads.uhan import UHANModel
    from extractors import build_network
    from pipeline.run.finetune import FinetuneModel, blocks

    torch.manual_seed(0)
    net = build_network("vgg16", {"layer": "pool5", "image_size": size, "weights": "random", "seed": 0})
    side, vocab, users = size // 32, 5000, 100
    uhan = UHANModel(512, users + 1, TextEncoder(vocab, 512), [side * side, 512], 1.0, 0.05, ())
    model = FinetuneModel(net, uhan, "visual", 1, device).to(device).train()
    g = torch.Generator().manual_seed(0)
    b = {"visual": torch.randint(0, 256, (batch, 3, size, size), generator=g).float().to(device),
         "user": torch.randint(1, users + 1, (batch,), generator=g).to(device),
         "tokens": torch.randint(2, vocab, (batch, 50), generator=g).to(device),
         "visual_present": torch.ones(batch, dtype=torch.bool, device=device)}
    y = torch.randn(batch, generator=g).to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    weights = sum(p.numel() for p in trainable)
    out: dict[str, Any] = {"backbone": "vgg16-pool5", "image_size": size, "batch": batch, "steps": steps,
                           "trainable": f"last of {len(blocks(net))} blocks ({weights} weights)",
                           "via": "pipeline.run.finetune.FinetuneModel"}
    losses = {"bare": (lambda: model.features(b["visual"])[0].square().mean(), trainable),
              "finetune": (lambda: torch.nn.functional.mse_loss(model(b), y), trainable + list(uhan.parameters()))}
    for name, (loss_fn, params) in losses.items():
        opt = torch.optim.Adam(params, lr=1e-4)

        def step() -> None:
            loss_fn().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()  # warm-up: cudnn autotuning, Adam state
        reset_peak(device)
        out[f"{name}_samples_per_s"] = _rate(steps * batch, lambda: [step() for _ in range(steps)], device)
        out[f"{name}_peak_gpu_mem_gib"] = peak_gib(device)
    out["ratio"] = round(out["finetune_samples_per_s"] / out["bare_samples_per_s"], 3)
    return out
