"""Sessions as training arrays, time splits, and deterministic window batches.

`SessionData` holds one session's per-bin arrays, all aligned on the spike bins:
features (exactly `rtdecode.dsp.compute_features` output with the bundle's chain),
spike counts, behaviour. Time is split into a training block and a held-out block at
the end, separated by a guard gap.

A batch is drawn from ONE session (spike sessions have different unit counts) and is
a pure function of (seed, stage, step): resuming or splitting a global batch across
DDP ranks gives the very same samples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass
class SessionData:
    session_id: str
    features: np.ndarray  # (n_bins, F) float32 normalised chain features
    spikes: np.ndarray  # (n_bins, N_s) float32 counts
    behavior: np.ndarray  # (n_bins, n_out) float32
    train: slice  # bins used for training (fit block)
    test: slice  # held-out time
    val: slice | None = None  # validation block inside the training time (never overlaps `train` or `test`)
    beh_mu: np.ndarray | None = None  # behaviour mean and SD of the fit block: the supervised losses
    beh_sd: np.ndarray | None = None  # are on z-scored targets, de-standardised at evaluation and export

    def __post_init__(self):
        if self.beh_mu is None:
            b = self.behavior[self.train]
            self.beh_mu = b.mean(0).astype(np.float32)
            self.beh_sd = (b.std(0) + 1e-6).astype(np.float32)

    @property
    def n_bins(self) -> int:
        return len(self.features)

    def z(self, y: np.ndarray) -> np.ndarray:
        """Behaviour in this session's z-scored units."""
        return ((y - self.beh_mu) / self.beh_sd).astype(np.float32)

    def unz(self, y: np.ndarray) -> np.ndarray:
        """Z-scored predictions back in real units."""
        return (y * self.beh_sd + self.beh_mu).astype(np.float32)


def split_time(n_bins: int, test_fraction: float, guard_bins: int, min_bins: int) -> tuple[slice, slice]:
    """Train block [0, a), guard gap, test block [a + guard, n)."""
    n_test = int(round(n_bins * test_fraction))
    a = n_bins - n_test - guard_bins
    if a < min_bins or n_test < min_bins:
        raise ValueError(
            f"a session of {n_bins} bins is too short to split into train and test blocks of at least {min_bins} bins "
            f"each (test_fraction {test_fraction}, guard {guard_bins}): record longer sessions or shrink window_bins"
        )
    return slice(0, a), slice(a + guard_bins, n_bins)


def split_validation(train: slice, fraction: float, guard_bins: int, min_bins: int) -> tuple[slice, slice]:
    """The training block [0, a) cut into a fit block, a guard gap and a validation block at
    its end [v, a); the test block starts guard_bins after a, so: fit | guard | val | guard | test."""
    lo, hi = train.start or 0, train.stop
    n_val = int(round((hi - lo) * fraction))
    v = hi - n_val
    if n_val < min_bins or v - guard_bins - lo < min_bins:
        raise ValueError(
            f"a training block of {hi - lo} bins is too short for a validation block of at least {min_bins} bins "
            f"(validation.fraction {fraction}, guard {guard_bins}) and a fit block as long: record longer sessions, "
            "shrink window_bins or raise validation.fraction"
        )
    return slice(lo, v - guard_bins), slice(v, hi)


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(stage.encode()), step])


@dataclass(frozen=True)
class Batch:
    session: int  # index into the list of sessions given to `plan_batch`
    starts: np.ndarray  # (B,) first bin of every window


def plan_batch(
    rng: np.random.Generator, sessions: list[SessionData], which: list[int], seq_bins: int, batch: int,
    part: str = "train", max_bins: int | None = None,
) -> Batch:  # fmt: skip
    """One session of `which` (weighted by its training length), then `batch` window starts in its
    `part` block (restricted to its first `max_bins` bins when given)."""
    lens = []
    for i in which:
        sl = getattr(sessions[i], part)
        n = sl.stop - sl.start if max_bins is None else min(sl.stop - sl.start, max_bins)
        lens.append(max(n - seq_bins + 1, 0))
    lens = np.asarray(lens, float)
    if lens.sum() <= 0:
        raise ValueError(f"no session has {seq_bins} bins of {part} time: shorten the training windows")
    s = which[int(rng.choice(len(which), p=lens / lens.sum()))]
    lo = getattr(sessions[s], part).start
    n = int(lens[which.index(s)])
    return Batch(s, lo + rng.integers(0, n, size=batch))


def gather(x: np.ndarray, starts: np.ndarray, seq_bins: int) -> np.ndarray:
    """(n_bins, K) -> (B, seq_bins, K) windows starting at `starts`."""
    idx = starts[:, None] + np.arange(seq_bins)[None, :]
    return x[idx]


def rank_slice(batch: int, rank: int, world: int) -> slice:
    if batch % world:
        raise ValueError(f"global batch {batch} does not split evenly over {world} ranks")
    k = batch // world
    return slice(rank * k, (rank + 1) * k)


def sliding_windows(x: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray:
    """Windows (len(idx), window, K) ending at bins `idx`, zero-filled before bin 0 (as the
    runtime's window ring starts)."""
    pad = np.concatenate([np.zeros((window - 1, x.shape[1]), x.dtype), x])
    return gather(pad, np.asarray(idx), window)
