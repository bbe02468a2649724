"""One recording session, and a multi-session dataset with leak-free splits.

    s = Session(session_id="S01", subject="M", bin_width=0.01, spikes=counts, unit_ids=ids,
                lfp=raw, lfp_rate=1000.0, channel_ids=ch, behavior=beh, behavior_names=["vx", "vy"])
    ds = SessionSet([s0, s1, s2, s3])
    split = ds.split(held_out=1, test_fraction=0.2, guard_bins=100, min_bins=32)
    split.train_sessions, split.held_out_sessions, split.time["S01"]   # (train slice, test slice)

Units: `behavior_units[k]` is the unit of `behavior[:, k]` ("cm", "cm/s", "N"; "" unknown), read
from NWB series' `unit` attributes; it travels into the bundle's manifest (outputs.units) and
the runtime's `hello` message. A simulator session (meta "simulator") without units gets the
simulator's (`SIMULATOR_UNITS`).

Time base: bin i covers [t0 + i*bin_width, t0 + (i+1)*bin_width); `spikes[i]` counts the
spikes in it and `behavior[i]` is the behaviour at the bin's centre. The LFP starts at t0
and holds exactly n_bins * round(lfp_rate * bin_width) samples, so the signal chain
(`rtdecode.dsp.compute_features`) makes exactly n_bins bins from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# units of offline.data.simulate's outputs: cm from the workspace centre, N of grip force
SIMULATOR_UNITS = {"x": "cm", "y": "cm", "vx": "cm/s", "vy": "cm/s", "grip": "N"}


class SessionError(ValueError):
    """A session whose arrays do not fit together; the message names the session and field."""


@dataclass
class Session:
    session_id: str
    subject: str
    bin_width: float  # s (0.01)
    spikes: np.ndarray  # (n_bins, n_units) int counts
    unit_ids: np.ndarray  # (n_units,)
    lfp: np.ndarray  # (n_samples, n_channels) float32 raw LFP (or a lazy array from offline.data.nwb)
    lfp_rate: float  # Hz
    channel_ids: np.ndarray  # (n_channels,) physical electrode ids, in column order
    behavior: np.ndarray  # (n_bins, n_out) float32
    behavior_names: list[str]
    t0: float = 0.0  # s, start of bin 0 and of the LFP
    latents: np.ndarray | None = None  # (n_bins, d) true latents (simulator only)
    meta: dict = field(default_factory=dict)
    behavior_units: list[str] = field(default_factory=list)  # one per behaviour column; [] when unknown

    def __post_init__(self):
        self.behavior_units = [str(u) for u in (self.behavior_units or [])]
        if not self.behavior_units and self.meta.get("simulator") == "offline.data.simulate":
            self.behavior_units = [SIMULATOR_UNITS.get(n, "") for n in self.behavior_names]
        self.validate()

    @property
    def n_bins(self) -> int:
        return int(self.spikes.shape[0])

    @property
    def samples_per_bin(self) -> int:
        return int(round(self.lfp_rate * self.bin_width))

    @property
    def duration_s(self) -> float:
        return self.n_bins * self.bin_width

    def validate(self) -> None:
        where = f"session {self.session_id!r}"
        spb = self.lfp_rate * self.bin_width
        if self.bin_width <= 0 or self.lfp_rate <= 0 or abs(spb - round(spb)) > 1e-6 or round(spb) < 1:
            raise SessionError(f"{where}: lfp_rate {self.lfp_rate} Hz x bin_width {self.bin_width} s = {spb:g} samples "
                               "per bin; it must be a whole number >= 1 (resample the LFP or change the bin width)")  # fmt: skip
        if self.spikes.ndim != 2 or self.behavior.ndim != 2 or len(self.lfp.shape) != 2:
            raise SessionError(f"{where}: spikes, behavior and lfp must be 2-D, got {self.spikes.shape}, "
                               f"{self.behavior.shape}, {self.lfp.shape}")  # fmt: skip
        n = self.n_bins
        checks = [
            ("behavior rows", self.behavior.shape[0], n),
            ("lfp samples", self.lfp.shape[0], n * self.samples_per_bin),
            ("unit_ids", len(self.unit_ids), self.spikes.shape[1]),
            ("channel_ids", len(self.channel_ids), self.lfp.shape[1]),
            ("behavior_names", len(self.behavior_names), self.behavior.shape[1]),
        ]
        if self.behavior_units:
            checks.append(("behavior_units", len(self.behavior_units), self.behavior.shape[1]))
        if self.latents is not None:
            checks.append(("latents rows", self.latents.shape[0], n))
        for what, got, want in checks:
            if got != want:
                raise SessionError(f"{where}: {what} = {got}, expected {want} (n_bins {n}, "
                                   f"{self.samples_per_bin} LFP samples per bin): crop or re-bin so they cover the same time")  # fmt: skip

    def time_slice(self, bins: slice) -> "Session":
        """The same session restricted to a block of bins (LFP cut to match)."""
        lo, hi, _ = bins.indices(self.n_bins)
        k = self.samples_per_bin
        return Session(self.session_id, self.subject, self.bin_width, self.spikes[lo:hi], self.unit_ids,
                       self.lfp[lo * k : hi * k], self.lfp_rate, self.channel_ids, self.behavior[lo:hi],
                       list(self.behavior_names), self.t0 + lo * self.bin_width,
                       None if self.latents is None else self.latents[lo:hi], dict(self.meta),
                       list(self.behavior_units))  # fmt: skip


@dataclass(frozen=True)
class SessionSplit:
    """Which sessions train, which are held out whole, and every session's time blocks."""

    train_sessions: tuple[str, ...]
    held_out_sessions: tuple[str, ...]
    time: dict  # session_id -> (train slice, test slice), separated by guard_bins
    guard_bins: int

    def check(self, n_bins: dict) -> None:
        """Raise if any split leaks: a session in both roles, or train/test blocks that touch."""
        both = set(self.train_sessions) & set(self.held_out_sessions)
        if both:
            raise SessionError(f"sessions {sorted(both)} are both training and held-out")
        for sid, (tr, te) in self.time.items():
            if tr.start < 0 or te.stop > n_bins[sid] or tr.stop + self.guard_bins > te.start:
                raise SessionError(f"session {sid!r}: train bins {tr.start}:{tr.stop} and test bins {te.start}:{te.stop} "
                                   f"are not separated by {self.guard_bins} guard bins within {n_bins[sid]} bins")  # fmt: skip


class SessionSet:
    """An ordered multi-session dataset (all sessions from one channel layout)."""

    def __init__(self, sessions: list[Session]):
        ids = [s.session_id for s in sessions]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise SessionError(f"session ids {dup} occur more than once: a session in two places leaks across splits")
        if not sessions:
            raise SessionError("a SessionSet needs at least one session")
        self.sessions = list(sessions)

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self):
        return iter(self.sessions)

    def __getitem__(self, key: int | str) -> Session:
        if isinstance(key, str):
            for s in self.sessions:
                if s.session_id == key:
                    return s
            raise KeyError(f"no session {key!r}; have {[s.session_id for s in self.sessions]}")
        return self.sessions[key]

    def split(self, held_out: int | tuple[str, ...] | list[str], test_fraction: float = 0.2, guard_bins: int = 100,
              min_bins: int = 32) -> SessionSplit:  # fmt: skip
        """Hold out whole sessions (the last `held_out`, or these ids) for zero-shot tests, and
        split every session's time into train [0, a), a guard gap, and test [a + guard, n)
        (offline.train.windows.split_time)."""
        from offline.train.windows import split_time

        ids = [s.session_id for s in self.sessions]
        if isinstance(held_out, int):
            if not 0 <= held_out < len(ids):
                raise SessionError(f"held_out = {held_out} sessions leaves no training session out of {len(ids)}")
            held = ids[len(ids) - held_out :]
        else:
            held = list(held_out)
            missing = [h for h in held if h not in ids]
            if missing:
                raise SessionError(f"held-out sessions {missing} are not in the dataset {ids}")
        time = {s.session_id: split_time(s.n_bins, test_fraction, guard_bins, min_bins) for s in self.sessions}
        out = SessionSplit(tuple(i for i in ids if i not in held), tuple(held), time, guard_bins)
        out.check({s.session_id: s.n_bins for s in self.sessions})
        return out

    def align_channels(self) -> "SessionSet":
        """Reorder every session's LFP columns to the first session's channel order, by
        channel_ids (undoes a per-session channel reordering). Loads the LFP."""
        ref = [str(c) for c in self.sessions[0].channel_ids]
        out = []
        for s in self.sessions:
            have = [str(c) for c in s.channel_ids]
            if sorted(have) != sorted(ref):
                raise SessionError(f"session {s.session_id!r} has channels {have[:8]}..., session "
                                   f"{self.sessions[0].session_id!r} has {ref[:8]}...: they do not share one layout")  # fmt: skip
            pos = {c: i for i, c in enumerate(have)}
            order = np.array([pos[c] for c in ref])
            lfp = np.asarray(s.lfp)[:, order]
            out.append(Session(s.session_id, s.subject, s.bin_width, s.spikes, s.unit_ids, lfp, s.lfp_rate,
                               np.asarray(self.sessions[0].channel_ids), s.behavior, list(s.behavior_names), s.t0,
                               s.latents, dict(s.meta), list(s.behavior_units)))  # fmt: skip
        return SessionSet(out)
