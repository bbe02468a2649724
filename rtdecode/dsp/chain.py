"""`SignalChain`: owns the buffers and the filter state, calls the numba kernel.

One implementation for both sides: the runtime feeds it chunks as they arrive,
`compute_features` feeds it a whole recording in fixed blocks. Because every
stage carries its state, the bins are the same whatever the chunking.
"""

from __future__ import annotations

import numpy as np

from .kernels import RECT_ABS, RECT_NONE, RECT_SQUARE, chain_process
from .spec import ChainSpec

_RECT_CODES = {"none": RECT_NONE, "square": RECT_SQUARE, "abs": RECT_ABS}


def _stack(sos_list: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(sos_list) + 1, dtype=np.int64)
    for i, s in enumerate(sos_list):
        off[i + 1] = off[i] + len(s)
    stacked = np.ascontiguousarray(np.concatenate(sos_list, axis=0)) if off[-1] else np.zeros((0, 6))
    return stacked, off


class SignalChain:
    """Causal, stateful signal chain over chunks of shape (n_samples, n_channels).

    `process(chunk)` returns a float32 view (k, n_features) of the bins completed by
    this chunk (k may be 0); the view is overwritten by the next call. `ends[:k]`
    holds the index within the chunk of each completed bin's last sample.
    No allocation per call once the chunk fits `max_chunk` (a larger chunk grows the
    buffers once).
    """

    def __init__(self, spec: ChainSpec, max_chunk: int = 1024):
        self.spec = spec
        c = spec.n_channels
        self._pre_sos = spec.pre_sos
        self._br_sos, self._br_off = _stack([b.sos for b in spec.branches])
        self._sm_sos, self._sm_off = _stack([b.smooth_sos for b in spec.branches])
        self._rect = np.array([_RECT_CODES[b.rectify] for b in spec.branches], dtype=np.int64)
        self._use_norm = spec.normalized
        if spec.normalized:
            self._mean = np.ascontiguousarray(spec.norm_mean, dtype=np.float64)
            self._inv_std = np.ascontiguousarray(1.0 / spec.norm_std, dtype=np.float64)
        else:
            self._mean = np.zeros(spec.n_features)
            self._inv_std = np.ones(spec.n_features)
        self._pre_zi = np.zeros((len(self._pre_sos), 2, c))
        self._br_zi = np.zeros((len(self._br_sos), 2, c))
        self._sm_zi = np.zeros((len(self._sm_sos), 2, c))
        self._acc = np.zeros(spec.n_features)
        self._count = np.zeros(1, dtype=np.int64)
        self._alloc(max(int(max_chunk), spec.bin_samples))

    def _alloc(self, cap: int) -> None:
        c = self.spec.n_channels
        self._cap = cap
        self._base = np.zeros((cap, c))
        self._work = np.zeros((cap, c))
        max_bins = cap // self.spec.bin_samples + 1
        self._out = np.zeros((max_bins, self.spec.n_features), dtype=np.float32)
        self._ends = np.zeros(max_bins, dtype=np.int64)

    @property
    def ends(self) -> np.ndarray:
        return self._ends

    @property
    def samples_in_bin(self) -> int:
        """Samples already accumulated into the bin in progress."""
        return int(self._count[0])

    def reset(self) -> None:
        """Zero all filter state and the bin in progress (e.g. after a reconnect)."""
        for a in (self._pre_zi, self._br_zi, self._sm_zi, self._acc):
            a.fill(0.0)
        self._count[0] = 0

    def process(self, chunk: np.ndarray, n: int | None = None) -> np.ndarray:
        n = chunk.shape[0] if n is None else n
        if chunk.ndim != 2 or chunk.shape[1] != self.spec.n_channels:
            raise ValueError(
                f"chunk has shape {chunk.shape}, the chain expects (n_samples, {self.spec.n_channels})"
            )
        if n > self._cap:
            self._alloc(n)
        k = chain_process(
            chunk, n, self._base, self._work,
            self._pre_sos, self._pre_zi, self.spec.car,
            self._br_sos, self._br_zi, self._br_off,
            self._sm_sos, self._sm_zi, self._sm_off,
            self._rect, self._acc, self._count, self.spec.bin_samples,
            self._use_norm, self._mean, self._inv_std,
            self._out, self._ends,
        )  # fmt: skip
        return self._out[:k]


def compute_features(spec: ChainSpec, signal: np.ndarray, block: int = 4096) -> np.ndarray:
    """Run a whole recording (n_samples, n_channels) through a fresh chain.

    Returns (n_samples // bin_samples, n_features) float32: exactly what the runtime
    computes online from the same samples (the trailing partial bin is dropped).
    Memory stays bounded: the recording is read `block` samples at a time, so a
    lazily loaded array (h5py dataset, memmap) is never loaded whole.
    """
    if signal.ndim != 2 or signal.shape[1] != spec.n_channels:
        raise ValueError(f"signal has shape {signal.shape}, the chain expects (n_samples, {spec.n_channels})")
    chain = SignalChain(spec, max_chunk=block)
    n_bins = signal.shape[0] // spec.bin_samples
    out = np.empty((n_bins, spec.n_features), dtype=np.float32)
    j = 0
    for start in range(0, signal.shape[0], block):
        x = np.ascontiguousarray(signal[start : start + block])
        bins = chain.process(x)
        out[j : j + len(bins)] = bins
        j += len(bins)
    assert j == n_bins
    return out
