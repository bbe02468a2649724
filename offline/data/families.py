"""Generative families: the same data contract (`offline.data.session.Session`), different
assumptions about how behaviour reaches spikes and LFP. A method tuned to one simulator is
checked on the others (docs/families.md has the table of what reaches what).

    from offline.data.families import FAMILIES, FamilyConfig, simulate_family, write_family
    sessions = simulate_family("dynamics", 4, seed=0, cfg=FamilyConfig(n_channels=32, duration_s=60))
    paths = write_family("hga", 6, seed=0, out_dir="sim_hga/")
    s = offline.data.nwb.read_session(paths[0], FAMILIES["hga"].mapping)   # its layout needs a mapping

Families (behaviour outputs x, y, vx, vy, grip at every 10 ms bin centre, as the simulator's):

- "linear" (`offline.data.simulate`, unchanged): latents are a linear map of the kinematics
  100 ms ahead plus rotational kicks and AR(1) noise; spikes are Poisson in the latents; the LFP
  carries the same latents linearly in a low-frequency potential (plus a high-gamma envelope
  of pooled spiking, beta bursts, 1/f background). Standard NWB layout.
- "dynamics": a latent dynamical system (two damped rotations, a grip mode, a slow mode that
  never reaches behaviour), driven by sparse command kicks, CAUSES behaviour: velocity and
  grip read the state out `lead` (50-150 ms, drawn per session) later. Spikes are point
  events on a 1 ms grid (Bernoulli at rate exp(b + c.x)), binned to 10 ms. The LFP is a
  low-rank (3) mixture of a slow potential, a low-passed projection of the state, with
  per-channel noise: it sees only part of the state. Standard NWB layout.
- "hga": the same kind of dynamics, but the LFP's behavioural information sits in
  high-frequency power (70-200 Hz) whose envelope follows local multi-unit activity (MUA of
  many unsorted neurons around each electrode, tuned like the sorted units near it; Flint et
  al. 2012, Stavisky et al. 2015); its low-frequency potential is weak. The `lfp` chain's
  50 Hz low-pass removes high gamma: only a chain with high-gamma band power (`lmp_bands`)
  can decode it. Non-default NWB layout: behaviour in processing/task (mapping
  `behavior_module = "task"`).

Nuisances of "dynamics" and "hga" (FamilyConfig): dead channels (a subject's fixed set, flat
but for tiny noise), noisy channels (a new set per session, large white noise), per-session
per-channel gains, common-mode noise (one 1/f + line source on every channel, which CAR
removes), unit turnover across sessions (a share of the recorded units replaced day by day)
and tuning drift.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import signal

from .session import Session
from .simulate import BEHAVIOR_NAMES, SimConfig, _BinGrid, _grid, _smooth_maps, simulate_session, write_sessions


@dataclass(frozen=True)
class FamilyConfig(_BinGrid):
    duration_s: float = 120.0
    bin_width: float = 0.01
    lfp_rate: float = 1000.0
    n_channels: int = 96
    subject: str = ""  # "": the family's name
    subject_seed: int = 0
    # units
    unit_pool: int = 200
    n_units: int = 100
    unit_turnover: float = 0.15  # share of recorded units replaced from one session to the next
    tuning_drift: float = 0.15
    base_rate_hz: float = 8.0
    tuning_gain: float = 0.8  # log-rate per latent SD
    # dynamics and behaviour
    lead_s: tuple[float, float] = (0.05, 0.15)  # neural lead over behaviour, drawn per session
    command_hz: float = 1.2  # reach commands (kicks of the rotational modes) per second
    grasp_hz: float = 0.7
    autonomous: float = 0.25  # share of the rotations' drive that is noise (not commands)
    # LFP (microvolts)
    potential_uv: float = 12.0  # dynamics: the slow potential's amplitude
    potential_rank: int = 3  # dynamics: rank of the potential (of the 6-dim state)
    hg_uv: float = 6.0  # hga: high-gamma amplitude at mean MUA
    mua_hz: float = 2000.0  # hga: multi-unit rate per electrode (many unsorted neurons)
    lowfreq_uv: float = 1.5  # hga: weak low-frequency potential
    background_uv: float = 20.0  # per-channel 1/f-like noise
    noise_uv: float = 3.0  # white amplifier noise
    common_uv: float = 15.0  # common-mode source (every channel alike)
    line_uv: float = 3.0
    line_freq: float = 60.0
    # nuisances
    dead_channels: float = 0.03  # share of the subject's channels that are dead in every session
    noisy_channels: float = 0.04  # share of channels that are noisy, drawn per session
    noisy_uv: float = 60.0
    session_gain_sd: float = 0.2  # per-session, per-channel log gain

    def __post_init__(self):
        self._check_bin_grid()
        if self.lfp_rate < 500:
            raise ValueError(f"lfp_rate must be >= 500 Hz (1 ms spike grid, 70-200 Hz band), got {self.lfp_rate}")
        if not 0 < self.n_units <= self.unit_pool or self.n_channels < 4:
            raise ValueError(f"need 0 < n_units ({self.n_units}) <= unit_pool ({self.unit_pool}) and n_channels >= 4")
        if not 0.0 <= self.lead_s[0] <= self.lead_s[1] < 1.0:
            raise ValueError(f"lead_s must be (low, high) seconds, got {self.lead_s}")


@dataclass(frozen=True)
class Family:
    name: str
    simulate: object  # (cfg, session_index, seed) -> Session
    mapping: dict = field(default_factory=dict)  # NWBMapping fields its files need (read_session)
    layout: str = "standard"  # "standard" (nwb.write_session) or "task" (behaviour in processing/task)
    decodable_by: str = "lfp, lmp_bands"  # the chains whose features carry its behaviour


# ------------------------------------------------------------------------------------------
# shared pieces


def _one_pole(x: np.ndarray, tau_samples: float) -> np.ndarray:
    a = np.exp(-1.0 / max(tau_samples, 1e-9))
    return signal.lfilter([1 - a], [1.0, -a], x, axis=0)


def _pink(rng, n: int, k: int, fs: float) -> np.ndarray:
    """(n, k) float32 1/f-like noise, unit SD: one white draw through a sum of 4 one-pole
    filters (corners 0.5-60 Hz, weights 1/sqrt(f)) as one IIR filter."""
    f = np.array([0.5, 3.0, 15.0, 60.0])
    p = np.exp(-2 * np.pi * f / fs)
    g = np.sqrt(1 - p * p) / np.sqrt(f)
    b, a = signal.invresz(g, p, [])
    sos = signal.tf2sos(np.real(b), np.real(a))
    out = signal.sosfilt(sos, rng.standard_normal((n, k), dtype=np.float32), axis=0).astype(np.float32)
    return out / (out.std() + 1e-12)


def _dynamics(cfg: FamilyConfig, rng, n_ms: int, lead_ms: int):
    """The latent state on a 1 ms grid and the behaviour it causes.

    State (6): two damped rotations (1.2 and 2.0 Hz, tau 0.35 s; complex, 4 dims), a grip mode
    (tau 0.25 s) and a slow mode (tau 1 s) that never reaches behaviour. Returns the state
    x (n_ms, 6) on the session's time base and the behaviour (n_ms, 5) = readout of the state
    `lead_ms` earlier (the neural activity leads)."""
    dt = 1e-3
    n = n_ms + lead_ms
    kick = np.zeros((n, 2), complex)
    t_cmd = np.flatnonzero(rng.random(n) < cfg.command_hz * dt)
    th = rng.uniform(0, 2 * np.pi, len(t_cmd))
    kick[t_cmd, 0] = np.exp(1j * th)
    kick[t_cmd, 1] = 0.7 * np.exp(1j * (th + 1.1))
    a = cfg.autonomous
    noise = (rng.standard_normal((n, 2)) + 1j * rng.standard_normal((n, 2))) * 0.012
    rot = np.empty((n, 2), complex)
    for j, f in enumerate((1.2, 2.0)):
        pole = np.exp(-dt / 0.35 + 2j * np.pi * f * dt)
        drive = np.sqrt(1 - a) * kick[:, j] + np.sqrt(a) * noise[:, j]
        rot[:, j] = signal.lfilter([1.0], [1.0, -pole], drive)
    grasp = np.zeros(n)
    t_g = np.flatnonzero(rng.random(n) < cfg.grasp_hz * dt)
    grasp[t_g] = rng.uniform(0.6, 1.4, len(t_g))
    grip_mode = _one_pole(grasp, 250.0) * 250.0 + 0.02 * _one_pole(rng.standard_normal(n), 100.0) * 10
    slow = _one_pole(rng.standard_normal(n), 1000.0) * np.sqrt(2000.0)
    x = np.column_stack([rot.real, rot.imag, grip_mode, slow])[:, [0, 2, 1, 3, 4, 5]]
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    # behaviour: a fixed (subject) readout of the state, lead_ms later
    sub = np.random.default_rng([cfg.subject_seed, 3101])
    wv = sub.standard_normal((4, 2))
    past = x[:n_ms]  # the state lead_ms before each behaviour sample
    v = past[:, :4] @ wv
    v = 8.0 * (v - v.mean(0)) / v.std(0)  # cm/s
    pos = _one_pole(v, 2000.0) * 2000.0 * dt  # leaky integral (tau 2 s), cm
    grip = 3.0 * np.log1p(np.exp(2.0 * past[:, 4] - 1.0))
    beh = np.column_stack([pos, v, grip])
    return x[lead_ms:], beh


def _bin_mean(x: np.ndarray, k: int) -> np.ndarray:
    n = len(x) // k
    return x[: n * k].reshape(n, k, *x.shape[1:]).mean(1)


def _units(cfg: FamilyConfig, index: int) -> np.ndarray:
    """Pool indices recorded on day `index`: `unit_turnover` of them replaced per day."""
    rng0 = np.random.default_rng([cfg.subject_seed, 3201])
    active = np.sort(rng0.permutation(cfg.unit_pool)[: cfg.n_units])
    for k in range(1, index + 1):
        r = np.random.default_rng([cfg.subject_seed, 3202, k])
        n_swap = int(round(cfg.unit_turnover * cfg.n_units))
        pool = np.setdiff1d(np.arange(cfg.unit_pool), active)
        n_swap = min(n_swap, len(pool))
        out = r.choice(len(active), n_swap, replace=False)
        active = np.sort(np.concatenate([np.delete(active, out), r.choice(pool, n_swap, replace=False)]))
    return active


def _spike_counts(rng, logr_fn, n_ms: int, n_units: int, k: int, block: int = 10000) -> np.ndarray:
    """Point events on the 1 ms grid (Bernoulli, p = rate x 1 ms), binned by `k` ms; the log
    rates (log Hz) of a block of ms come from logr_fn(a, b) -> (b - a, n_units)."""
    out = np.zeros((n_ms // k, n_units), np.int32)
    for a in range(0, n_ms, block):
        b = min(n_ms, a + block)
        p = np.exp(np.clip(logr_fn(a, b), -4.0, 5.0)) * 1e-3
        ev = rng.random(p.shape, dtype=np.float32) < p
        out[a // k : b // k] = ev.reshape(-1, k, n_units).sum(1)
    return out


def _nuisances(cfg: FamilyConfig, rng, lfp: np.ndarray, index: int) -> dict:
    """In place: common-mode source, line noise, per-session gains, noisy and dead channels.
    Returns what was done (JSON-plain, for the session's meta)."""
    n, C = lfp.shape
    fs = cfg.lfp_rate
    t = np.arange(n) / fs
    common = cfg.common_uv * _pink(rng, n, 1, fs)[:, 0] + cfg.line_uv * np.sin(2 * np.pi * cfg.line_freq * t + rng.uniform(0, 6.3))
    lfp += common[:, None].astype(np.float32)
    gain = np.exp(cfg.session_gain_sd * rng.standard_normal(C)).astype(np.float32)
    lfp *= gain
    sub = np.random.default_rng([cfg.subject_seed, 3301])
    dead = np.sort(sub.choice(C, int(round(cfg.dead_channels * C)), replace=False))
    live = np.setdiff1d(np.arange(C), dead)
    noisy = np.sort(rng.choice(live, min(len(live), int(round(cfg.noisy_channels * C))), replace=False))
    if len(noisy):
        lfp[:, noisy] += cfg.noisy_uv * rng.standard_normal((n, len(noisy)), dtype=np.float32)
    if len(dead):
        lfp[:, dead] = 0.05 * rng.standard_normal((n, len(dead)), dtype=np.float32)
    return {"dead_channels": dead.tolist(), "noisy_channels": noisy.tolist(), "gain_sd": cfg.session_gain_sd}


def _session(cfg: FamilyConfig, family: str, index: int, seed: int, spikes, units, lfp, beh_ms, x_ms, meta) -> Session:
    k = int(round(cfg.bin_width * 1000))
    n_bins = cfg.n_bins
    beh = beh_ms[k // 2 :: k][:n_bins].astype(np.float32)  # at bin centres
    z = _bin_mean(x_ms, k)[:n_bins].astype(np.float32)
    meta = {"simulator": "offline.data.families", "family": family, "session_index": index, "seed": seed,
            "family_config": json.loads(json.dumps(asdict(cfg))), "lfp_unit": "uV", **meta}  # fmt: skip
    subject = cfg.subject or family
    return Session(f"{subject}-s{index:02d}", subject, cfg.bin_width, spikes[:n_bins], units.astype(np.int64),
                   lfp[: n_bins * cfg.samples_per_bin], cfg.lfp_rate, np.arange(cfg.n_channels, dtype=np.int64), beh,
                   list(BEHAVIOR_NAMES), 0.0, z, meta)  # fmt: skip


def _to_lfp_rate(x_ms: np.ndarray, cfg: FamilyConfig) -> np.ndarray:
    """A 1 ms-grid signal at the LFP rate (repeat or take every k-th ms)."""
    r = cfg.lfp_rate / 1000.0
    if abs(r - round(r)) < 1e-9:
        return np.repeat(x_ms, int(round(r)), axis=0)
    idx = (np.arange(int(len(x_ms) * r)) / r).astype(int)
    return x_ms[idx]


def _day_tuning(cfg: FamilyConfig, base: np.ndarray, index: int) -> np.ndarray:
    walk = np.zeros_like(base)
    for k in range(1, index + 1):
        walk += cfg.tuning_drift * np.random.default_rng([cfg.subject_seed, 3203, k]).standard_normal(base.shape) / np.sqrt(base.shape[1])
    return (base + walk) / np.sqrt(1.0 + index * cfg.tuning_drift**2)


# ------------------------------------------------------------------------------------------
# families


def simulate_linear(cfg: FamilyConfig, index: int = 0, seed: int = 0) -> Session:
    """The project's simulator (`offline.data.simulate`) at this family config's size."""
    sim = SimConfig(duration_s=cfg.duration_s, bin_width=cfg.bin_width, lfp_rate=cfg.lfp_rate, n_channels=cfg.n_channels,
                    subject=cfg.subject or "linear", subject_seed=cfg.subject_seed, unit_pool=max(cfg.unit_pool, cfg.n_units),
                    n_units=cfg.n_units, n_units_jitter=min(cfg.n_units - 1, max(1, cfg.n_units // 4)))  # fmt: skip
    s = simulate_session(sim, index, seed)
    s.meta["family"] = "linear"
    return s


def simulate_dynamics(cfg: FamilyConfig, index: int = 0, seed: int = 0) -> Session:
    """Latent dynamics cause behaviour (neural lead 50-150 ms); 1 ms spike events; LFP = a
    rank-`potential_rank` slow potential of the state + per-channel noise + nuisances."""
    rng = np.random.default_rng([seed, index, 3000])
    sub = np.random.default_rng([cfg.subject_seed, 3001])
    n_ms = cfg.n_bins * int(round(cfg.bin_width * 1000))
    lead = float(rng.uniform(*cfg.lead_s))
    x, beh = _dynamics(cfg, rng, n_ms, int(round(lead * 1000)))
    d = x.shape[1]
    tuning_pool = cfg.tuning_gain * sub.standard_normal((cfg.unit_pool, d)) / np.sqrt(d / 2)
    base_pool = np.log(cfg.base_rate_hz) + 0.6 * sub.standard_normal(cfg.unit_pool)
    units = _units(cfg, index)
    tun = _day_tuning(cfg, tuning_pool, index)[units]
    base = base_pool[units]
    spikes = _spike_counts(rng, lambda a, b: base + x[a:b] @ tun.T, n_ms, len(units), int(round(cfg.bin_width * 1000)))
    # LFP: a low-rank slow potential (15 Hz one-pole of a projection of the state) + noise
    pos = _grid(cfg.n_channels)
    proj = sub.standard_normal((d, cfg.potential_rank)) / np.sqrt(d)
    maps = _smooth_maps(sub, pos, cfg.potential_rank)  # (r, C)
    pot = _one_pole(x @ proj, 1000.0 / (2 * np.pi * 15.0))
    pot = (pot - pot.mean(0)) / (pot.std(0) + 1e-12)
    lfp = (cfg.potential_uv * _to_lfp_rate(pot, cfg) @ maps).astype(np.float32)
    n = len(lfp)
    lfp += (cfg.background_uv * _pink(rng, n, cfg.n_channels, cfg.lfp_rate) + cfg.noise_uv * rng.standard_normal((n, cfg.n_channels))).astype(np.float32)
    nz = _nuisances(cfg, rng, lfp, index)
    return _session(cfg, "dynamics", index, seed, spikes, units, lfp, beh, x, {"lead_s": lead, **nz})


def simulate_hga(cfg: FamilyConfig, index: int = 0, seed: int = 0) -> Session:
    """Behaviour in high-gamma power: each electrode's 70-200 Hz amplitude follows the local
    multi-unit activity; the low-frequency potential is weak."""
    rng = np.random.default_rng([seed, index, 4000])
    sub = np.random.default_rng([cfg.subject_seed, 4001])
    k_ms = int(round(cfg.bin_width * 1000))
    n_ms = cfg.n_bins * k_ms
    lead = float(rng.uniform(*cfg.lead_s))
    x, beh = _dynamics(replace(cfg, subject_seed=cfg.subject_seed + 7919), rng, n_ms, int(round(lead * 1000)))
    d = x.shape[1]
    C = cfg.n_channels
    pos = _grid(C)
    local = 0.7 * _smooth_maps(sub, pos, d).T / np.sqrt(d / 2)  # (C, d): the tuning around each electrode
    home = sub.integers(0, C, cfg.unit_pool)  # the electrode every pool unit sits at
    tuning_pool = local[home] + 0.5 * cfg.tuning_gain * sub.standard_normal((cfg.unit_pool, d)) / np.sqrt(d / 2)
    base_pool = np.log(cfg.base_rate_hz) + 0.6 * sub.standard_normal(cfg.unit_pool)
    units = _units(cfg, index)
    tun = _day_tuning(cfg, tuning_pool, index)[units]
    base = base_pool[units]
    spikes = _spike_counts(rng, lambda a, b: base + x[a:b] @ tun.T, n_ms, len(units), k_ms)
    # MUA of many unsorted neurons per electrode -> high-gamma envelope (sqrt of smoothed MUA)
    env = np.empty((n_ms, C), np.float32)
    for a in range(0, n_ms, 20000):
        b = min(n_ms, a + 20000)
        rate = cfg.mua_hz * np.exp(np.clip(x[a:b] @ local.T - 0.5 * (local**2).sum(1), -4, 4))
        env[a:b] = rng.poisson(rate * 1e-3).astype(np.float32)
    env = np.sqrt(_one_pole(env, 5.0) / (env.mean(0) + 1e-9)).astype(np.float32)
    fs = cfg.lfp_rate
    n = n_ms * int(round(fs / 1000.0)) if fs >= 1000 else int(n_ms * fs / 1000)
    hg = signal.sosfilt(signal.butter(4, [70.0, min(200.0, 0.45 * fs)], "bandpass", fs=fs, output="sos"),
                        rng.standard_normal((n, C), dtype=np.float32), axis=0)  # fmt: skip
    hg /= hg.std() + 1e-12
    lfp = (cfg.hg_uv * hg * _to_lfp_rate(env, cfg)[:n]).astype(np.float32)
    # the weak low-frequency potential: 2 smooth maps of a low-passed projection of the state
    proj = sub.standard_normal((d, 2)) / np.sqrt(d)
    pot = _one_pole(x @ proj, 1000.0 / (2 * np.pi * 10.0))
    pot = (pot - pot.mean(0)) / (pot.std(0) + 1e-12)
    lfp += (cfg.lowfreq_uv * _to_lfp_rate(pot, cfg)[:n] @ _smooth_maps(sub, pos, 2)).astype(np.float32)
    lfp += (cfg.background_uv * _pink(rng, n, C, fs) + cfg.noise_uv * rng.standard_normal((n, C))).astype(np.float32)
    nz = _nuisances(cfg, rng, lfp, index)
    return _session(cfg, "hga", index, seed, spikes, units, lfp, beh, x, {"lead_s": lead, **nz})


FAMILIES: dict[str, Family] = {
    "linear": Family("linear", simulate_linear),
    "dynamics": Family("dynamics", simulate_dynamics),
    "hga": Family("hga", simulate_hga, mapping={"behavior_module": "task"}, layout="task", decodable_by="lmp_bands"),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown simulator family {name!r}; one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def simulate_family(name: str, n_sessions: int, seed: int = 0, cfg: FamilyConfig | None = None) -> list[Session]:
    """`n_sessions` days of one subject of family `name`, in memory."""
    fam, cfg = family(name), cfg or FamilyConfig()
    return [fam.simulate(cfg, i, seed) for i in range(n_sessions)]


def write_family_session(name: str, session: Session, path: str | Path) -> Path:
    """One session as NWB (offline.data.nwb.write_session), in the family's layout: "task"
    moves the behaviour module to processing/task and drops rtdecode's scratch metadata, so the
    default mapping finds no behaviour; `NWBMapping(behavior_module="task")` (the family's
    `mapping`) does, with names from the series (position_x, position_y, velocity_x, velocity_y,
    grip) and bins of 0.01 s."""
    from .nwb import write_session

    path = write_session(session, path)
    if family(name).layout == "task":
        import h5py

        with h5py.File(path, "r+") as f:  # as a lab's own file would be: no rtdecode metadata either
            f.move("processing/behavior", "processing/task")
            if "scratch/rtdecode" in f:
                del f["scratch/rtdecode"]
    return path


def write_family(name: str, n_sessions: int, seed: int, out_dir: str | Path, cfg: FamilyConfig | None = None,
                 log=print) -> list[Path]:  # fmt: skip
    """Simulate and write one NWB file per session (one in memory at a time), plus
    <out_dir>/simulation.json (family, config, mapping its files need, timings)."""
    fam, cfg = family(name), cfg or FamilyConfig()
    manifest = {"family": name, "config": asdict(cfg), "n_sessions": n_sessions, "seed": seed, "nwb_mapping": fam.mapping}
    return write_sessions(lambda i: fam.simulate(cfg, i, seed), lambda s, p: write_family_session(name, s, p), n_sessions,
                          out_dir, manifest, log, tag=f"family {name}, ")  # fmt: skip
