"""Feature specs: the only vocabulary `extractors/` and `heads/` share.

Heads never import extractors; both speak in these terms, and the store records them
in each manifest so that train and score can check what they read.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("grid", "vector", "tokens", "pixels")


@dataclass(frozen=True)
class FeatureSpec:
    kind: str  # one of KINDS: grid (regions x dim), vector (dim), tokens (ids), pixels (C,H,W)
    shape: tuple[int, ...]  # shape of one post's row, e.g. (196, 512) for a 448 px pool5 grid
    dtype: str  # numpy dtype name of the stored rows: float16, float32, int32, uint8

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feature kind {self.kind!r}; expected one of {KINDS}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FeatureSpec":
        return cls(kind=d["kind"], shape=tuple(d["shape"]), dtype=d["dtype"])


def config_hash(identity: dict[str, Any], n: int = 8) -> str:
    """Hash of everything that changes an extractor's output (and nothing else)."""
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def make_extractor_id(name: str, parts: list[str], identity: dict[str, Any]) -> str:
    """`vgg16-pool5-448-1a2b3c4d`: registry name, readable parts, then the content hash."""
    return "-".join([name, *[str(p) for p in parts if p not in (None, "")], config_hash(identity)])


# -- the token-vocabulary contract (tokens extractor <-> text heads) --------------------
PAD_ID, UNK_ID = 0, 1  # token ids: padding (trailing) and a word outside the vocabulary
FIRST_WORD_ID = 2  # word i of the vocabulary has id i + FIRST_WORD_ID
VOCAB_FILE = "vocab.json"  # store artifact: {"words": [...], "dropped": [...], "min_count": n}


def read_token_vocab(path: Path) -> dict[str, Any]:
    """A tokens store's vocabulary file, checked; ValueError saying what is wrong."""
    try:
        state = json.loads(Path(path).read_bytes())
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("words"), list) \
            or not isinstance(state.get("dropped", []), list):
        raise ValueError("expected an object with lists 'words' and 'dropped'")
    return state


def token_vocab_size(words: list[str]) -> int:
    """Ids a vocabulary of these words can produce (padding and unknown included)."""
    return len(words) + FIRST_WORD_ID
