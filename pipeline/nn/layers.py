"""Encoders and vocabularies shared by the torch heads (UHAN, DualAtt, DMF and later ones).

- `TextEncoder`: word embedding W_W (eq 1) and an LSTM (eqs 2-6) over token-id rows of a
  `tokens` store (0 = padding, 1 = unknown word; padding trails the words).
- `UserVocab` / `UserEncoder`: user ids fitted on the training part only, index 0 = a user
  never seen in training; the embedding W_U (eq 7) learns index 0 as the unknown user by
  replacing a small random fraction of training users with it (`user_dropout`).
- `masked_mean`, `masked_softmax`: pooling and attention that ignore padding and missing
  modalities.
- `TextConfig`: the text-regularization options every head with a token text encoder
  inherits (issue 9: a learned embedding + LSTM memorizes the filler-word combinations of
  a small training part); all off by default, which is the paper's encoder exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import PipeError, StoreError
from pipeline.core.specs import PAD_ID, UNK_ID, VOCAB_FILE, read_token_vocab, token_vocab_size
from pipeline.store import FeatureStore

PAD, UNK = PAD_ID, UNK_ID  # the token contract of pipeline/core/specs.py


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of x (B, L, D) where mask (B, L) is true; zeros for an all-false row."""
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to mask; an all-false row gets all-zero weights."""
    s = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1)
    return torch.nan_to_num(w, nan=0.0) * mask  # all -inf rows give NaN: make them zero


def attend(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights (B, L) over values (B, L, D) and the attended vector (B, D)."""
    alpha = masked_softmax(scores, mask)  # (B, L)
    return torch.bmm(alpha.unsqueeze(1), values).squeeze(1), alpha  # (B, D)


@dataclass
class TextConfig:
    """Text-encoder options (`--set key=value`); the defaults are the paper's encoder."""

    word_dropout: float = 0.0  # share of words read as the unknown word in training (whole tokens, as at scoring)
    embed_dropout: float = 0.0  # dropout on the word embeddings in training
    text_weight_decay: float | None = None  # Adam L2 on the embedding and LSTM; None: the head's weight_decay
    max_vocab: int | None = None  # keep the N most frequent training words, the rest read as unknown; None: all
    word_vectors: str | None = None  # initial embedding: "minilm" (packaged model's token embeddings) or a GloVe file
    freeze_embeddings: bool = False  # keep the word embedding fixed (meant with word_vectors)


class TextEncoder(nn.Module):
    """Embedding (W_W) + single-layer LSTM; returns hidden states H (B, L, dim) and the word mask.

    `known`: the store ids seen in the training part. Only they get embedding rows; any
    other id (a word of the store's vocabulary that no training post used, or an id beyond
    it) is read as unknown (1), whose row starts at zero, so an untrained random vector
    never reaches the LSTM. Trailing columns that are padding in every row of the batch
    are cut before the LSTM: an exact saving (they only feed masked positions).
    `embed_dim` (default `dim`) is the embedding width, e.g. of fixed word vectors
    (`init`: one row per known id, in order); `word_dropout` / `embed_dropout` act in
    training only (see TextConfig).
    """

    def __init__(self, vocab_size: int, dim: int, known: Sequence[int] | None = None, embed_dim: int | None = None,
                 init: np.ndarray | None = None, freeze: bool = False, word_dropout: float = 0.0,
                 embed_dropout: float = 0.0) -> None:
        super().__init__()
        embed_dim = embed_dim or dim
        self.word_dropout = word_dropout
        self.embed_drop = nn.Dropout(embed_dropout)
        known = sorted({int(k) for k in (known if known is not None else range(UNK + 1, vocab_size))} - {PAD, UNK})
        rows = torch.full((vocab_size,), UNK, dtype=torch.long)
        rows[PAD] = PAD
        rows[torch.tensor(known, dtype=torch.long)] = torch.arange(UNK + 1, UNK + 1 + len(known))
        self.register_buffer("rows", rows, persistent=False)  # store id -> embedding row, rebuilt from meta
        self.W_W = nn.Embedding(UNK + 1 + len(known), embed_dim, padding_idx=PAD)
        with torch.no_grad():
            self.W_W.weight[UNK].zero_()
            if init is not None:
                self.W_W.weight[UNK + 1:] = torch.as_tensor(init, dtype=torch.float32)
        self.W_W.weight.requires_grad_(not freeze)
        self.lstm = nn.LSTM(embed_dim, dim, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = tokens.long().clamp(min=0)
        tokens = torch.where(tokens < len(self.rows), tokens, UNK)  # beyond the vocabulary: unknown
        tokens = self.rows[tokens]  # (B, L) embedding rows
        if self.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > UNK)
            tokens = tokens.masked_fill(drop, UNK)
        mask = tokens != PAD  # (B, L)
        cols = mask.any(0).nonzero()
        keep = int(cols.max()) + 1 if len(cols) else 1
        tokens, mask = tokens[:, :keep], mask[:, :keep]  # (B, L') with L' <= L
        h, _ = self.lstm(self.embed_drop(self.W_W(tokens)))  # (B, L', dim)
        return h, mask


def text_vocab_size(store: FeatureStore, train_rows: np.ndarray) -> int:
    """Ids a tokens store can hold: from its vocabulary artifact (the contract of
    pipeline/core/specs.py), at least the training max id + 1; without the artifact, the
    training max id + 1. Larger ids met later are read as unknown."""
    size = max(int(train_rows.max(initial=UNK)) + 1, UNK + 1)
    try:
        path = store.artifact_path(VOCAB_FILE)
    except StoreError:
        return size
    try:
        words = read_token_vocab(path)["words"]
    except ValueError as e:
        raise PipeError(f"{path} is not a tokens vocabulary: {e}") from None
    return max(size, token_vocab_size(words))


def known_tokens(train_rows: np.ndarray, max_vocab: int | None = None) -> list[int]:
    """Store ids used by the training part (padding and unknown excluded); with `max_vocab`,
    the most frequent ones (ties: the smaller id), sorted."""
    ids, counts = np.unique(train_rows, return_counts=True)
    keep = ids > UNK
    ids, counts = ids[keep], counts[keep]
    if max_vocab is not None and len(ids) > max_vocab:
        ids = np.sort(ids[np.lexsort((ids, -counts))[:max(max_vocab, 0)]])
    return [int(i) for i in ids]


class UserVocab:
    """User id -> embedding row, fitted on the training part; row 0 stands for any unseen user."""

    def __init__(self, users: Sequence[str]) -> None:
        self.users = list(users)
        self.index = {u: i + 1 for i, u in enumerate(self.users)}

    @classmethod
    def fit(cls, user_ids: Sequence[Any]) -> "UserVocab":
        return cls(sorted({str(u) for u in user_ids if u is not None}))

    def __len__(self) -> int:
        """Embedding rows: the known users plus the unknown row 0."""
        return len(self.users) + 1

    def encode(self, user_ids: Sequence[Any]) -> np.ndarray:
        return np.fromiter((self.index.get(str(u), 0) if u is not None else 0 for u in user_ids), np.int64, len(user_ids))

    def to_json(self) -> list[str]:
        return self.users

    @classmethod
    def from_json(cls, users: list[str]) -> "UserVocab":
        return cls(users)


class UserEncoder(nn.Module):
    """User embedding W_U (eq 7); in training, a `dropout` fraction of users is replaced by row 0.

    Why a trained unknown row rather than the mean embedding: the user enters UHAN through
    products of tanh projections, so an average embedding is not an average user's
    behaviour; a row trained on random posts of every user is, and it is used the same
    way at training and scoring time.
    """

    def __init__(self, n_users: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.W_U = nn.Embedding(n_users, dim)
        self.dropout = dropout

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        users = users.long()
        if self.training and self.dropout > 0:
            drop = torch.rand(users.shape, device=users.device) < self.dropout
            users = users.masked_fill(drop, 0)
        return self.W_U(users)  # (B, dim)


class VisualInput(nn.Module):
    """Store rows (B, M, C) grids or (B, C) vectors -> regions (B, M, dim), times the training scale.

    A projection (no bias, so a missing image stays zero) is added only when C != dim: at
    the paper's sizes (VGG pool5, 512) the regions enter the attention unchanged.
    """

    def __init__(self, shape: Sequence[int], dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.channels, self.scale = int(shape[-1]), float(scale)
        self.proj = nn.Linear(self.channels, dim, bias=False) if self.channels != dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().reshape(x.shape[0], -1, self.channels) * self.scale  # (B, M, C)
        return self.proj(x) if self.proj is not None else x  # (B, M, dim)
