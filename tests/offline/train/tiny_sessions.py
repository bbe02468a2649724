"""A tiny stand-in for offline.data.simulate inside these tests: sessions with the data
contract's fields, where behaviour drives spikes strongly and LFP weakly."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TinySession:
    session_id: str
    subject: str
    bin_width: float
    spikes: np.ndarray
    unit_ids: np.ndarray
    lfp: np.ndarray
    lfp_rate: float
    channel_ids: np.ndarray
    behavior: np.ndarray
    behavior_names: list
    t0: float = 0.0
    latents: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def _smooth_noise(rng, n, k, tau):
    x = np.zeros((n, k))
    e = rng.standard_normal((n, k))
    a = np.exp(-1.0 / tau)
    for i in range(1, n):
        x[i] = a * x[i - 1] + np.sqrt(1 - a * a) * e[i]
    return x


def tiny_sessions(n_sessions: int = 3, n_bins: int = 1200, n_channels: int = 8, fs: float = 200.0, seed: int = 0,
                  lfp_gain: float = 0.5, base_units: int = 12):
    rng0 = np.random.default_rng(99)
    mix = rng0.standard_normal((4, n_channels))  # the same electrodes every session
    out = []
    for s in range(n_sessions):
        rng = np.random.default_rng([seed, s])
        z = _smooth_noise(rng, n_bins, 4, tau=20.0)  # latent state per 10 ms bin
        beh = z[:, :2].astype(np.float32)
        n_units = base_units + 3 * s
        c = rng.standard_normal((4, n_units)) * 0.8
        spikes = rng.poisson(np.exp(-1.0 + z @ c)).astype(np.int64)
        spb = int(fs * 0.01)
        zs = np.repeat(z, spb, axis=0)
        lfp = (zs @ mix * lfp_gain + rng.standard_normal((n_bins * spb, n_channels))).astype(np.float32)
        out.append(TinySession(f"tiny{s}", "T", 0.01, spikes, np.arange(n_units), lfp, fs,
                               np.arange(n_channels), beh, ["vx", "vy"], latents=z.astype(np.float32)))
    return out
