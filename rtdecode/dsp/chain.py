"""`SignalChain`: owns the buffers and the filter state, calls the numba kernel.

One implementation for both sides: the runtime feeds it chunks as they arrive,
`compute_features` feeds it a whole recording in fixed blocks. Because every
stage carries its state, the bins are the same whatever the chunking.

Start state (`ChainSpec.init`): "steady" sets every filter section, at the first sample
after construction or `reset()`, to the steady state it would have reached on a signal
that had held that first value forever (scipy's `sosfilt_zi` scaled by the sample, here
in closed form with numpy, per channel, through the pre filter, CAR, each branch's band
filter, rectifier and smoother), so a DC offset leaves no start-up transient; "zero" is
the zero state older bundles were trained with. Both sides do the same, so online bins
still equal offline bins.

`settle_samples` / `settle_bins`: how long the start still shows, computed when the chain
is built from its coefficients. For each branch, the impulse response of its linear part
(pre filter and band filter, then the smoother after the rectifier) is run out; the chain
has settled at sample n when the L1 norm of every remaining tail, sum over m > n of
|h[m]|, is at most `SETTLE_TOL` (0.05). From then on the start-up error of a linear branch
is at most 5 % of the largest deviation of the signal before the start from its first
sample, whatever that signal was. The runtime keeps bins flagged WARMUP until then
(default `lfp` chain at 1 kHz: 14.8 s, set by the 0.05 Hz high-pass).
"""

from __future__ import annotations

import numpy as np

from .kernels import RECT_ABS, RECT_NONE, RECT_SQUARE, chain_process, has_nonfinite, hold_nonfinite, sosfilt_inplace
from .spec import NORM_FLOOR, ChainSpec

_RECT_CODES = {"none": RECT_NONE, "square": RECT_SQUARE, "abs": RECT_ABS}
SETTLE_TOL = 0.05  # L1 norm of the remaining impulse-response tail at which the chain counts as settled
_SETTLE_MAX_S = 120.0  # impulse responses are run out at most this long


def step_zi(sos: np.ndarray) -> tuple[np.ndarray, float]:
    """Steady-state section states of an SOS cascade for a unit step (scipy.signal.sosfilt_zi,
    in closed form for direct form II transposed) and the cascade's DC gain.

    Returns (zi (n_sections, 2), gain): the state for an input held at x is zi * x."""
    zi = np.zeros((len(sos), 2))
    scale = 1.0
    for s, (b0, b1, b2, _, a1, a2) in enumerate(np.asarray(sos, dtype=np.float64)):
        den = 1.0 + a1 + a2
        g = (b0 + b1 + b2) / den if den != 0.0 else 0.0  # a pole at DC: no steady state, start at 0
        zi[s, 1] = (b2 - a2 * g) * scale
        zi[s, 0] = (b1 + b2 - (a1 + a2) * g) * scale
        scale *= g
    return zi, scale


def settle_samples(sos: np.ndarray, fs: float, tol: float = SETTLE_TOL) -> int:
    """First n with sum_{m > n} |h[m]| <= tol for the cascade's impulse response h."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    if len(sos) == 0:
        return 0
    r = max((float(np.abs(np.roots([1.0, a1, a2])).max()) if (a1 or a2) else 0.0) for a1, a2 in sos[:, 4:6])
    cap = int(_SETTLE_MAX_S * fs)
    n = cap if r >= 1.0 else min(cap, max(64, int(np.ceil(np.log(1e-3 * tol) / np.log(max(r, 1e-12)))) + 64))
    h = np.zeros((n, 1))
    h[0, 0] = 1.0
    sosfilt_inplace(sos, np.zeros((len(sos), 2, 1)), h, n)
    tail = np.cumsum(np.abs(h[::-1, 0]))[::-1]  # tail[m] = sum_{j >= m} |h[j]|
    over = np.flatnonzero(tail[1:] > tol)
    return int(over[-1] + 1) if over.size else 0


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
        self._steady = spec.init == "steady"
        self._need_init = self._steady
        if self._steady:  # unit-step states and DC gains, once, from the coefficients
            self._pre_unit, self._pre_gain = step_zi(self._pre_sos)
            self._br_unit = [step_zi(b.sos) for b in spec.branches]
            self._sm_unit = [step_zi(b.smooth_sos)[0] for b in spec.branches]
        per_branch = [
            settle_samples(np.concatenate([spec.pre_sos, b.sos]), spec.fs) + settle_samples(b.smooth_sos, spec.fs)
            for b in spec.branches
        ]
        self.settle_samples = max(per_branch) if per_branch else 0

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
    def settle_bins(self) -> int:
        """Bins (counted from the start) until the chain has settled (see module docstring)."""
        return -(-self.settle_samples // self.spec.bin_samples)

    @property
    def samples_in_bin(self) -> int:
        """Samples already accumulated into the bin in progress."""
        return int(self._count[0])

    @property
    def norm_mean(self) -> np.ndarray:
        """The z-scoring's mean as the chain applies it now (a copy)."""
        return self._mean.copy()

    @property
    def norm_std(self) -> np.ndarray:
        """The z-scoring's std as the chain applies it now (a new array)."""
        return 1.0 / self._inv_std

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Replace the z-scoring in place (the arrays the kernel reads; no reallocation), e.g.
        `rtdecode run --renormalize` once it has the stream's own statistics. std is floored as
        `rtdecode.dsp.design.fit_normalization` floors it."""
        if not self._use_norm:
            raise ValueError("this chain has no normalisation to replace")
        self._mean[:] = mean
        np.divide(1.0, np.maximum(std, NORM_FLOOR), out=self._inv_std)

    def reset(self) -> None:
        """Zero all filter state and the bin in progress (e.g. after a reconnect)."""
        for a in (self._pre_zi, self._br_zi, self._sm_zi, self._acc):
            a.fill(0.0)
        self._count[0] = 0
        self._need_init = self._steady

    def _init_steady(self, x0: np.ndarray) -> None:
        """Every section in the steady state of a signal held at x0 (n_channels,) forever.
        Runs once per start (rare path)."""
        spec = self.spec
        x = np.asarray(x0, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            x = np.where(np.isfinite(x), x, 0.0)
        self._pre_zi[:] = self._pre_unit[:, :, None] * x[None, None, :]
        y = self._pre_gain * x
        if spec.car:
            y = y - y.mean()
        for b, br in enumerate(spec.branches):
            unit, gain = self._br_unit[b]
            self._br_zi[self._br_off[b] : self._br_off[b + 1]] = unit[:, :, None] * y[None, None, :]
            yb = gain * y
            yb = {"none": yb, "square": yb * yb, "abs": np.abs(yb)}[br.rectify]
            self._sm_zi[self._sm_off[b] : self._sm_off[b + 1]] = self._sm_unit[b][:, :, None] * yb[None, None, :]

    def process(self, chunk: np.ndarray, n: int | None = None) -> np.ndarray:
        n = chunk.shape[0] if n is None else n
        if chunk.ndim != 2 or chunk.shape[1] != self.spec.n_channels:
            raise ValueError(
                f"chunk has shape {chunk.shape}, the chain expects (n_samples, {self.spec.n_channels})"
            )
        if n > self._cap:
            self._alloc(n)
        if self._need_init and n > 0:
            self._init_steady(chunk[0])
            self._need_init = False
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


def compute_features(spec: ChainSpec, signal: np.ndarray, block: int = 4096, stats: dict | None = None) -> np.ndarray:
    """Run a whole recording (n_samples, n_channels) through a fresh chain.

    Returns (n_samples // bin_samples, n_features) float32: exactly what the runtime
    computes online from the same samples (the trailing partial bin is dropped).
    Memory stays bounded: the recording is read `block` samples at a time, so a
    lazily loaded array (h5py dataset, memmap) is never loaded whole. NaN/Inf samples are
    held at the channel's last finite value, as the runtime repairs them (`stats`, when
    given, gets "nonfinite": how many values were replaced).
    """
    if signal.ndim != 2 or signal.shape[1] != spec.n_channels:
        raise ValueError(f"signal has shape {signal.shape}, the chain expects (n_samples, {spec.n_channels})")
    chain = SignalChain(spec, max_chunk=block)
    n_bins = signal.shape[0] // spec.bin_samples
    out = np.empty((n_bins, spec.n_features), dtype=np.float32)
    j, last, repaired = 0, None, 0
    for start in range(0, signal.shape[0], block):
        x = np.ascontiguousarray(signal[start : start + block])
        if last is None:
            last = np.zeros(spec.n_channels, x.dtype)  # as the runtime's: zero before any finite value
        if has_nonfinite(x, len(x)):  # rare path: repaired in a copy, never in the caller's array
            x = x.copy()
            repaired += hold_nonfinite(x, len(x), last)
        last[:] = x[-1]
        bins = chain.process(x)
        out[j : j + len(bins)] = bins
        j += len(bins)
    assert j == n_bins
    if stats is not None:
        stats["nonfinite"] = repaired
    return out
