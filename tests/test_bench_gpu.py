"""benchmarks/gpu.py, the prepared GPU benchmark, in its CPU mode at the smallest sizes: it must run
here, since a GPU lease is too short to debug it, and its JSON must hold every field in both
modes (null where a field has no meaning on CPU), so a GPU session's report can be read blind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

TOP = {"created", "device", "size", "device_name", "torch", "python", "cpus", "torch_threads", "goals", "stages",
       "inputs", "extract", "decode", "train_loader", "finetune", "goals_met", "load_average", "total_s"}
STAGES = {"loader_wait", "decode", "resize", "copy", "forward", "write_thread", "other"}
EXTRACT = {"backbone", "extractor_id", "config", "images", "batch_size", "decode_on", "decode_workers",
           "model_build_s", "pipe_images_per_s", "pipe_images_per_s_incl_warmup", "bare_images_per_s", "ratio",
           "gpu_util_mean", "gpu_util_max", "gpu_util_samples", "peak_gpu_mem_gib", "stages_ms_per_image",
           "stages_run_images_per_s"}
DECODE = {"device", "device_images", "pil_images", "batch", "resize_to", "device_decode_images_per_s",
          "device_decode_resize_images_per_s", "pil_decode_images_per_s", "pil_decode_resize_images_per_s"}
TRAIN = {"posts", "grid", "batch", "dim", "device", "store_samples_per_s", "memory_samples_per_s", "ratio"}
FINETUNE = {"backbone", "image_size", "batch", "steps", "trainable", "via", "bare_samples_per_s",
            "bare_peak_gpu_mem_gib", "finetune_samples_per_s", "finetune_peak_gpu_mem_gib", "ratio"}
GOALS = {"vgg16-pool5-448", "clip-ViT-B-32", "ratio_to_bare", "finetune_ratio"}
GPU_ONLY = {"gpu_util_mean", "gpu_util_max", "gpu_util_samples", "peak_gpu_mem_gib"}


def test_cpu_mode_writes_every_field(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OUT", None)
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--tiny",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r) == TOP and r["device"] == "cpu" and r["size"] == "tiny"
    assert set(r["stages"]) == STAGES
    assert [e["backbone"] for e in r["extract"]] == ["vgg16-pool5-448", "vgg16-fc7-224", "clip-ViT-B-32",
                                                     "inception_v3-299"]
    for e in r["extract"]:
        assert set(e) == EXTRACT, e["backbone"]
        assert set(e["stages_ms_per_image"]) == STAGES
        assert all(e[k] is None for k in GPU_ONLY)  # no GPU: null, never a made-up number
        assert e["pipe_images_per_s"] > 0 and e["bare_images_per_s"] > 0 and e["ratio"] > 0
        st = e["stages_ms_per_image"]
        assert st["forward"] > 0 and st["loader_wait"] > 0 and st["write_thread"] > 0 and st["copy"] is not None
        assert st["decode"] is None and st["resize"] is None  # on CPU both happen in the DataLoader workers
    assert set(r["decode"]) == DECODE and r["decode"]["device_decode_images_per_s"] > 0
    assert set(r["train_loader"]) == TRAIN and r["train_loader"]["grid"] == [196, 512]
    assert r["train_loader"]["store_samples_per_s"] > 0
    assert set(r["finetune"]) == FINETUNE and r["finetune"]["bare_samples_per_s"] > 0
    assert r["finetune"]["finetune_peak_gpu_mem_gib"] is None
    assert set(r["goals_met"]) == GOALS and all(v is None for v in r["goals_met"].values())  # judged on GPUs only
    assert "vgg16-pool5-64" in p.stdout and "fine-tuning" in p.stdout  # the summary names what ran
