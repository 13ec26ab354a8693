"""Synthetic posts for the embedding task (DMAN): images showing 1-3 of N object classes,
`labels` = the classes shown, noisy `tags` (`pipe synth OUT --task embedding`).

Why: the embedding heads need data whose answer is known, where the image alone
determines the labels, tags are a noisy view of them, and objects sit in different
regions of the image, so that region attention has something to find.

Design (default `EmbeddingSynthConfig`):
- N = 8 classes, the objects of the regression synth (`pipeline/data/synth.py`: colour,
  shape and texture each), named by a slug ("red-disc", "green-striped-square", ...).
- Each image shows 1, 2 or 3 distinct classes (probabilities 0.4 / 0.35 / 0.25, classes
  uniform), each object 32-45 % of the side, in its own quadrant of a 2 x 2 layout (so a
  pool5 grid of 2 x 2 or more holds each object in different regions), on a muted noisy
  background with two small grey distractor shapes.
- `labels`: the slugs of the classes shown (ground truth).
- `tags`: each shown class's slug with probability `tag_recall` (0.8); with probability
  `tag_false` (0.1) one slug of a class not shown; and 1-3 noise tags drawn from 24 words
  unrelated to the image (camera and mood words, `NOISE_TAGS`).
- `score`: a placeholder the embedding task ignores (the posts contract needs one):
  objects shown + N(0, 0.3). 10 users; times uniform over 2023.

What each head should learn: the `probe` (linear on mean-pooled grids) gets the colours
and textures of the classes, but mean pooling mixes the objects of an image; `dman`
learns one attention map per tag over the regions (a tag's object sits in one quadrant),
its tag outputs predict the tags (recall 0.8, so a tag output is a noisy label) and the
links (posts sharing a label) pull images with a common class together; DMAN_Triplet
(`--ablate tags`) has only the links. Cross-modal search: every class slug is also a tag,
so each label is a query.

Shapes (`--shape`, `SHAPES`): `default` as above; `noisy`: 12 classes (4 objects beyond the
regression synth's), 1-4 per image, tag recall .6, a false slug on 30 % of posts, 2-5 noise tags.

Files written: `OUT/posts.parquet` (image paths relative to it), `OUT/images/*.jpg`,
`OUT/truth.parquet` (per post: classes, their quadrants, tags dropped / added) and
`OUT/signals.json` (the design).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from pipeline.core.errors import PipeError
from pipeline.data.synth import OBJECTS, START, YEAR_S, _shape, _texture

NOISE_TAGS = ("canon", "nikon", "iphone", "bokeh", "hdr", "film", "explore", "photooftheday", "nofilter", "travel",
              "weekend", "mood", "vintage", "minimal", "colorful", "art", "style", "daily", "instagood", "snapshot",
              "macro", "light", "focus", "random")


# Classes beyond the regression synth's 8 objects (`classes` up to 12; the default 8 are unchanged).
CLASS_OBJECTS = OBJECTS + [
    ("purple striped disc", (150, 40, 210), "disc", "hstripes"),
    ("brown square", (140, 80, 30), "square", "solid"),
    ("pink checkered triangle", (250, 150, 190), "triangle", "checker"),
    ("lime striped diamond", (170, 250, 40), "diamond", "vstripes"),
]


@dataclass(frozen=True)
class EmbeddingSynthConfig:
    classes: int = 8  # object classes (at most 12: the regression synth's 8 objects, then CLASS_OBJECTS)
    objects: tuple[float, ...] = (0.4, 0.35, 0.25)  # probability of showing 1, 2, 3 ... objects
    tag_recall: float = 0.8  # probability that a shown class's slug is among the tags
    tag_false: float = 0.1  # probability that a post also carries the slug of a class it does not show
    noise_tags: tuple[int, int] = (1, 3)  # noise tags per post, uniform in [low, high]
    users: int = 10  # users posting (the embedding heads ignore users)


# `pipe synth --task embedding --shape NAME`: (options, posts when --posts is not given). `noisy`
# (issue 19): 12 classes, up to 4 per image, tags with recall .6, a false class slug on 30 % of
# posts and 2-5 noise tags: a tag output is a noisier label and there are more of them.
SHAPES: dict[str, tuple[dict[str, object], int]] = {
    "default": ({}, 1500),
    "noisy": ({"classes": 12, "objects": (0.3, 0.3, 0.25, 0.15), "tag_recall": 0.6, "tag_false": 0.3,
               "noise_tags": (2, 5)}, 600),
}


def class_names(n: int) -> list[str]:
    return [name.replace(" ", "-") for name, *_ in CLASS_OBJECTS[:n]]


def _check(cfg: EmbeddingSynthConfig) -> None:
    if not 1 <= cfg.classes <= len(CLASS_OBJECTS):
        raise PipeError(f"synth --task embedding: classes must be 1..{len(CLASS_OBJECTS)} (got {cfg.classes})")
    if not 1 <= len(cfg.objects) <= min(4, cfg.classes) or abs(sum(cfg.objects) - 1) > 1e-6:
        raise PipeError(f"synth --task embedding: objects {cfg.objects} must be probabilities of showing "
                        f"1..{min(4, cfg.classes)} objects that sum to 1")
    if not (0 <= cfg.tag_recall <= 1 and 0 <= cfg.tag_false <= 1 and 0 <= cfg.noise_tags[0] <= cfg.noise_tags[1]):
        raise PipeError(f"synth --task embedding: bad tag noise {cfg.tag_recall}, {cfg.tag_false}, {cfg.noise_tags}")


def render_scene(shown: list[int], quadrants: list[int], size: int, rng: np.random.Generator) -> Image.Image:
    """Muted noisy background, two grey distractors, one object per (class, quadrant)."""
    base = rng.uniform(80, 160, 3)
    pixels = base + 12 * rng.standard_normal((size, size, 3))  # (S, S, 3)
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(2):
        s, g = rng.uniform(0.06, 0.12) * size, int(rng.uniform(90, 170))
        x, y = rng.uniform(0, size - s, 2)
        _shape(draw, ("disc", "square", "triangle", "diamond")[rng.integers(4)], (x, y, x + s, y + s), (g, g, g))
    half = size // 2
    for obj, q in zip(shown, quadrants):
        _, colour, shape, texture = CLASS_OBJECTS[obj]
        s = max(int(rng.uniform(0.32, 0.45) * size), 4)
        x0, y0 = (q % 2) * half, (q // 2) * half
        x, y = x0 + int(rng.integers(0, max(half - s, 0) + 1)), y0 + int(rng.integers(0, max(half - s, 0) + 1))
        mask = Image.new("L", (s, s), 0)
        _shape(ImageDraw.Draw(mask), shape, (0, 0, s - 1, s - 1), 255)
        im.paste(Image.fromarray(_texture(texture, s, colour)), (x, y), mask)
    return im


def synth(out: Path, posts: int, image_size: int = 64, seed: int = 0, **options: object) -> Path:
    """Write the dataset under `out`; returns the posts file. Same seed -> same files.
    `options`: fields of `EmbeddingSynthConfig` (classes, objects, tag_recall, ...)."""
    if posts < 2 or image_size < 8:
        raise PipeError(f"synth needs at least 2 posts and 8 px images (got {posts} posts, {image_size} px)")
    known = {f.name for f in fields(EmbeddingSynthConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PipeError(f"synth --task embedding: unknown option(s) {unknown}; known: {sorted(known)}")
    cfg = EmbeddingSynthConfig(**options)  # type: ignore[arg-type]
    _check(cfg)
    names, rng = class_names(cfg.classes), np.random.default_rng(seed)
    (Path(out) / "images").mkdir(parents=True, exist_ok=True)
    out = Path(out)
    seconds = np.sort(rng.uniform(0, YEAR_S, posts))
    image_rngs = np.random.SeedSequence([seed, 2]).spawn(posts)
    rows, truth = [], []
    for i in range(posts):
        k = int(rng.choice(len(cfg.objects), p=np.asarray(cfg.objects) / sum(cfg.objects))) + 1
        shown = sorted(rng.choice(cfg.classes, size=k, replace=False).tolist())
        quadrants = rng.choice(4, size=k, replace=False).tolist()
        kept = [c for c in shown if rng.random() < cfg.tag_recall]
        absent = [c for c in range(cfg.classes) if c not in shown]
        false = [int(rng.choice(absent))] if absent and rng.random() < cfg.tag_false else []
        noise = rng.choice(NOISE_TAGS, size=int(rng.integers(cfg.noise_tags[0], cfg.noise_tags[1] + 1)), replace=False)
        tags = [names[c] for c in kept + false] + [str(t) for t in noise]
        img = f"images/e{i:05d}.jpg"
        render_scene(shown, quadrants, image_size, np.random.default_rng(image_rngs[i])).save(out / img, quality=90)
        rows.append(dict(post_id=f"e{i:05d}", user_id=f"u{int(rng.integers(cfg.users)):02d}",
                         t=float(seconds[i]), image=img, tags=tags,
                         labels=[names[c] for c in shown], score=float(k + rng.normal(0, 0.3))))
        truth.append(dict(post_id=f"e{i:05d}", classes=[names[c] for c in shown], quadrants=quadrants,
                          tags_dropped=[names[c] for c in shown if c not in kept],
                          tags_false=[names[c] for c in false]))
    df = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        posted_at=((pl.col("t") + START.timestamp()) * 1e6).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    ).select("post_id", "user_id", "posted_at", "image", "tags", "labels", "score")
    df.write_parquet(out / "posts.parquet")
    pl.DataFrame(truth, infer_schema_length=None).write_parquet(out / "truth.parquet")
    design = {"task": "embedding", "config": asdict(cfg), "posts": posts, "image_size": image_size, "seed": seed,
              "classes": names, "noise_tags": list(NOISE_TAGS)}
    (out / "signals.json").write_text(json.dumps(design, indent=2) + "\n")
    return out / "posts.parquet"
