"""Window ring: the last `n_bins` feature rows as one contiguous view, no copying.

Every row is written twice, at i and i + n_bins, in a buffer of 2 * n_bins rows,
so the window ending at the newest row is always `buf[w : w + n_bins]`, contiguous
and in time order, ready to hand to an inference backend as (1, n_bins, n_features).
"""

from __future__ import annotations

import numpy as np


class WindowRing:
    def __init__(self, n_bins: int, n_features: int, dtype=np.float32):
        if n_bins < 1:
            raise ValueError(f"window must hold at least one bin, got {n_bins}")
        self.n_bins = n_bins
        self._buf = np.zeros((2 * n_bins, n_features), dtype=dtype)
        self._w = 0  # next write index in [0, n_bins)
        self.filled = 0

    def push(self, row: np.ndarray) -> None:
        w = self._w
        self._buf[w] = row
        self._buf[w + self.n_bins] = row
        self._w = w + 1 if w + 1 < self.n_bins else 0
        if self.filled < self.n_bins:
            self.filled += 1

    @property
    def full(self) -> bool:
        return self.filled == self.n_bins

    def window(self) -> np.ndarray:
        """(1, n_bins, n_features) view: oldest first, newest last."""
        w = self._w
        return self._buf[None, w : w + self.n_bins]

    def clear(self) -> None:
        self._buf.fill(0)
        self._w = 0
        self.filled = 0
