"""Filter design for the signal chain (offline only: imports scipy).

The runtime never imports this module; it runs the coefficients stored in the
bundle. Two chains (DESIGN.md):

- ``"lfp"``: the causal counterpart of the paper's preprocessing: notch at the line
  frequency and harmonics, 0.05 Hz high-pass, 50 Hz low-pass, common-average
  reference, mean over 10 ms bins, z-score with training statistics.
- ``"lmp_bands"``: local motor potential plus band powers (Flint et al. 2012): the
  same notch and high-pass, CAR, then an LMP branch (low-pass) and one branch per
  band (band-pass, squared, smoothed).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .spec import NORM_FLOOR, BranchSpec, ChainSpec, ChainSpecError

CHAIN_KINDS = ("lfp", "lmp_bands")


def _notches(fs: float, line_freq: float, n_harmonics: int, q: float) -> list[np.ndarray]:
    out = []
    for h in range(1, n_harmonics + 1):
        f0 = line_freq * h
        if f0 >= fs / 2 * 0.98:
            break
        b, a = signal.iirnotch(f0, q, fs=fs)
        out.append(signal.tf2sos(b, a))
    return out


def design_chain(
    kind: str = "lfp",
    *,
    fs: float,
    n_channels: int,
    bin_width_s: float = 0.01,
    line_freq: float | None = 60.0,
    n_harmonics: int = 3,
    notch_q: float = 30.0,
    highpass_hz: float | None = 0.05,
    lowpass_hz: float = 50.0,
    filter_order: int = 4,
    car: bool = True,
    lmp_hz: float = 4.0,
    bands: tuple[tuple[float, float], ...] = ((7.0, 20.0), (70.0, 200.0)),
    smooth_hz: float = 5.0,
    init: str = "steady",
) -> ChainSpec:
    """Design a causal chain; returns an un-normalised `ChainSpec`.

    init="steady" (the default for new bundles) starts the filters in the steady state of
    a step at the first sample; "zero" is the old behaviour (zero state)."""
    if kind not in CHAIN_KINDS:
        raise ChainSpecError(f"chain kind {kind!r} is unknown; choose one of {CHAIN_KINDS}")
    bin_samples = bin_width_s * fs
    if abs(bin_samples - round(bin_samples)) > 1e-6 or round(bin_samples) < 1:
        raise ChainSpecError(
            f"bin width {bin_width_s} s is not a whole number of samples at {fs} Hz ({bin_samples:g}); "
            "pick a bin width that divides the sampling period"
        )
    nyq = fs / 2
    pre: list[np.ndarray] = []
    if line_freq:
        pre += _notches(fs, line_freq, n_harmonics, notch_q)
    if highpass_hz:
        pre.append(signal.butter(2, highpass_hz, "highpass", fs=fs, output="sos"))
    design = dict(
        kind=kind, fs=fs, bin_width_s=bin_width_s, line_freq=line_freq, n_harmonics=n_harmonics,
        notch_q=notch_q, highpass_hz=highpass_hz, filter_order=filter_order, car=car,
    )  # fmt: skip
    if kind == "lfp":
        if lowpass_hz >= nyq:
            raise ChainSpecError(f"low-pass {lowpass_hz} Hz is at or above Nyquist ({nyq} Hz)")
        pre.append(signal.butter(filter_order, lowpass_hz, "lowpass", fs=fs, output="sos"))
        branches = (BranchSpec("lfp"),)
        design["lowpass_hz"] = lowpass_hz
    else:
        smooth = signal.butter(2, smooth_hz, "lowpass", fs=fs, output="sos")
        branches = [BranchSpec("lmp", sos=signal.butter(filter_order, lmp_hz, "lowpass", fs=fs, output="sos"))]
        for lo, hi in bands:
            if hi >= nyq:
                raise ChainSpecError(f"band {lo}-{hi} Hz reaches Nyquist ({nyq} Hz) at fs={fs}; lower it or resample")
            band = signal.butter(filter_order // 2 or 1, [lo, hi], "bandpass", fs=fs, output="sos")
            branches.append(BranchSpec(f"{lo:g}-{hi:g}Hz", sos=band, rectify="square", smooth_sos=smooth))
        branches = tuple(branches)
        design.update(lmp_hz=lmp_hz, bands=[list(b) for b in bands], smooth_hz=smooth_hz)
    pre_sos = np.concatenate(pre, axis=0) if pre else np.zeros((0, 6))
    return ChainSpec(
        fs=fs, n_channels=n_channels, bin_samples=int(round(bin_samples)), pre_sos=pre_sos, car=car,
        branches=branches, kind=kind, design=design, init=init,
    )  # fmt: skip


def fit_normalization(features: np.ndarray, floor: float = NORM_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of training features (n_bins, n_features); std floored."""
    f = np.asarray(features, dtype=np.float64)
    mean = f.mean(axis=0)
    std = np.maximum(f.std(axis=0), floor)
    return mean, std
