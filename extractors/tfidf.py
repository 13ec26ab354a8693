"""`tfidf`: TF-IDF weighted term vectors of title + description (scikit-learn).

The SVR baselines of UHAN and the hybrid-CNN paper use TF-IDF text features; the
vocabulary and idf weights are learnt on the dataset and kept with the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from extractors import register
from extractors._sklearn_text import SklearnTextExtractor, TextVectorConfig


@dataclass
class TfidfConfig(TextVectorConfig):
    sublinear_tf: bool = False  # weight terms by 1 + log(tf) instead of raw counts
    norm: str | None = "l2"  # row normalisation: "l2", "l1" or None


@register
class Tfidf(SklearnTextExtractor):
    name = "tfidf"
    Config = TfidfConfig
    vectorizer_cls = TfidfVectorizer

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "sublinear_tf": self.config.sublinear_tf, "norm": self.config.norm}

    def _fitted_state(self, vectorizer: Any) -> dict[str, Any]:
        return {"idf": [float(x) for x in vectorizer.idf_]}

    def _restore_state(self, vectorizer: Any, state: dict[str, Any]) -> None:
        idf = state.get("idf")
        if not isinstance(idf, list) or len(idf) != len(state["vocabulary"]):
            raise ValueError("idf weights missing or not one per vocabulary term")
        vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
