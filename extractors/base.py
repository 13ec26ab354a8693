"""What every extractor answers, so one runner (and one dask task) drives them all.

An extractor is either an image extractor (the runner decodes images in DataLoader
workers, calls `preprocess` there and `forward` on batches) or a text extractor (the
runner hands it posts rows and calls `transform`). Text extractors that learn a
vocabulary `fit` it once per store and keep it as an artifact; the vocabulary is part of
the extractor id, so a different vocabulary is a different store.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from pipeline.core.specs import FeatureSpec, make_extractor_id


class Extractor(ABC):
    name: ClassVar[str]  # registry name; the extractor id starts with it
    modality: ClassVar[str]  # "image" or "text"
    Config: ClassVar[type]  # a dataclass; every field documented
    uses_torch: ClassVar[bool] = True  # False: numpy only, so extraction ignores the device and never imports torch
    accepts_tensors: ClassVar[bool] = False  # preprocess also takes decoded uint8 tensors (GPU JPEG decoding)
    # the network registry: pipeline.nn's `build(**config)` of the network this extractor runs (None: none),
    # so a store's manifest config rebuilds it (extractors.build_network)
    network: ClassVar[Callable[..., Any] | None] = None
    trainable: ClassVar[bool] = False  # the network has weights that `pipe train --finetune` can train

    def __init__(self, config: Any) -> None:
        self.config = config

    # -- identity -------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Everything that changes the output and nothing that does not (batch, device...)."""
        return {"name": self.name, **asdict(self.config)}

    def id_parts(self) -> list[str]:
        """Readable parts after the name: layer, input size, model."""
        return []

    def extractor_id(self) -> str:
        return make_extractor_id(self.name, self.id_parts(), self.identity())

    @abstractmethod
    def spec(self) -> FeatureSpec: ...

    # -- fitted state (vocabularies); default: none ---------------------------------
    needs_fit: ClassVar[bool] = False

    def fit(self, texts: list[str]) -> None:
        """Learn what the output depends on (e.g. a vocabulary) from the whole dataset."""

    def artifacts(self) -> dict[str, bytes]:
        """Side files to keep with the store (written before any shard)."""
        return {}

    def load_artifacts(self, directory: Path) -> None:
        """Restore fitted state from a store (for resuming and for scoring new posts)."""

    # -- running --------------------------------------------------------------------
    def load(self, device: str) -> None:
        """Build the model once per process (or per dask worker)."""

    def preprocess(self, image: Any) -> Any:
        """Image extractors: PIL RGB image -> tensor, in a DataLoader worker."""
        raise NotImplementedError

    def forward(self, batch: Any) -> np.ndarray:
        """Image extractors: (B, C, H, W) tensor -> (B, *spec.shape) array."""
        raise NotImplementedError

    def transform(self, texts: list[str]) -> np.ndarray:
        """Text extractors: one text per post -> (B, *spec.shape) array."""
        raise NotImplementedError
