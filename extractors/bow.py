"""`bow`: bag-of-words term counts of title + description (scikit-learn).

The hybrid-CNN paper's BOW baseline; the vocabulary is learnt on the dataset, capped at
`max_features` terms, and kept with the store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.feature_extraction.text import CountVectorizer

from extractors import register
from extractors._sklearn_text import SklearnTextExtractor, TextVectorConfig


@dataclass
class BowConfig(TextVectorConfig):
    binary: bool = False  # 1/0 presence instead of counts


@register
class Bow(SklearnTextExtractor):
    name = "bow"
    Config = BowConfig
    vectorizer_cls = CountVectorizer

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "binary": self.config.binary}
