"""Shared machinery of the scikit-learn text vectorisers (`tfidf`, `bow`).

The vocabulary is learnt once from the dataset's texts (`fit`), kept with the store as
JSON (no pickle: no file the tool reads may execute code) and restored with
`load_artifacts`, so new posts are transformed with exactly the training vocabulary. The
artifact's hash is part of the extractor id: a different vocabulary is a different store.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extractors.base import Extractor
from pipeline.core.errors import PipeError
from pipeline.core.specs import FeatureSpec

ARTIFACT = "vocabulary.json"


@dataclass
class TextVectorConfig:
    max_features: int = 2000  # vocabulary cap: the most frequent terms across the dataset
    min_df: int = 1  # drop terms that occur in fewer posts than this
    ngram_max: int = 1  # longest n-gram kept: 1 = single words, 2 = words and word pairs
    stop_words: str | None = None  # "english" drops scikit-learn's English stop words


class SklearnTextExtractor(Extractor):
    """A dense float32 row per post from a fitted scikit-learn vectoriser."""

    modality: ClassVar[str] = "text"
    uses_torch: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = True
    vectorizer_cls: ClassVar[type]  # CountVectorizer or TfidfVectorizer

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if config.max_features is not None and config.max_features < 1:
            raise PipeError(f"{self.name}: max_features must be at least 1, got {config.max_features}")
        self._vectorizer: Any = None
        self._artifact: bytes | None = None  # canonical JSON of the fitted state

    # -- what subclasses add --------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        """Constructor arguments that shape the analysis (tokens, weighting)."""
        c = self.config
        return {"ngram_range": (1, c.ngram_max), "stop_words": c.stop_words, "dtype": np.float32}

    def _fitted_state(self, vectorizer: Any) -> dict[str, Any]:
        """Fitted values beyond the vocabulary (e.g. idf), as JSON-ready lists."""
        return {}

    def _restore_state(self, vectorizer: Any, state: dict[str, Any]) -> None:
        """Put `_fitted_state` back on a vectoriser built from the vocabulary."""

    # -- fitted state ---------------------------------------------------------------
    def fit(self, texts: list[str]) -> None:
        c = self.config
        vec = self.vectorizer_cls(max_features=c.max_features, min_df=c.min_df, **self._params())
        try:
            vec.fit(texts)
        except ValueError as e:  # e.g. "empty vocabulary; perhaps the documents only contain stop words"
            raise PipeError(f"{self.name}: cannot learn a vocabulary from {len(texts)} texts: {e}") from e
        state = {"vocabulary": [str(t) for t in vec.get_feature_names_out()], **self._fitted_state(vec)}
        self._set_state(state)

    def _set_state(self, state: dict[str, Any]) -> None:
        vec = self.vectorizer_cls(vocabulary=state["vocabulary"], **self._params())
        self._restore_state(vec, state)
        self._vectorizer = vec
        self._n_terms = len(state["vocabulary"])
        self._artifact = json.dumps(state, sort_keys=True).encode()

    def artifacts(self) -> dict[str, bytes]:
        self._require_fitted()
        return {ARTIFACT: self._artifact}

    def load_artifacts(self, directory: Path) -> None:
        path = Path(directory) / ARTIFACT
        try:
            state = json.loads(path.read_bytes())
            if not isinstance(state.get("vocabulary"), list) or not state["vocabulary"]:
                raise ValueError("empty or malformed vocabulary")
            self._set_state(state)
        except FileNotFoundError:
            raise PipeError(f"{self.name}: no {ARTIFACT} in {directory}; extract the dataset first") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise PipeError(f"{self.name}: {path} is not a {self.name} vocabulary file: {e}") from None

    def _require_fitted(self) -> None:
        if self._vectorizer is None:
            raise PipeError(f"{self.name}: the vocabulary is not fitted; call fit() or load_artifacts() first")

    # -- identity and output ------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        self._require_fitted()
        return {**super().identity(), "vocabulary_sha256": hashlib.sha256(self._artifact).hexdigest()}

    def id_parts(self) -> list[str]:
        self._require_fitted()
        return [str(self._n_terms)]  # vocabulary size, e.g. tfidf-2000-<hash>

    def spec(self) -> FeatureSpec:
        self._require_fitted()
        return FeatureSpec("vector", (self._n_terms,), "float32")

    def transform(self, texts: list[str]) -> np.ndarray:
        self._require_fitted()
        return self._vectorizer.transform(texts).toarray().astype(np.float32, copy=False)  # (B, V)
