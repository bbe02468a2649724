"""A seeded simulator of simultaneous spikes, raw LFP and reaching behaviour, many sessions.

    cfg = SimConfig(n_channels=32, duration_s=120.0)
    s = simulate_session(cfg, session_index=0, seed=0)      # one Session (offline.data.session)
    sessions = simulate_dataset(cfg, n_sessions=4, seed=0)  # [simulate_session(cfg, i, seed) ...]
    write_dataset(cfg, 10, seed=0, out_dir="sim/")          # NWB files, one session in memory at a time

What is fixed by what:
- `cfg.subject_seed` fixes the subject and implant: electrode maps, the neuron pool and its
  tuning, the latent-to-behaviour map. `session_index` fixes a day: which units are
  recorded (turnover), their tuning drift, channel order, per-channel gains, LFP SNR.
  `seed` fixes one recording of that day: behaviour, latent noise, spikes, LFP noise.
  So (cfg, i, seed=0) and (cfg, i, seed=1) are two recordings of the same day.

The model (all per 10 ms bin unless said otherwise):
- behaviour: centre-out-and-back style random reaches between targets with minimum-jerk
  profiles, a hold at each target with a grip-force pulse; outputs x, y, vx, vy, grip.
- latents z (n_latents): a fixed linear map of kinematics `latent_lead_s` ahead (velocity,
  position, speed, grip) plus rotational dynamics kicked at reach onsets, plus autonomous
  AR(1) noise; `behavior_latent_share` of the variance comes from behaviour.
- spikes: Poisson, log-rate = log base + tuning_gain * C_u . z + slow drift, clipped to
  `log_rate_clip` (log Hz); tuning drifts across sessions, units turn over.
- LFP (at lfp_rate, microvolts): latent-driven low-frequency potential (`lfp_latent_uv`:
  how much behaviour the LFP carries) + high-gamma (70-200 Hz noise, envelope from the
  recorded units' pooled counts near each electrode, times log-normal noise `hg_noise`)
  + beta bursts (20 and 26 Hz) whose rate drops by `beta_move_suppression` during movement
  + 1/f^`background_exponent` background (partly shared across channels) + white noise +
  line noise; then per-session channel gains and a channel reordering.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from .session import Session

BEHAVIOR_NAMES = ["x", "y", "vx", "vy", "grip"]


class _BinGrid:
    """The bins of a config with duration_s, bin_width (s) and lfp_rate (Hz) fields: SimConfig
    here, FamilyConfig in offline.data.families."""

    def _check_bin_grid(self) -> None:
        spb = self.lfp_rate * self.bin_width
        if abs(spb - round(spb)) > 1e-6 or round(spb) < 1:
            raise ValueError(f"lfp_rate {self.lfp_rate} Hz x bin_width {self.bin_width} s must be a whole number of samples")

    @property
    def n_bins(self) -> int:
        return int(round(self.duration_s / self.bin_width))

    @property
    def samples_per_bin(self) -> int:
        return int(round(self.lfp_rate * self.bin_width))


@dataclass(frozen=True)
class SimConfig(_BinGrid):
    # recording
    duration_s: float = 120.0
    bin_width: float = 0.01  # s
    lfp_rate: float = 1000.0  # Hz
    n_channels: int = 96
    subject: str = "sim"
    subject_seed: int = 0  # another value: another animal and implant
    # units
    unit_pool: int = 240  # neurons near the array (per subject)
    n_units: int = 120  # units recorded per session, on average
    n_units_jitter: int = 30  # sessions record n_units - [0, jitter) units
    unit_turnover: float = 0.15  # fraction of recorded units replaced from one session to the next
    base_rate_hz: float = 8.0  # median baseline rate (log-normal across units)
    tuning_gain: float = 0.7  # log-rate modulation per latent SD
    tuning_drift: float = 0.2  # tuning random walk per session (relative)
    rate_drift: float = 0.2  # slow within-session drift of log baseline rates (SD)
    log_rate_clip: tuple[float, float] = (-3.0, 5.0)  # log Hz: 0.05 to 148 Hz
    # latents and behaviour
    n_latents: int = 8
    behavior_latent_share: float = 0.85  # fraction of latent variance driven by behaviour
    latent_lead_s: float = 0.1  # neural activity leads movement
    latent_tau_s: float = 0.15  # time constant of the autonomous latent noise
    reach_s: tuple[float, float] = (0.5, 1.0)  # reach duration range
    hold_s: tuple[float, float] = (0.3, 0.9)  # hold at each target
    workspace_cm: float = 10.0  # targets within this radius
    grip_n: tuple[float, float] = (2.0, 6.0)  # grip pulse peak range
    # LFP (microvolts)
    lfp_latent_uv: float = 10.0  # latent-driven potential: how much behaviour the LFP carries
    session_snr_sd: float = 0.35  # per-session log-SD of lfp_latent_uv (sessions differ)
    background_uv: float = 60.0  # 1/f background
    background_exponent: float = 1.6
    background_shared: float = 0.6  # share of background variance common to nearby channels
    beta_uv: float = 15.0
    beta_burst_hz: float = 1.5  # burst rate at rest
    beta_move_suppression: float = 0.85  # fraction of bursts suppressed at full movement
    hg_uv: float = 3.0  # high-gamma amplitude at mean pooled activity
    hg_noise: float = 0.5  # log-normal SD on the pooled-spiking envelope
    hg_radius: float = 1.0  # pooling radius, in electrode spacings
    line_uv: float = 3.0
    line_freq: float = 60.0
    noise_uv: float = 2.0  # white amplifier noise
    session_gain_sd: float = 0.2  # per-session, per-channel log gain SD
    channel_reorder: float = 0.1  # fraction of channels whose order changes each session
    block_s: float = 30.0  # LFP generated this many seconds at a time (memory bound)

    def __post_init__(self):
        self._check_bin_grid()
        if self.duration_s < 10 * self.bin_width or self.n_channels < 1 or self.n_latents < 2:
            raise ValueError(f"duration_s ({self.duration_s}), n_channels ({self.n_channels}) or n_latents ({self.n_latents}) too small")
        if not self.n_units_jitter < self.n_units <= self.unit_pool:
            raise ValueError(f"need n_units_jitter ({self.n_units_jitter}) < n_units ({self.n_units}) <= unit_pool ({self.unit_pool})")
        for name in ("behavior_latent_share", "unit_turnover", "background_shared", "beta_move_suppression", "channel_reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.log_rate_clip[0] >= self.log_rate_clip[1]:
            raise ValueError(f"log_rate_clip must be (low, high), got {self.log_rate_clip}")


# ------------------------------------------------------------------------------------------
# subject: fixed by subject_seed


def _grid(n: int) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    g = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    return g[:n].astype(float)


def _smooth_maps(rng, pos: np.ndarray, k: int, blobs: int = 3) -> np.ndarray:
    """(k, C) spatially smooth maps, unit RMS each."""
    span = pos.max(0) + 1
    out = np.zeros((k, len(pos)))
    for i in range(k):
        for _ in range(blobs):
            c = rng.uniform(0, 1, 2) * span
            w = rng.uniform(1.5, 4.0)
            out[i] += rng.standard_normal() * np.exp(-((pos - c) ** 2).sum(1) / (2 * w * w))
        out[i] /= np.sqrt((out[i] ** 2).mean()) + 1e-12
    return out


@dataclass
class _Subject:
    pos: np.ndarray  # (C, 2) electrode positions (spacings)
    unit_pos: np.ndarray  # (P, 2)
    log_base: np.ndarray  # (P,)
    tuning: np.ndarray  # (P, d)
    kin_map: np.ndarray  # (K, d) kinematic features -> latents
    lat_maps: np.ndarray  # (d, C) latent potential maps
    bg_maps: np.ndarray  # (S, C) shared background maps
    beta_maps: np.ndarray  # (2, C)
    line_gain: np.ndarray  # (C,)


N_KIN = 8  # vx, vy, x, y, speed, grip, rotation (2)


def _subject(cfg: SimConfig) -> _Subject:
    rng = np.random.default_rng([cfg.subject_seed, 1001])
    pos = _grid(cfg.n_channels)
    span = pos.max(0) + 1
    unit_pos = rng.uniform(0, 1, (cfg.unit_pool, 2)) * span - 0.5
    log_base = np.log(cfg.base_rate_hz) + 0.6 * rng.standard_normal(cfg.unit_pool)
    tuning = rng.standard_normal((cfg.unit_pool, cfg.n_latents)) / np.sqrt(cfg.n_latents)
    kin_map = rng.standard_normal((N_KIN, cfg.n_latents))
    kin_map[:2] *= 1.6  # velocity dominates motor-cortex tuning
    return _Subject(pos, unit_pos, log_base, tuning, kin_map, _smooth_maps(rng, pos, cfg.n_latents),
                    _smooth_maps(rng, pos, 6, blobs=2), np.abs(_smooth_maps(rng, pos, 2, blobs=2)),
                    rng.uniform(0.5, 1.5, cfg.n_channels))  # fmt: skip


# ------------------------------------------------------------------------------------------
# day: fixed by (subject_seed, session_index)


@dataclass
class _Day:
    units: np.ndarray  # (U,) pool indices recorded, sorted
    tuning: np.ndarray  # (U, d) drifted tuning
    perm: np.ndarray  # (C,) physical channel of every column
    gain: np.ndarray  # (C,) per-channel gain (physical order)
    lfp_scale: float  # multiplies lfp_latent_uv


def _day(cfg: SimConfig, subj: _Subject, index: int) -> _Day:
    P, d = subj.tuning.shape
    rng0 = np.random.default_rng([cfg.subject_seed, 1002])
    active = np.sort(rng0.permutation(P)[: cfg.n_units])
    walk = np.zeros((P, d))
    for k in range(1, index + 1):  # turnover and drift accumulate day by day
        r = np.random.default_rng([cfg.subject_seed, 1003, k])
        n_swap = int(round(cfg.unit_turnover * cfg.n_units))
        out = r.choice(len(active), n_swap, replace=False)
        pool = np.setdiff1d(np.arange(P), active)
        active = np.sort(np.concatenate([np.delete(active, out), r.choice(pool, n_swap, replace=False)]))
        walk += cfg.tuning_drift * r.standard_normal((P, d)) / np.sqrt(d)
    rng = np.random.default_rng([cfg.subject_seed, 1004, index])
    drop = rng.integers(0, cfg.n_units_jitter) if cfg.n_units_jitter else 0
    units = np.sort(rng.choice(active, len(active) - drop, replace=False))
    tuning = (subj.tuning + walk) / np.sqrt(1.0 + index * cfg.tuning_drift**2)
    C = cfg.n_channels
    perm = np.arange(C)
    k = int(round(cfg.channel_reorder * C)) if index > 0 else 0
    if k >= 2:
        sel = rng.choice(C, k, replace=False)
        perm[sel] = perm[np.roll(sel, 1)]  # a cycle: every selected channel moves
    gain = np.exp(cfg.session_gain_sd * rng.standard_normal(C))
    return _Day(units, tuning[units], perm, gain, float(np.exp(cfg.session_snr_sd * rng.standard_normal())))


# ------------------------------------------------------------------------------------------
# behaviour and latents: fixed by seed


def _min_jerk(tau):
    pos = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    vel = 30 * tau**2 - 60 * tau**3 + 30 * tau**4
    return pos, vel


def reaches(cfg: SimConfig, rng, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kinematics at times `t` (s): (len(t), 5) [x, y, vx, vy, grip] and reach onsets (times, angles)."""
    horizon = float(t.max()) + 5.0
    n = int(horizon / (cfg.hold_s[0] + cfg.reach_s[0])) + 2
    hold = rng.uniform(*cfg.hold_s, n)
    dur = rng.uniform(*cfg.reach_s, n)
    r = cfg.workspace_cm * np.sqrt(rng.uniform(0, 1, n + 1))
    a = rng.uniform(0, 2 * np.pi, n + 1)
    tgt = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    peak = rng.uniform(*cfg.grip_n, n)
    start = np.concatenate([[0.0], np.cumsum(hold + dur)[:-1]]) - rng.uniform(0, hold[0])
    k = np.clip(np.searchsorted(start, t, side="right") - 1, 0, n - 1)
    u = t - start[k]
    in_hold = u < hold[k]
    tau = np.clip((u - hold[k]) / dur[k], 0.0, 1.0)
    p, v = _min_jerk(tau)
    delta = tgt[k + 1] - tgt[k]
    xy = tgt[k] + delta * np.where(in_hold, 0.0, p)[:, None]
    vxy = delta * (np.where(in_hold, 0.0, v) / dur[k])[:, None]
    grip = np.where(in_hold, peak[k] * np.sin(np.pi * np.clip(u / hold[k], 0, 1)) ** 2, 0.0)
    d = tgt[1:] - tgt[:-1]
    return np.column_stack([xy, vxy, grip]), (start + hold, np.arctan2(d[:, 1], d[:, 0]))


def _ar1(rng, n: int, k: int, tau_bins: float) -> np.ndarray:
    a = np.exp(-1.0 / tau_bins)
    e = rng.standard_normal((n + int(5 * tau_bins), k)) * np.sqrt(1 - a * a)
    return signal.lfilter([1.0], [1.0, -a], e, axis=0)[-n:]


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-9)


def latents_from_kinematics(cfg: SimConfig, subj: _Subject, rng, n_bins: int):
    """Behaviour (n_bins, 5) at bin centres and latents (n_bins, d), z-scored."""
    bw = cfg.bin_width
    tc = (np.arange(n_bins) + 0.5) * bw
    lead = int(round(cfg.latent_lead_s / bw))
    kin_all, (onsets, angles) = reaches(cfg, rng, np.concatenate([tc, tc[-1] + bw * np.arange(1, lead + 1)]))
    beh = kin_all[:n_bins].astype(np.float32)
    ahead = kin_all[lead : lead + n_bins]
    speed = np.hypot(ahead[:, 2], ahead[:, 3])
    # rotational dynamics kicked at every reach onset, in the reach direction
    kick = np.zeros(n_bins + lead, complex)
    j = np.round(onsets / bw).astype(int) - lead
    ok = (j >= 0) & (j < n_bins)
    np.add.at(kick, j[ok], np.exp(1j * angles[ok]))
    pole = np.exp(-bw / 0.3 + 2j * np.pi * 2.0 * bw)
    rot = signal.lfilter([1.0], [1.0, -pole], kick)[:n_bins]
    feats = _zscore(np.column_stack([ahead[:, 2], ahead[:, 3], ahead[:, 0], ahead[:, 1], speed, ahead[:, 4],
                                     rot.real, rot.imag]))  # fmt: skip
    z_beh = _zscore(feats @ subj.kin_map)
    z_own = _zscore(_ar1(rng, n_bins, cfg.n_latents, cfg.latent_tau_s / bw))
    s = cfg.behavior_latent_share
    z = np.sqrt(s) * z_beh + np.sqrt(1 - s) * z_own
    moving = np.clip(np.hypot(beh[:, 2], beh[:, 3]) / 10.0, 0.0, 1.0)  # cm/s -> 0..1
    return beh, z.astype(np.float32), moving


def spikes_from_latents(cfg: SimConfig, day: _Day, log_base: np.ndarray, z: np.ndarray, rng) -> np.ndarray:
    n = len(z)
    drift = 0.0
    if cfg.rate_drift:  # slow (tau 30 s), drawn on a 1 s grid and interpolated
        step = int(round(1.0 / cfg.bin_width))
        coarse = cfg.rate_drift * _zscore(_ar1(rng, n // step + 2, len(day.units), 30.0))
        pos = np.arange(n) / step
        i0 = pos.astype(int)
        f = (pos - i0)[:, None]
        drift = coarse[i0] * (1 - f) + coarse[i0 + 1] * f
    logr = log_base[None, :] + cfg.tuning_gain * (z @ day.tuning.T) + drift
    np.clip(logr, *cfg.log_rate_clip, out=logr)
    return rng.poisson(np.exp(logr) * cfg.bin_width).astype(np.int32)


# ------------------------------------------------------------------------------------------
# LFP


def _background_sos(cfg: SimConfig) -> tuple[np.ndarray, float]:
    """1/f^chi noise as a sum of AR(1) processes with log-spaced corners (one IIR filter), plus
    its output SD for unit white input."""
    fs = cfg.lfp_rate
    f = np.geomspace(0.3, fs / 4, 5)
    p = np.exp(-2 * np.pi * f / fs)
    w = f ** ((2.0 - cfg.background_exponent) / 2.0)  # a_k^2 ~ f_k^(2-chi): the sum follows f^-chi
    b, a = signal.invresz(w, p, [])
    var = float(np.sum(np.outer(w, w) / (1 - np.outer(p, p))))
    return signal.tf2sos(np.real(b), np.real(a)), np.sqrt(var)


def _beta_envelope(cfg: SimConfig, rng, moving: np.ndarray) -> np.ndarray:
    """(n_bins, 2) burst envelopes: bursts of ~150 ms, rate suppressed during movement."""
    bw = cfg.bin_width
    rate = cfg.beta_burst_hz * (1.0 - cfg.beta_move_suppression * moving)
    ev = (rng.uniform(0, 1, (len(moving), 2)) < (rate * bw)[:, None]) * rng.uniform(0.6, 1.4, (len(moving), 2))
    k = np.arange(-int(0.15 / bw), int(0.15 / bw) + 1) * bw
    win = np.exp(-0.5 * (k / 0.05) ** 2)
    return signal.fftconvolve(ev, win[:, None], axes=0, mode="same").clip(0, None)


def _lfp(cfg: SimConfig, subj: _Subject, day: _Day, z: np.ndarray, pooled: np.ndarray, beta_env: np.ndarray,
         seed: int, index: int) -> np.ndarray:  # fmt: skip
    """(n_samples, C) float32 microvolts, generated in blocks with carried filter state."""
    fs, C, k = cfg.lfp_rate, cfg.n_channels, cfg.samples_per_bin
    n_bins = len(z)
    out = np.empty((n_bins * k, C), np.float32)
    bg_sos, bg_sd = _background_sos(cfg)
    nyq = fs / 2
    hg_sos = signal.butter(1, [min(70.0, 0.3 * nyq), min(200.0, 0.9 * nyq)], "bandpass", fs=fs, output="sos")
    _, hg_gain = signal.sosfreqz(hg_sos, worN=[min(120.0, 0.5 * nyq)], fs=fs)
    hg_sd = np.sqrt(2 * (min(200.0, 0.9 * nyq) - min(70.0, 0.3 * nyq)) / fs)  # band share of white variance
    from ._kernels import lfp_block

    bg_zi = np.zeros((bg_sos.shape[0], 2, C))
    hg_zi = np.zeros((hg_sos.shape[0], 2, C))
    sh = np.sqrt(cfg.background_shared)
    ind = np.sqrt(1.0 - cfg.background_shared)
    lat_w = cfg.lfp_latent_uv * day.lfp_scale * subj.lat_maps.T  # (C, d)
    bg_w = (cfg.background_uv / bg_sd * sh * subj.bg_maps / np.sqrt(subj.bg_maps.shape[0])).astype(np.float32)  # (S, C)
    # the low-rank parts in one matrix: latent potential (d), beta bursts (2), line noise (1);
    # gained and put in column order here, so the kernel only adds them
    low_w = np.concatenate([lat_w, cfg.beta_uv * subj.beta_maps.T, cfg.line_uv * subj.line_gain[:, None]], 1)
    low_w = (low_w * day.gain[:, None])[day.perm].T.astype(np.float32)  # (d + 3, C)
    beta_f = np.array([20.0, 26.0])
    tc = (np.arange(n_bins) + 0.5) * cfg.bin_width
    block_bins = max(1, int(round(cfg.block_s / cfg.bin_width)))
    gain = day.gain.astype(np.float64)
    perm = day.perm.astype(np.int64)
    bg_in = cfg.background_uv / bg_sd * ind
    hg_scale = cfg.hg_uv / hg_sd / max(abs(hg_gain[0]), 1e-6)
    d = z.shape[1]
    for blk, b0 in enumerate(range(0, n_bins, block_bins)):
        b1 = min(n_bins, b0 + block_bins)
        rng = np.random.default_rng([seed, index, 2001, blk])
        ns = (b1 - b0) * k
        t = (b0 * k + np.arange(ns)) / fs
        # one white draw per channel feeds the 1/f background (plus shared sources), the
        # amplifier noise and the high-gamma carrier
        w = rng.standard_normal((ns, C), dtype=np.float32)
        shared = rng.standard_normal((ns, bg_w.shape[0]), dtype=np.float32) @ bg_w
        # latent potential (interpolated from bin centres), beta bursts, line noise
        low = np.empty((ns, d + 3), np.float32)
        for j in range(d):
            low[:, j] = np.interp(t, tc, z[:, j])
        ph = 2 * np.pi * t
        for j in range(2):
            low[:, d + j] = np.interp(t, tc, beta_env[:, j]) * np.cos(beta_f[j] * ph + 1.3 * j)
        low[:, d + 2] = np.sin(cfg.line_freq * ph)
        lfp_block(w, shared, bg_in, bg_sos, bg_zi, hg_sos, hg_zi, pooled[b0:b1], k, hg_scale, cfg.noise_uv, gain,
                  low @ low_w, perm, out[b0 * k : b1 * k])  # fmt: skip
    return out


def _pooled(cfg: SimConfig, subj: _Subject, day: _Day, spikes: np.ndarray, rng) -> np.ndarray:
    """(n_bins, C) high-gamma envelope: counts of recorded units near each electrode, smoothed a
    little, normalised to mean 1, times log-normal noise (not the true rates)."""
    d2 = ((subj.unit_pos[day.units][:, None, :] - subj.pos[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * cfg.hg_radius**2)).astype(np.float32)  # (U, C)
    p = spikes.astype(np.float32) @ w
    p[1:] += 0.5 * p[:-1]  # a little smoothing across bins
    p /= p.mean(0) + 1e-6
    p *= np.exp(cfg.hg_noise * rng.standard_normal(p.shape) - 0.5 * cfg.hg_noise**2)
    return np.sqrt(np.clip(p, 0.0, None)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# public API


def simulate_session(cfg: SimConfig, session_index: int = 0, seed: int = 0) -> Session:
    """One session (day `session_index` of subject `cfg.subject_seed`, recording `seed`)."""
    subj = _subject(cfg)
    day = _day(cfg, subj, session_index)
    rng = np.random.default_rng([seed, session_index, 2000])
    beh, z, moving = latents_from_kinematics(cfg, subj, rng, cfg.n_bins)
    spikes = spikes_from_latents(cfg, day, subj.log_base[day.units], z, rng)
    pooled = _pooled(cfg, subj, day, spikes, rng)
    beta_env = _beta_envelope(cfg, rng, moving)
    lfp = _lfp(cfg, subj, day, z, pooled, beta_env, seed, session_index)
    meta = {"simulator": "offline.data.simulate", "session_index": session_index, "seed": seed,
            "sim_config": json.loads(json.dumps(asdict(cfg))), "lfp_unit": "uV"}  # fmt: skip (JSON-plain: NWB round trip)
    return Session(f"{cfg.subject}-s{session_index:02d}", cfg.subject, cfg.bin_width, spikes, day.units.astype(np.int64),
                   lfp, cfg.lfp_rate, day.perm.astype(np.int64), beh, list(BEHAVIOR_NAMES), 0.0, z, meta)  # fmt: skip


def simulate_dataset(cfg: SimConfig, n_sessions: int, seed: int = 0) -> list[Session]:
    """`n_sessions` days of one subject, held in memory (use write_dataset for large ones)."""
    return [simulate_session(cfg, i, seed) for i in range(n_sessions)]


def write_dataset(cfg: SimConfig, n_sessions: int, seed: int, out_dir: str | Path, log=print) -> list[Path]:
    """Simulate and write one NWB file per session, one session in memory at a time; also
    writes <out_dir>/simulation.json (config, files, timings)."""
    from .nwb import write_session

    manifest = {"config": asdict(cfg), "n_sessions": n_sessions, "seed": seed}
    return write_sessions(lambda i: simulate_session(cfg, i, seed), write_session, n_sessions, out_dir, manifest, log)


def write_sessions(simulate, write, n_sessions: int, out_dir: str | Path, manifest: dict, log=print, tag: str = "") -> list[Path]:
    """`write(simulate(i), <out_dir>/<session_id>.nwb)` (-> the path) for each session i, one
    session in memory at a time; then <out_dir>/simulation.json: `manifest`, the files and the
    timings. `tag` opens the parenthesis of each `log` line."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, timings = [], []
    for i in range(n_sessions):
        t0 = time.perf_counter()
        s = simulate(i)
        t1 = time.perf_counter()
        p = write(s, out / f"{s.session_id}.nwb")
        t2 = time.perf_counter()
        timings.append({"session": s.session_id, "simulate_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2),
                        "n_units": int(s.spikes.shape[1])})  # fmt: skip
        if log:
            log(f"[simulate] {p} ({tag}{s.n_bins} bins, {s.spikes.shape[1]} units, {s.lfp.shape[1]} ch @ {s.lfp_rate:g} Hz): "
                f"simulated {t1 - t0:.1f} s, written {t2 - t1:.1f} s")  # fmt: skip
        paths.append(p)
        del s
    (out / "simulation.json").write_text(json.dumps({**manifest, "files": [p.name for p in paths], "timings": timings},
                                                    indent=1))  # fmt: skip
    return paths
