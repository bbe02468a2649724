"""Chance levels: the same metric on pairs whose bin-to-bin correspondence is broken.

- shuffled time, circular shift: Y stays, X is rolled by a random offset of at least
  `min_shift` bins (keeps each set's autocorrelation, breaks the pairing);
- shuffled time, block permutation: X cut into blocks of `block` bins, blocks reordered;
- shuffled session: X from session A against Y from session B, truncated to equal length
  (`shuffled_session_pairs`).

    dist = control_distribution(lambda xs: linear_cka(xs, y), x, "circular", rng, n=20)
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def circular_shift(x: np.ndarray, rng: np.random.Generator, min_shift: int) -> np.ndarray:
    n = len(x)
    lo = min(max(1, min_shift), n // 2)
    if n < 2:
        raise ValueError("a circular-shift control needs at least 2 bins")
    return np.roll(x, int(rng.integers(lo, n - lo + 1)), axis=0)


def block_permute(x: np.ndarray, rng: np.random.Generator, block: int) -> np.ndarray:
    n = len(x)
    block = max(1, min(block, n // 2 or 1))
    starts = np.arange(0, n, block)
    order = rng.permutation(len(starts))
    if len(order) > 1 and np.all(order == np.arange(len(order))):
        order = np.roll(order, 1)  # never the identity
    return np.concatenate([x[starts[i] : starts[i] + block] for i in order])


def control_distribution(metric: Callable[[np.ndarray], float], x: np.ndarray, kind: str, rng: np.random.Generator,
                         n: int = 20, min_shift: int = 100, block: int = 50) -> np.ndarray:  # fmt: skip
    """`metric(x_shuffled)` for `n` shuffles of kind 'circular' or 'block'."""
    if kind == "circular":
        return np.array([metric(circular_shift(x, rng, min_shift)) for _ in range(n)])
    if kind == "block":
        return np.array([metric(block_permute(x, rng, block)) for _ in range(n)])
    raise ValueError(f"control kind must be 'circular' or 'block', got {kind!r}")


def shuffled_session_pairs(keys: list) -> list[tuple]:
    """Every ordered pair (a, b), a != b: X of session a against Y of session b."""
    return [(a, b) for a in keys for b in keys if a != b]


def truncate_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = min(len(x), len(y))
    return x[:m], y[:m]


def summarize(values) -> dict:
    """Mean and the central 95% of a control distribution."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "lo": float(np.quantile(v, 0.025)), "hi": float(np.quantile(v, 0.975)), "n": int(len(v))}
