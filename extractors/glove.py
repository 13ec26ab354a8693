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
from pipeline.nn.word_vectors import glove_dimension, read_glove
from pipeline.nn.weights import file_sha256

WORD_RE = re.compile(r"\w+(?:'\w+)?")  # words and contractions ("don't"); punctuation dropped


@dataclass
class GloveConfig:
    path: str | None = None  # GloVe text file, one "word v1 ... vd" line per word (required)


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
        return glove_dimension(self._path())

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
            self._index, self._vectors = read_glove(self._path())

    def transform(self, texts: list[str]) -> np.ndarray:
        self.load("cpu")
        out = np.zeros((len(texts), self._vectors.shape[1]), dtype=np.float32)  # (B, dim)
        for i, text in enumerate(texts):
            rows = [j for w in WORD_RE.findall((text or "").lower()) if (j := self._index.get(w)) is not None]
            if rows:  # posts with no known word stay zeros
                out[i] = self._vectors[rows].mean(axis=0)
        return out
