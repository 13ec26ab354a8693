"""`tokens`: UHAN's text preprocessing, the input of the heads' LSTM text encoders.

Title + description, lowercased, anything but ASCII letters treated as a separator (so
non-English characters and digits disappear), words seen fewer than `min_count` times
in the dataset dropped, then ids in order of appearance, cut or padded to exactly
`length` int32 ids: 0 = padding (at the end), 1 = unknown, 2.. = vocabulary.

The vocabulary is fitted on the dataset being extracted and kept with the store as
`vocab.json`; its hash is part of the extractor id. A rare word of the fitted dataset
is dropped wherever it appears later, so a post's row does not depend on whether it was
tokenised at fit time or afterwards; only words never seen at fit time become 1.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extractors import register
from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FIRST_WORD_ID, PAD_ID, UNK_ID, VOCAB_FILE, FeatureSpec, read_token_vocab

ARTIFACT = VOCAB_FILE  # the contract lives in pipeline/core/specs.py
PAD, UNK = PAD_ID, UNK_ID
_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class TokensConfig:
    length: int = 50  # ids per post: longer texts are cut, shorter ones padded with 0
    min_count: int = 5  # words seen fewer times than this in the fitted dataset are dropped


def words(text: str) -> list[str]:
    """ASCII letter runs, lowercased; everything else separates words."""
    return [w.lower() for w in _WORD.findall(text or "")]


@register
class Tokens(Extractor):
    name = "tokens"
    modality = "text"
    uses_torch = False
    needs_fit = True
    Config = TokensConfig

    def __init__(self, config: TokensConfig) -> None:
        super().__init__(config)
        if config.length < 1 or config.min_count < 1:
            raise PipeError(f"tokens: length and min_count must be at least 1, got {config.length}, {config.min_count}")
        self._ids: dict[str, int] | None = None  # word -> id (2..)
        self._dropped: frozenset[str] = frozenset()  # rare words of the fitted dataset
        self._artifact: bytes | None = None

    # -- fitted state ---------------------------------------------------------------
    def fit(self, texts: list[str]) -> None:
        counts = Counter(w for t in texts for w in words(t))
        kept = sorted((w for w, n in counts.items() if n >= self.config.min_count), key=lambda w: (-counts[w], w))
        dropped = sorted(w for w, n in counts.items() if n < self.config.min_count)
        self._set_state({"words": kept, "dropped": dropped, "min_count": self.config.min_count})

    def _set_state(self, state: dict[str, Any]) -> None:
        self._ids = {w: i + FIRST_WORD_ID for i, w in enumerate(state["words"])}
        self._dropped = frozenset(state["dropped"])
        self._artifact = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()

    def artifacts(self) -> dict[str, bytes]:
        self._require_fitted()
        return {ARTIFACT: self._artifact}  # type: ignore[dict-item]

    def load_artifacts(self, directory: Path) -> None:
        path = Path(directory) / ARTIFACT
        try:
            state = read_token_vocab(path)
        except FileNotFoundError:
            raise PipeError(f"tokens: no {ARTIFACT} in {directory}; extract the dataset with --backbone tokens first") from None
        except (ValueError, AttributeError) as e:
            raise PipeError(f"tokens: {path} is not a tokens vocabulary: {e}") from None
        self._set_state(state)

    def _require_fitted(self) -> None:
        if self._ids is None:
            raise PipeError("tokens: the vocabulary is not fitted; call fit() or load_artifacts() first")

    @property
    def vocabulary(self) -> dict[str, int]:
        self._require_fitted()
        return dict(self._ids)  # type: ignore[arg-type]

    # -- identity and output --------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        self._require_fitted()
        return {**super().identity(), "vocab_sha256": hashlib.sha256(self._artifact).hexdigest()}  # type: ignore[arg-type]

    def spec(self) -> FeatureSpec:
        return FeatureSpec("tokens", (self.config.length,), "int32")

    def transform(self, texts: list[str]) -> np.ndarray:
        self._require_fitted()
        ids, dropped, n = self._ids, self._dropped, self.config.length
        out = np.zeros((len(texts), n), np.int32)  # (B, length), 0 = padding
        for r, t in enumerate(texts):
            row = [ids.get(w, UNK) for w in words(t) if w not in dropped][:n]  # type: ignore[union-attr]
            out[r, : len(row)] = row
        return out
