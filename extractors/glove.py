"""`glove`: the mean GloVe word vector of title + description.

The hybrid-CNN paper's GloVe baseline (mean of the tweet's word vectors, GloVe Twitter
100-d) and UHAN's SVR text features. GloVe vectors cannot be downloaded here, so the user
supplies the text file (`word v1 ... vd` per line, as published at
https://nlp.stanford.edu/projects/glove/); its sha256 is in the extractor id, so another
file is another store.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extractors import register
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec
from pipeline.nn.weights import file_sha256

WORD_RE = re.compile(r"\w+(?:'\w+)?")  # words and contractions ("don't"); punctuation dropped


@dataclass
class GloveConfig:
    path: str | None = None  # GloVe text file, one "word v1 ... vd" line per word (required)


def _split(line: str) -> list[str]:
    return line.rstrip("\n").rstrip(" ").split(" ")


def _dimension(path: Path) -> int:
    """Vector length from the first line (a word2vec-style "count dim" header is allowed)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        parts = _split(f.readline())
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1])
    if len(parts) < 2:
        raise PipeError(f"glove: {path} line 1 is not 'word v1 ... vd'; is this a GloVe text file?")
    return len(parts) - 1


def _read_vectors(path: Path, dim: int) -> tuple[dict[str, int], np.ndarray]:
    """Word -> row and the (V, dim) float32 matrix; words are lowercased, first one wins
    (GloVe files are sorted by frequency, so "the" beats "The")."""
    index: dict[str, int] = {}
    rows: list[np.ndarray] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = _split(line)
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec-style header
            if len(parts) < dim + 1:
                if not line.strip():
                    continue
                raise PipeError(f"glove: {path} line {lineno} has {len(parts) - 1} values, expected {dim}")
            word = " ".join(parts[:-dim]).lower()  # a few GloVe words contain spaces
            if word in index:
                continue
            try:
                rows.append(np.asarray(parts[-dim:], dtype=np.float32))
            except ValueError:
                raise PipeError(f"glove: {path} line {lineno} holds a value that is not a number") from None
            index[word] = len(rows) - 1
    if not rows:
        raise PipeError(f"glove: {path} holds no word vectors")
    return index, np.stack(rows)  # (V, dim)


@register
class Glove(Extractor):
    name = "glove"
    modality = "text"
    Config = GloveConfig

    def __init__(self, config: GloveConfig) -> None:
        super().__init__(config)
        self._index: dict[str, int] | None = None
        self._vectors: np.ndarray | None = None

    def _path(self) -> Path:
        if not self.config.path:
            raise PipeError(
                "glove needs a GloVe text file: --set path=FILE, e.g. glove.twitter.27B.100d.txt "
                "from https://nlp.stanford.edu/projects/glove/"
            )
        path = Path(self.config.path).expanduser()
        if not path.is_file():
            raise PipeError(f"glove: no such file {path}")
        return path

    def dim(self) -> int:
        return _dimension(self._path())

    def identity(self) -> dict[str, Any]:
        # The file's content, not its location, decides the output.
        return {"name": self.name, "sha256": file_sha256(self._path()),
                "dim": self.dim(), "lowercase": True, "pool": "mean"}

    def id_parts(self) -> list[str]:
        return [f"{self.dim()}d"]

    def spec(self) -> FeatureSpec:
        return FeatureSpec("vector", (self.dim(),), "float32")

    def load(self, device: str) -> None:
        if self._vectors is None:
            path = self._path()
            self._index, self._vectors = _read_vectors(path, _dimension(path))

    def transform(self, texts: list[str]) -> np.ndarray:
        self.load("cpu")
        out = np.zeros((len(texts), self._vectors.shape[1]), dtype=np.float32)  # (B, dim)
        for i, text in enumerate(texts):
            rows = [j for w in WORD_RE.findall((text or "").lower()) if (j := self._index.get(w)) is not None]
            if rows:  # posts with no known word stay zeros
                out[i] = self._vectors[rows].mean(axis=0)
        return out
