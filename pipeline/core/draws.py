"""numpy Generator draws replayed in plain Python from the generator's raw words, for
loops that draw a few numbers per item (DMAN's links, the ranking task's candidate lists):
the same numbers for the same seed as the numpy calls they replace, without a numpy call's
overhead per draw."""
from __future__ import annotations

import numpy as np


class Draws:
    """`random()`, `integers(n)` and `choice(n, k)` of a PCG64 Generator, drawn from blocks
    of its raw words in plain Python: the same numbers, at a fifth to a tenth of the cost of
    a numpy call each. `sync()` puts the generator where these draws left it, before the
    generator itself is called again."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.bg = rng.bit_generator
        self.start = None
        self.words: list[int] = []  # the current block of raw words
        self.k = self.n = self.base = 0  # next word in the block, its length, words of earlier blocks

    def _begin(self) -> None:
        """A fresh block from the generator's current state (after `sync` or at first use)."""
        self.start = self.bg.state
        self.has, self.half = self.start["has_uint32"], self.start["uinteger"]
        self.words, self.k, self.n, self.base = [], 0, 0, 0

    def _refill(self) -> None:
        if self.start is None:
            self._begin()
        self.base += self.n
        self.words, self.k, self.n = self.bg.random_raw(1024).tolist(), 0, 1024

    def random(self) -> float:
        k = self.k  # the calls are inlined: this runs millions of times (DMAN's links)
        if k == self.n:
            self._refill()
            k = 0
        self.k = k + 1
        return (self.words[k] >> 11) * (1.0 / 9007199254740992.0)  # next_double

    def _uint32(self) -> int:
        if self.start is None:
            self._begin()
        if self.has:
            self.has = 0
            return self.half
        k = self.k
        if k == self.n:
            self._refill()
            k = 0
        self.k = k + 1
        w = self.words[k]
        self.has, self.half = 1, w >> 32
        return w & 0xFFFFFFFF

    def integers(self, n: int) -> int:
        """In [0, n), n < 2**32: numpy's buffered Lemire draw on 32-bit halves."""
        if n == 1:
            return 0
        m = self._uint32() * n
        if (m & 0xFFFFFFFF) < n:
            threshold = (0xFFFFFFFF - (n - 1)) % n
            while (m & 0xFFFFFFFF) < threshold:
                m = self._uint32() * n
        return m >> 32

    def choice(self, rng: np.random.Generator, n: int, k: int) -> list[int]:
        """sorted(rng.choice(n, k, replace=False)), 1 <= k <= n < 2**32: numpy's Floyd
        sampling and the shuffle after it (whose draws count, not its order); numpy's tail
        shuffle (n > 10000 and k > n // 50) is left to numpy itself."""
        if n > 10000 and k > n // 50:
            self.sync()
            return sorted(rng.choice(n, k, replace=False).tolist())
        chosen: set[int] = set()
        for j in range(n - k, n):
            v = self.integers(j + 1)
            chosen.add(j if v in chosen else v)
        for i in range(k - 1, 0, -1):  # the shuffle: a bounded draw in [0, i] each
            self.integers(i + 1)
        return sorted(chosen)

    def sync(self) -> None:
        if self.start is None:
            return
        self.bg.state = self.start
        self.bg.advance(self.base + self.k)
        state = self.bg.state
        state.update(has_uint32=self.has, uinteger=self.half)
        self.bg.state = state
        self.start = None
        self.words, self.k, self.n, self.base = [], 0, 0, 0
