"""Tiny posts tables with real image files, for the extraction tests."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from pipeline.core import paths

SCHEMA = {
    "post_id": pl.Utf8, "user_id": pl.Utf8, "posted_at": pl.Datetime("us", "UTC"), "image": pl.Utf8,
    "title": pl.Utf8, "text": pl.Utf8, "tags": pl.List(pl.Utf8), "score": pl.Float64,
}
T0 = datetime(2021, 1, 1, tzinfo=timezone.utc)


def save_image(path: Path, seed: int, size: tuple[int, int] = (40, 32), fmt: str = "JPEG") -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)
    return str(path.resolve())


def post(pid: str, image: str | None, i: int = 0, title: str = "", text: str = "") -> dict:
    return {"post_id": pid, "user_id": f"u{i % 3}", "posted_at": T0 + timedelta(hours=i), "image": image,
            "title": title, "text": text, "tags": [], "score": float(i % 5)}


def write_posts(cache: Path, name: str, rows: list[dict]) -> Path:
    """Writes `<cache>/<name>/posts.parquet` in the posts contract."""
    p = paths.posts_path(name, cache)
    p.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=SCHEMA).write_parquet(p)
    return p


def image_posts(cache: Path, name: str, n: int, start: int = 0, size: tuple[int, int] = (40, 32)) -> list[dict]:
    """n posts with distinct random JPEGs under <cache>/images/."""
    d = cache / "images"
    d.mkdir(parents=True, exist_ok=True)
    return [post(f"p{i:03d}", save_image(d / f"{i}.jpg", i, size), i) for i in range(start, start + n)]


def pipe(*args: str, **kw) -> subprocess.Popen:
    """`pipe ARGS` in a fresh process (its own session, so a kill takes its loader workers too)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", "from pipeline.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def vgg16_features_weights(path: Path, scale: float) -> str:
    """A features-only VGG16 state dict of N(0, scale) tensors: loading it is much quicker
    than a random init in every process, and `scale` keeps pool5 in float16's range."""
    import torch
    import torchvision

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items() if k.startswith("features.")}
    g = torch.Generator().manual_seed(0)
    torch.save({k: torch.randn(s, generator=g) * scale for k, s in shapes.items()}, path)
    return str(path)
