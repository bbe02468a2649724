"""Small builders shared by tests: a synthetic recording and a real bundle (ridge + ONNX)."""

from __future__ import annotations

import numpy as np


def synthetic_recording(n_samples: int = 20_000, n_channels: int = 8, fs: float = 1000.0, seed: int = 0):
    """LFP that linearly carries two slow behavioural signals, plus noise; behaviour per 10 ms bin."""
    mixing = np.random.default_rng(1234).standard_normal((2, n_channels))  # the same "electrodes" every seed
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / fs + seed * 7.3
    beh = np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t)], 1)
    lfp = (beh @ mixing * 20 + rng.standard_normal((n_samples, n_channels)) * 5).astype(np.float32)
    bin_samples = int(fs * 0.01)
    behavior = beh[bin_samples - 1 :: bin_samples][: n_samples // bin_samples].astype(np.float32)
    return lfp, behavior


def make_bundle(path, n_channels: int = 8, fs: float = 1000.0, window_bins: int = 10, seed: int = 0, **kw):
    from offline.linear import fit_linear_bundle

    lfp, beh = synthetic_recording(n_channels=n_channels, fs=fs, seed=seed)
    return fit_linear_bundle(lfp, fs, beh, ["vel_x", "vel_y"], path, window_bins=window_bins, line_freq=None, **kw)
