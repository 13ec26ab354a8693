"""What every head answers, neural or not, so train/evaluate/score treat them alike.

A head declares the feature roles it reads (`roles()`), e.g. UHAN needs a `visual` grid
and `text` tokens. The CLI resolves each role to a store (`--visual`, `--text`, or the
role's paper default). Posts columns (user_id, posted_at, user_* features, categories)
come with every `HeadData`; features come from the stores, by post id.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.train.data import HeadData, Role

__all__ = ["Head", "HeadData", "Role"]


class Head(ABC):
    name: ClassVar[str]  # registry name: `pipe train --head NAME`
    Config: ClassVar[type]  # a dataclass; every field documented

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def roles(self) -> dict[str, Role]:
        """Feature roles this configuration reads (ablations may drop some)."""

    @abstractmethod
    def fit(self, train: HeadData, valid: HeadData) -> "Head": ...

    @abstractmethod
    def predict(self, data: HeadData) -> np.ndarray:
        """One float32 score per post of `data`, in order."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model without pickled code (safetensors-like torch state or text)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "Head": ...
