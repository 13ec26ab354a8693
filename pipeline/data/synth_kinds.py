"""`pipe synth --task KIND`: every kind of synthetic dataset, looked up by name.

Each kind is a generator module of this package (`synth`, `synth_ranking`,
`synth_embedding`, `synth_sequence`) with the options it takes. The CLI looks a kind up
in `KINDS`; a new kind is one entry here, never a branch in the CLI.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.core.errors import PipeError
from pipeline.data.synth import DEFAULT_POSTS

Make = Callable[..., tuple[Path, str]]  # (out, posts, users, {image_size, seed}, text options) -> (file, contents)


def _posts(out: Path, n: int, users: int | None, kw: dict[str, Any], text: dict[str, Any]) -> tuple[Path, str]:
    from pipeline.data.synth import SynthConfig, n_users_for, parse_text_words, synth

    variant = {"text_words": parse_text_words(text["text_words"]) if text.get("text_words") is not None else None,
               "vocab": text.get("vocab"), "text_signal": text.get("text_signal"),
               "modality_signal": text.get("modality_signal")}
    path = synth(out, n, config=SynthConfig(users=users, **{k: v for k, v in variant.items() if v is not None}), **kw)
    return path, f"{n} posts by {n_users_for(n, users)} users"


def _ranking(out: Path, n: int, users: int | None, kw: dict[str, Any], text: dict[str, Any]) -> tuple[Path, str]:
    from pipeline.data.synth_ranking import SHAPES, synth

    cfg = dataclasses.replace(SHAPES[text.get("shape") or "default"][0], **({"users": users} if users is not None else {}))
    return synth(out, n, config=cfg, **kw), "interactions.parquet, follows.parquet"


def _embedding(out: Path, n: int, users: int | None, kw: dict[str, Any], text: dict[str, Any]) -> tuple[Path, str]:
    from pipeline.data.synth_embedding import SHAPES, synth

    return synth(out, n, **kw, **SHAPES[text.get("shape") or "default"][0]), "labels and tags in the posts"


def _sequence(out: Path, n: int, users: int | None, kw: dict[str, Any], text: dict[str, Any]) -> tuple[Path, str]:
    from pipeline.data.synth_sequence import SHAPES, synth

    cfg = dataclasses.replace(SHAPES[text.get("shape") or "default"][0], **({"users": users} if users is not None else {}))
    return synth(out, n, config=cfg, **kw), "scores with a planted temporal context effect"


def _shapes_of(module: str) -> Callable[[], dict[str, int]]:
    """The `--shape` names of a generator module's `SHAPES` -> their posts (imported when asked)."""
    def shapes() -> dict[str, int]:
        return {k: posts for k, (_, posts) in importlib.import_module(module).SHAPES.items()}
    return shapes


@dataclass(frozen=True)
class SynthKind:
    make: Make  # (out, posts, users, {image_size, seed}, text options) -> (posts file, what it holds)
    posts: int  # --posts when none is given
    users: bool = True  # takes --users
    text: bool = False  # takes --text-words / --vocab / --text-signal / --modality-signal
    shapes: Callable[[], dict[str, int]] = dict  # --shape names it takes -> their posts when --posts is not given

    def default_posts(self, shape: str | None) -> int:
        return self.shapes().get(shape or "default", self.posts)


KINDS: dict[str, SynthKind] = {
    "regression": SynthKind(_posts, DEFAULT_POSTS, text=True),  # posts with a score (pipeline/data/synth.py)
    "ranking": SynthKind(_ranking, 480, shapes=_shapes_of("pipeline.data.synth_ranking")),  # tweets, retweets and follows (synth_ranking.py)
    "embedding": SynthKind(_embedding, DEFAULT_POSTS, users=False, shapes=_shapes_of("pipeline.data.synth_embedding")),  # posts with labels and tags (synth_embedding.py)
    "sequence": SynthKind(_sequence, DEFAULT_POSTS, shapes=_shapes_of("pipeline.data.synth_sequence")),  # scores that depend on the posts just before (synth_sequence.py)
}


def synth_kind(name: str, users: int | None, text: dict[str, Any]) -> SynthKind:
    """The kind `name`, refusing options it does not take."""
    if name not in KINDS:
        raise PipeError(f"--task {name!r}: choose {', '.join(KINDS)}")
    kind = KINDS[name]
    shape = text.get("shape")
    if shape is not None and shape not in kind.shapes():
        raise PipeError(f"--shape {shape!r}: --task {name} takes " + (", ".join(kind.shapes()) or "no --shape"))
    given = [f"--{k.replace('_', '-')}" for k, v in text.items() if v is not None and k != "shape"]
    if given and not kind.text:
        raise PipeError(f"{', '.join(given)}: options of the regression synth, not of --task {name}")
    if users is not None and not kind.users:
        raise PipeError(f"--users: an option of the regression and ranking synths, not of --task {name}")
    return kind
