"""LSL input: resolve, validate, pull without backlog, detect gaps, reconnect.

What this module does, and why (DESIGN.md, "LSL input"):

- `open()` resolves a stream whose *name or type* equals the query, refuses one whose
  channel count, nominal rate or sample format does not match the bundle (both values in
  the message), opens an inlet with a short buffer (`max_buffered_s`), flushes it and
  takes a first clock-offset estimate.
- `pull()` blocks at most `pull_timeout` for the *first* sample and then drains whatever
  else is already queued (up to `max_chunk`) without waiting: the "min_samples=1"
  behaviour, built from two `pull_chunk(dest_obj=...)` calls so that it works with any
  pylsl that has `dest_obj`. A plain `pull_chunk(timeout>0)` would wait for `max_chunk`
  samples, i.e. add `pull_timeout` of latency (measured: 4 ms p50 / 10 ms p99 against
  0.35 / 0.76 ms, 96 ch, 10-sample chunks at 1 kHz, outlet in another process).
  Samples land in the preallocated `data` (float32, C-contiguous) and `timestamps`
  (float64, mapped to this machine's `pylsl.local_clock()` by the inlet's
  `time_correction`, refreshed once a second). Nothing is allocated per pull beyond the
  small objects pylsl itself creates.
- With `spin_s` > 0 (the runtime's default: 0.5 ms) the wait for the first sample of a
  pull blocks only until `spin_s` before the next chunk is due (the last pull's time plus
  its span), then polls with `timeout=0` until the chunk is there (at most `spin_s` past
  due; then it blocks as before). A polling thread's CPU does not go idle, so the chunk is
  taken as soon as liblsl has it, without a wake-up: measured in `rtdecode bench`, transport
  in p50 0.34 against 0.48 ms (medians of 3 and 7 runs), for about 2 % more of a core
  (docs/bench/bench_s5_tail.md).
- Timestamps are *dejittered* (docs/faults.md, "Timestamps"). Acquisition software
  stamps a chunk with `local_clock()` when it pushes it (liblsl back-dates the chunk's
  other samples by the nominal period), so raw stamps carry the pusher's scheduling
  jitter (0-3 ms is common). The source keeps, per inlet segment, an exponentially
  weighted least-squares line of raw stamp against the cumulative sample count (half-life
  `dejitter_halflife_s`, slope free within 1000 ppm of the nominal period once 2 s are in
  the fit) and stamps every sample from that line, clock-corrected; the published stamps
  advance by exactly one fitted period per sample and follow the fit (and updates of the
  clock offset) by slewing at most 500 ppm, never by a step. liblsl's own
  `proc_dejitter` is not used: it smooths stamps but does not tell a lost sample from a
  late chunk, and it would hide the sample-count deficit a gap is detected by.
- A *gap* is a sample-count deficit against that line: the first sample after it is
  stamped more than the tolerance later than the line predicts for it. The tolerance is
  max(`gap_tolerance_s`, 6 x the RMS residual of the fit); `gap_tolerance_s` defaults to
  max(5 ms, 2.5 sample periods). The number of missing samples is the deficit in
  periods, rounded; when the stream is jittery (RMS residual above 0.05 period), the
  source first keeps pulling the chunks that follow, for at most `gap_settle_s`, and
  takes a robust mean of their deficits, so a loss of 37 samples is counted as 37, not
  36 or 38. A deficit that rounds to 0 is a late push, not a loss (counted in
  `stamp_outliers`, no flag: the published clock goes by the sample count). Stamps earlier
  than the line by more than max(10 x the tolerance, 50 ms) are a clock reset: the fit
  restarts there (CLOCK_RESET); less early ones are absorbed (`stamp_outliers`). Losses
  smaller than the tolerance cannot be told from
  jitter and are not reported. The fast path is a few numpy reductions per pull; the
  slow path runs only when one of them trips.
- A stream is *stalled* when no sample arrived for `stall_timeout`, *lost* when liblsl
  reports the outlet gone (inlets are opened with `recover=False`: liblsl's own recovery
  hides a dead stream, DESIGN.md). Either way `connected` turns False, and
  `poll_reconnect()` looks for a matching stream (same name, or same type when the query
  matched the type; a new source_id is fine unless one was pinned) in a background
  `ContinuousResolver`, with exponential backoff, never blocking longer than about
  `pull_timeout`. A stalled stream that resumes on the same inlet needs no reconnect: the
  next pull reports the gap.

Per-pull results: `data[:n]`, `timestamps[:n]`, `t_data` (when the first of them was in
hand, before this module's own work on them), `last_gap_samples`, `last_gap_at`,
`last_flags` (PULL_* bits below, numerically equal to the message flags of
`rtdecode.sinks.zmq`, so the runtime may OR them into a bin's flags). Cumulative counters:
`events` (a `SourceEvents`).
"""

from __future__ import annotations

import collections
import inspect
import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pylsl

try:  # pylsl >= 1.17 keeps its exceptions in pylsl.util
    from pylsl.util import LostError as _LostError
    from pylsl.util import TimeoutError as _LslTimeoutError
except ImportError:  # pragma: no cover - older pylsl
    _LostError = getattr(pylsl, "LostError")
    _LslTimeoutError = getattr(pylsl, "TimeoutError")

log = logging.getLogger(__name__)

_TIMEOUTS = (_LslTimeoutError, TimeoutError)

# per-pull flags (same bit values as rtdecode.sinks.zmq.FLAG_*)
PULL_GAP = 1  # samples missing before `last_gap_at` (== FLAG_GAP)
PULL_NONFINITE = 2  # NaN or Inf among data[:n] (== FLAG_REPAIRED once the runtime repairs them)
PULL_RECONNECTED = 8  # first pull from a new inlet after a reconnect (== FLAG_RECONNECTED)
PULL_STALE = 32  # newest sample older than stale_after_s on arrival (== FLAG_STALE)
PULL_CLOCK_RESET = 64  # stamps earlier than the dejittered clock by more than the tolerance (== FLAG_CLOCK_RESET)
PULL_BACKSTEP = 128  # == FLAG_TIME_JITTER; no longer set: jitter is absorbed by the dejittered clock
PULL_RATE = 1024  # the stream does not deliver its nominal rate, two rate windows in a row (== FLAG_RATE)

_SLEW = 5e-4  # the published clock follows the fit at most this fast (s per s)
_MAX_DRIFT = 1e-3  # the fitted period stays within this of the nominal one
# the stream's real rate against its nominal one (`_rate_window`): over each _RATE_S of wall time,
# more real samples than the nominal rate allows by _RATE_TOL (clocks differ by ppm; a stall's
# backlog can fill one window, so two windows in a row), or more than _RATE_LOST of what came
# counted lost (two in a row), is said once per connection, with the rate measured
_RATE_S = 10.0
_RATE_TOL = 2.5e-3
_RATE_LOST = 0.2
_SETTLE_SIGMA = 0.05  # fit RMS residual (in periods) above which a gap's size is settled on later chunks
_ENV = 256  # pulls in the lower envelope of the stamps (gap sizing): ~2.5 s of 10-sample chunks
_ENV_MIN = 8  # pulls in the envelope before it sizes gaps (fewer: the mean of the residuals does)
_CATCHUP_S = 2.0  # wall time a suspected gap may wait, beyond gap_settle_s, for a pusher catching up to end


def _catching_up(seq: list[float], tol: float) -> bool:
    """The residuals of the chunks after a suspected gap, in arrival order, fall back toward
    the line: a pusher that stalled and is now pushing its backlog, each chunk stamped at push
    time, so later chunks are less late. A loss keeps them level (its deficit), jitter moves
    them by less than the tolerance: the lowest of the second half is below the lowest of the
    first half by more than the tolerance only while a backlog drains."""
    m = len(seq) // 2
    return m >= 2 and min(seq[m:]) < min(seq[:m]) - tol


_LEVEL = 16  # chunks whose residuals stay within the tolerance of each other: a backlog has drained ...
_LEVEL_S = 0.2  # ... and over this much of the stream: one-sample pushes draining at 1.5x real time fall
# by only ~5 ms over 16 chunks, as level as jitter; over 0.2 s of samples they fall by ~70 ms


def _level_from(seq: list[float], tol: float, at: list[int], end: int, rate: float) -> int | None:
    """Index of the first chunk of the level tail of `seq` (at least _LEVEL chunks, all within
    `tol` of each other, from the chunk starting at sample at[e] to the pull's end, at least
    _LEVEL_S of samples at `rate`), or None while there is none."""
    if len(seq) < _LEVEL:
        return None
    lo = hi = seq[-1]
    e = len(seq) - 1
    for i in range(len(seq) - 2, -1, -1):
        lo, hi = min(lo, seq[i]), max(hi, seq[i])
        if hi - lo >= tol:
            break
        e = i
    if len(seq) - e < _LEVEL:
        return None
    return e if end - at[e] >= _LEVEL_S * rate else None

_FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_string: "string",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
    pylsl.cf_int8: "int8",
    pylsl.cf_int64: "int64",
}
_NUMPY_DTYPES = {"float32": np.float32, "double64": np.float64, "int32": np.int32, "int16": np.int16}

_SETTLE_S = 0.5  # after the first answer, listen this long for other matching streams
_MAX_STREAMS = 1024  # pylsl's result buffer: "wait for this many" means "wait the whole time"
_FORGET_AFTER_S = 2.0  # the background resolver drops a vanished stream after this long


class StreamNotFoundError(RuntimeError):
    """No stream matched the query: the message lists what was searched and what is visible."""


class StreamMismatchError(ValueError):
    """The stream's channel count, rate or format disagrees with the bundle (both values given)."""


class AmbiguousStreamError(ValueError):
    """Several streams match the query and fit the bundle: the message lists them (pass --source-id)."""


@dataclass
class SourceEvents:
    """Cumulative counters (plain ints; `to_dict()` for status messages)."""

    chunks: int = 0  # pulls that returned samples
    samples: int = 0
    gaps: int = 0  # timestamp jumps (and reconnects that lost samples)
    samples_lost_est: int = 0  # estimated from timestamp jumps
    clock_resets: int = 0
    backsteps: int = 0  # pulls whose raw stamps did not increase (jitter; absorbed by the dejittered clock)
    stamp_outliers: int = 0  # chunks stamped off the dejittered clock beyond the tolerance, nothing lost
    catchups: int = 0  # pulls of a pusher catching up after it stalled (its stamps late and falling back to the line)
    rate_mismatches: int = 0  # 10-s windows in which the stream did not deliver its nominal rate (the log says how)
    stalls: int = 0  # no sample for stall_timeout
    lost: int = 0  # liblsl reported the outlet gone
    reconnects: int = 0
    mismatched_streams: int = 0  # candidates refused during reconnection
    nonfinite_chunks: int = 0
    stale_chunks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# prefixes that name no electrode: "ch25", "chan25", "E25" and "25" are the same channel 25
_GENERIC_PREFIXES = ("", "ch", "chan", "channel", "e", "el", "elec", "electrode", "lfp")


def _trailing_ints(labels) -> tuple[list[int], str] | None:
    """Each label's trailing integer ("ch25", "A-025", "25" -> 25) and the one prefix every label
    shares (lower case, separators dropped: "A-025" -> "a"), or None unless every label has one,
    they are distinct and the prefix is common to all (O1, T3 are two electrode groups)."""
    import re

    out, prefixes = [], set()
    for lab in labels:
        m = re.fullmatch(r"(.*?)(\d+)\s*", str(lab))
        if not m:
            return None
        out.append(int(m.group(2)))
        prefixes.add(re.sub(r"[\s_\-.:]+", "", m.group(1)).lower())
    if len(set(out)) != len(out) or len(prefixes) != 1:
        return None
    return out, prefixes.pop()


def _same_numbering(a: str, b: str) -> bool:
    """Prefixes under which equal numbers are the same channel: equal, or both generic."""
    return a == b or (a in _GENERIC_PREFIXES and b in _GENERIC_PREFIXES)


def channel_order(labels, names) -> tuple[np.ndarray | None, str, str]:
    """How a stream's channels map onto the consumer's (`names`, the bundle's training order).
    Returns (permutation or None, what was decided, a warning or ""): "as named" (the labels are
    the names, in order), "reordered by name" (the same names in another order: data[:, j] =
    stream channel perm[j]), "reordered by number" (labels and names carry the same distinct
    trailing numbers under one prefix each that names no electrode group, "ch25" for "25" or
    "E25", not "B-025" for "A-025" nor "O1, T3" for "Fp1, C3"), else "by position" with the reason (no
    labels, no names, or labels that are not the names: the stream's order must then be the
    training order, which nothing can check)."""
    labs = [str(x).strip() for x in labels] if labels else []
    if names is None:
        return None, "by position (the bundle names no channels)", ""
    names = [str(x).strip() for x in names]
    if not labs or not any(labs) or len(labs) != len(names):
        return None, "by position (the stream's channels carry no labels)", ""
    if not all(labs):
        return None, f"by position ({sum(not x for x in labs)} of {len(labs)} channels carry no label)", ""
    if labs == names:
        return None, "as named", ""
    head = ", ".join(labs[:4]) + (", ..." if len(labs) > 4 else "")
    want = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    if len(set(labs)) == len(labs) and set(labs) == set(names):
        pos = {lab: i for i, lab in enumerate(labs)}
        perm = np.array([pos[nm] for nm in names], np.intp)
        return perm, "reordered by name", (f"its channels ({head}) are the bundle's ({want}) in another order: "
                                           "reordered into the bundle's order by label")  # fmt: skip
    ta, tb = _trailing_ints(labs), _trailing_ints(names)
    a, b = (ta[0], tb[0]) if ta is not None and tb is not None and _same_numbering(ta[1], tb[1]) else (None, None)
    if a is not None and b is not None and set(a) == set(b):
        if a == b:
            return None, "as numbered", ""
        pos = {v: i for i, v in enumerate(a)}
        perm = np.array([pos[v] for v in b], np.intp)
        return perm, "reordered by number", (f"its channels ({head}) carry the bundle's channel numbers ({want}) in "
                                             "another order: reordered into the bundle's order by number")  # fmt: skip
    return None, "by position (labels are not the bundle's names)", (
        f"its channel labels ({head}) are not the bundle's channel names ({want}): the channels are decoded in the "
        "stream's order, which must be the order the bundle was trained on; label the stream's channels with the "
        "bundle's names (`rtdecode info BUNDLE` lists them) and rtdecode checks and reorders them")


def _fmt_name(info) -> str:
    return _FORMAT_NAMES.get(info.channel_format(), f"format#{info.channel_format()}")


def _describe(info) -> str:
    return (
        f"'{info.name()}' (type '{info.type()}', {info.channel_count()} ch, {info.nominal_srate():g} Hz, "
        f"{_fmt_name(info)}, source_id '{info.source_id()}', host '{info.hostname()}')"
    )


def _unique(infos: list) -> list:
    """One entry per stream uid (liblsl may report a stream once per network interface)."""
    seen: dict = {}
    for i in infos:
        seen.setdefault(i.uid(), i)
    return list(seen.values())


def _quote(s: str) -> str:
    """An XPath string literal for s."""
    if "'" not in s:
        return f"'{s}'"
    if '"' not in s:
        return f'"{s}"'
    raise ValueError(f"stream query {s!r} contains both quote characters")


def _pull_kwargs() -> dict:
    """Ask pylsl for numpy timestamps where it can (no per-pull list of floats)."""
    try:
        params = inspect.signature(pylsl.StreamInlet.pull_chunk).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return {}
    return {"as_numpy": True} if "as_numpy" in params else {}


class LSLSource:
    """One LSL inlet with preallocated buffers, gap detection and reconnection."""

    def __init__(
        self,
        query: str,
        *,
        n_channels: int,
        sampling_rate: float,
        max_chunk: int = 1024,
        resolve_timeout: float = 5.0,
        stall_timeout: float = 0.5,
        pull_timeout: float = 0.05,
        max_buffered_s: float = 1.0,
        source_id: str | None = None,
        gap_tolerance_s: float | None = None,
        gap_settle_s: float = 0.3,
        dejitter_halflife_s: float = 30.0,
        stale_after_s: float = 0.25,
        formats: tuple[str, ...] = ("float32", "double64", "int32", "int16"),
        check_finite: bool = True,
        backoff_max_s: float = 2.0,
        spin_s: float = 0.0,
        channel_names: tuple[str, ...] | list[str] | None = None,
    ):
        if not query:
            raise ValueError("stream query is empty: pass the stream's name or type (--stream)")
        if n_channels < 1 or sampling_rate <= 0 or max_chunk < 1:
            raise ValueError(
                f"need n_channels >= 1, sampling_rate > 0, max_chunk >= 1; "
                f"got {n_channels}, {sampling_rate}, {max_chunk}"
            )
        unknown = set(formats) - set(_NUMPY_DTYPES)
        if unknown:
            raise ValueError(f"unsupported formats {sorted(unknown)}; choose from {sorted(_NUMPY_DTYPES)}")
        self.query = query
        self.n_channels = int(n_channels)
        self.sampling_rate = float(sampling_rate)
        self.max_chunk = int(max_chunk)
        self.resolve_timeout = float(resolve_timeout)
        self.stall_timeout = float(stall_timeout)
        self.pull_timeout = float(pull_timeout)
        self.max_buffered_s = float(max_buffered_s)
        self.source_id = source_id
        self.stale_after_s = float(stale_after_s)
        self.formats = tuple(formats)
        self.check_finite = bool(check_finite)
        self.backoff_max_s = float(backoff_max_s)
        if not spin_s >= 0.0:
            raise ValueError(f"spin_s must be >= 0 seconds, got {spin_s}")
        self.spin_s = float(spin_s)  # poll (without sleeping) this long either side of the next chunk's expected arrival
        # the channel order the consumer expects (the bundle's input.channel_names): a stream whose
        # labels are those names in another order is reordered into it (`channel_order`)
        self.channel_names = tuple(str(c) for c in channel_names) if channel_names else None
        if self.channel_names is not None and len(self.channel_names) != self.n_channels:
            raise ValueError(f"channel_names has {len(self.channel_names)} names for {self.n_channels} channels")
        self._perm: np.ndarray | None = None  # data[:, j] = stream channel _perm[j]
        self._f32 = None  # float32 staging buffer (stream order) when channels are reordered
        self.channel_order = "unchecked"
        self._t_next = math.nan  # when the next chunk is expected (local_clock), for spin_s
        self._spin = 0.0  # spin_s, capped for the current chunk size
        self.first_raw_ts = None  # the stream's own stamp of the first sample pulled (no offset, no dejitter)
        self.t_data = math.nan  # local_clock() when the last pull had its first sample in hand

        self._period = 1.0 / self.sampling_rate
        tol = max(0.005, 2.5 * self._period) if gap_tolerance_s is None else float(gap_tolerance_s)
        self.gap_tolerance_s = tol
        self.gap_settle_s = float(gap_settle_s)
        self._lam = 0.5 ** (1.0 / max(1.0, dejitter_halflife_s * self.sampling_rate))  # fit forgetting per sample
        self._lam_sig = 0.5 ** (1.0 / max(1.0, 5.0 * self.sampling_rate))  # residual RMS: 5 s half-life

        # outputs of pull(): preallocated once
        self.data = np.zeros((self.max_chunk, self.n_channels), dtype=np.float32)
        self.timestamps = np.zeros(self.max_chunk, dtype=np.float64)
        self.last_gap_samples = 0
        self.last_gap_at = -1
        self.last_flags = 0
        self.events = SourceEvents()
        self.last_error = ""  # the latest refusal or failure during reconnection, for status
        # seconds the stamps of this inlet jumped back at clock resets, summed: add it to a
        # stamp to compare it with local_clock() (ages, deadlines, staleness)
        self.clock_shift = 0.0
        self._old_line = None  # the line before the last clock reset, while the shift is refined

        self._raw = np.zeros(self.max_chunk + 1, dtype=np.float64)  # [prev, raw stamps of this pull]
        self._dt = np.zeros(self.max_chunk, dtype=np.float64)
        self._res = np.zeros(self.max_chunk, dtype=np.float64)  # residuals against the fit
        self._u = np.zeros(self.max_chunk, dtype=np.float64)  # sample counts relative to the fit's reference
        self._ramp = np.arange(self.max_chunk, dtype=np.float64)  # 0, 1, 2, ...
        # the stamps' lower envelope, for sizing gaps: the segment count and raw stamp of the
        # lowest residual of each of the last _ENV pulls (re-evaluated against the line of the
        # moment at each gap: residuals stored as numbers go stale as the fit moves)
        self._env_k = np.zeros(_ENV, dtype=np.float64)
        self._env_t = np.zeros(_ENV, dtype=np.float64)
        self._env_r = np.zeros(_ENV, dtype=np.float64)
        # the last envelope-sized gap, for diagnostics (bench/gap_sizing.py): (envelope before,
        # lowest deficit after, both in periods; chunks after; envelope pulls; RMS residual in periods)
        self._gap_why: tuple = ()
        # every gap's estimate, newest last (slow path only): (raw stamp of the first sample after
        # it, samples counted lost, how: "line" | "envelope" | "mean", chunks after it it was settled on)
        self.gap_log: collections.deque = collections.deque(maxlen=1024)
        self._rate_warned = [False, False]  # faster than announced, losing (or slower): said once per connection
        self._fit_reset()
        # residual mean square (weight, weighted sum), kept across segments: the stream's jitter
        # does not change with a clock reset. Prior: tolerance / 6 for 1 s, so the first gaps
        # are settled too; a schedule-stamped stream brings it near 0 within seconds.
        self._sig_w = self.sampling_rate
        self._sig_s = self._sig_w * (tol / 6.0) ** 2
        self._dest = self.data  # where liblsl writes (a native-dtype buffer for non-float32 streams)
        self._dest_rest = self.data[1:]
        self._convert = False
        self._kw = _pull_kwargs()

        self._inlet = None
        self._resolver = None
        self._uid = ""
        self._info: dict = {}
        self._by = "name"  # which field of the query matched at open: reconnection keeps it
        self._connected = False
        self._offset = 0.0
        self._offset_valid = False
        self._next_offset = 0.0
        self._last_data = 0.0
        self._prev_ts = math.nan  # raw stamp of the last sample pulled from this inlet
        self._last_ts_local = math.nan  # corrected stamp of the last sample (survives reconnects)
        self._reconnected = False
        self._excluded: dict[str, float] = {}  # uid -> local_clock until which it is skipped
        self._backoff0 = max(self.pull_timeout, 0.02)
        self._backoff = self._backoff0
        self._next_attempt = 0.0

    # -- public surface -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def info(self) -> dict:
        """name, type, source_id, uid, n_channels, rate, format, hostname, channel_names,
        clock_offset (s, added to the stream's stamps), clock_offset_valid."""
        if not self._info:
            return {}
        return {**self._info, "clock_offset": self._offset, "clock_offset_valid": self._offset_valid}

    def open(self) -> None:
        if self._inlet is not None:
            return
        info = self._resolve(self.resolve_timeout)
        self._validate(info)
        self._by = "name" if info.name() == self.query else "type"
        self._connect(info, timeout=max(self.resolve_timeout, 1.0), tc_timeout=max(self.resolve_timeout, 2.0))
        self._resolver = pylsl.ContinuousResolver(pred=self._predicate(), forget_after=_FORGET_AFTER_S)

    def pull(self) -> int:
        """Wait up to pull_timeout for data, then take all that is queued (<= max_chunk).

        Returns n; data[:n] and timestamps[:n] hold the samples. 0 on timeout or when
        not connected (then call poll_reconnect)."""
        self.last_gap_samples = 0
        self.last_gap_at = -1
        self.last_flags = 0
        inlet = self._inlet
        if inlet is None:
            return 0
        raw = self._raw
        try:
            ts = self._wait_first(inlet) if self.spin_s > 0.0 else \
                inlet.pull_chunk(timeout=self.pull_timeout, max_samples=1, dest_obj=self._dest, **self._kw)[1]  # fmt: skip
            n = len(ts)
            if n == 0:
                self._on_empty()
                return 0
            self.t_data = pylsl.local_clock()  # the first sample is in hand: what follows is this process's work
            raw[1] = ts[0]
            if self.max_chunk > 1:
                ts = inlet.pull_chunk(
                    timeout=0.0, max_samples=self.max_chunk - 1, dest_obj=self._dest_rest, **self._kw
                )[1]
                m = len(ts)
                if m:
                    raw[2 : 2 + m] = ts
                    n += m
        except _LostError:
            self._on_lost()
            return 0
        now = pylsl.local_clock()
        self._last_data = now
        self._t_next = now + n * self._period  # a chunk of n samples: the next one is due after n periods
        self._spin = min(self.spin_s, 0.05 * n * self._period)  # small chunks: at most 5-10 % of their interval
        if self.first_raw_ts is None:
            self.first_raw_ts = float(raw[1])
        self._connected = True
        if now >= self._next_offset:
            self._refresh_offset(now)
        n = self._stamp(n)  # dejittered stamps into timestamps[:n]; may pull more after a gap
        if self._perm is not None:  # into the bundle's channel order (no allocation: mode="clip" is unbuffered)
            src = self._dest[:n]
            if self._f32 is not None:
                np.copyto(self._f32[:n], src, casting="unsafe")
                src = self._f32[:n]
            np.take(src, self._perm, axis=1, out=self.data[:n], mode="clip")
        elif self._convert:
            np.copyto(self.data[:n], self._dest[:n], casting="unsafe")
        ts_out = self.timestamps[:n]

        ev = self.events
        if self._reconnected:
            self._reconnected = False
            self.last_flags |= PULL_RECONNECTED
            if self._last_ts_local == self._last_ts_local:
                lost = int(round((ts_out[0] - self._last_ts_local) * self.sampling_rate)) - 1
                if lost > 0:
                    ev.gaps += 1
                    ev.samples_lost_est += lost
        self._last_ts_local = ts_out[n - 1]
        ev.chunks += 1
        ev.samples += n
        self._rate_window(now, n)
        if self._rw_fast >= 2 or self._rw_slow >= 2:  # until a window is back in range
            self.last_flags |= PULL_RATE
        if self.check_finite and not math.isfinite(self.data[:n].sum()):
            self.last_flags |= PULL_NONFINITE
            ev.nonfinite_chunks += 1
        if now - ts_out[n - 1] - self.clock_shift > self.stale_after_s:
            self.last_flags |= PULL_STALE
            ev.stale_chunks += 1
        return n

    def _rate_window(self, now: float, n: int) -> None:
        """Whether the stream delivers the rate it announces. The dejittered clock holds the
        fitted period within _MAX_DRIFT of the nominal one and sizes gaps on it, so a stream that
        really runs faster gets stamps that run ahead of its data, and one that runs slower gets
        half its samples filled as lost; neither is a fault of the link. Scalars only."""
        if self._rw_t0 != self._rw_t0:  # NaN: a new window, from this pull (its samples not counted)
            self._rw_t0, self._rw_n, self._rw_lost0, self._rw_max = now, 0, self.events.samples_lost_est, 0
            return
        self._rw_n += n
        if n > self._rw_max:
            self._rw_max = n
        span = now - self._rw_t0
        if span < _RATE_S:
            return
        lost = self.events.samples_lost_est - self._rw_lost0
        # both ends of the window are pull times: each may lag its samples by up to a pull
        fast = self._rw_n - 2 * self._rw_max > span * self.sampling_rate * (1.0 + _RATE_TOL)
        lossy = lost > _RATE_LOST * (self._rw_n + lost)
        self._rw_fast = self._rw_fast + 1 if fast else 0
        self._rw_slow = self._rw_slow + 1 if lossy else 0
        if fast or lossy:
            self.events.rate_mismatches += 1
        name, fs = self._info.get("name", "?"), self.sampling_rate
        if self._rw_fast >= 2 and not self._rate_warned[0]:
            self._rate_warned[0] = True
            log.warning("stream '%s' announces %g Hz but delivers %.1f Hz (its samples over the last %.0f s of wall "
                        "time): decoded as %g Hz, its bins' t_lsl run ahead of the data and the filters are off by "
                        "%.1f %%; set the acquisition to %g Hz (the bundle's input.sampling_rate) or make the stream "
                        "announce its real rate", name, fs, self._rw_n / span, span, fs,
                        100.0 * (self._rw_n / span / fs - 1.0), fs)  # fmt: skip
        if self._rw_slow >= 2 and not self._rate_warned[1]:
            self._rate_warned[1] = True
            got = self._rw_n / span
            log.warning("stream '%s' delivered %.0f %% of the samples its nominal %g Hz implies over the last %.0f s "
                        "(%.1f Hz; the rest were counted lost and filled): it loses samples (network, acquisition "
                        "buffer) or runs slower than it announces; check the acquisition's rate: the bins are largely "
                        "filled data", name, 100.0 * self._rw_n / (self._rw_n + lost), fs, span, got)  # fmt: skip
        self._rw_t0, self._rw_n, self._rw_lost0, self._rw_max = now, 0, self.events.samples_lost_est, 0

    def _wait_first(self, inlet):
        """The first sample of a pull with `spin_s` > 0: block until `spin_s` before the next
        chunk is due, then poll without sleeping until it comes (at most `spin_s` past its
        due time), then block as usual. A thread that polls keeps its CPU awake, so the
        chunk is taken the moment liblsl has it instead of after a wake-up (on a virtual
        machine an idle vCPU halts, and waking it costs tens to hundreds of µs); the price
        is up to 2 x `spin_s` of CPU per chunk, and `spin_s` is capped at 5 % of the last
        chunk's span (10-sample chunks at 1 kHz: 0.5 ms), so that small chunks cost no more."""
        kw, dest = self._kw, self._dest
        t_next, spin = self._t_next, self._spin
        if not math.isnan(t_next):
            now = pylsl.local_clock()
            lead = t_next - spin - now
            if lead > 0.0:
                ts = inlet.pull_chunk(timeout=min(lead, self.pull_timeout), max_samples=1, dest_obj=dest, **kw)[1]
                if len(ts):
                    return ts
                now = pylsl.local_clock()
            end = min(t_next + spin, now + self.pull_timeout)
            while now < end:
                ts = inlet.pull_chunk(timeout=0.0, max_samples=1, dest_obj=dest, **kw)[1]
                if len(ts):
                    return ts
                now = pylsl.local_clock()
        return inlet.pull_chunk(timeout=self.pull_timeout, max_samples=1, dest_obj=dest, **kw)[1]

    def poll_reconnect(self) -> bool:
        """While not connected: look for the stream again (backoff), at most ~pull_timeout.

        Returns True when a new inlet is live: the caller resets its filter state."""
        if self._connected or self._resolver is None:
            return False
        t_call = time.monotonic()
        now = pylsl.local_clock()
        if now >= self._next_attempt:
            if self._try_reconnect(now):
                self._backoff = self._backoff0
                self._next_attempt = 0.0
                return True
            self._next_attempt = now + self._backoff
            self._backoff = min(2.0 * self._backoff, self.backoff_max_s)
        if self._inlet is None:  # pull() returns at once without an inlet: pace the caller here
            left = min(self.pull_timeout - (time.monotonic() - t_call), self._next_attempt - now)
            if left > 0:
                time.sleep(left)
        return False

    def flush(self) -> int:
        """Drop what queued up while the caller was busy starting (warm-up): the loop starts
        on fresh samples, not on a backlog. Returns the number of samples dropped."""
        return int(self._inlet.flush()) if self._inlet is not None else 0

    def close(self) -> None:
        self._drop_inlet()
        self._resolver = None
        self._connected = False

    def __enter__(self) -> "LSLSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- resolution and validation -----------------------------------------------------------
    def _predicate(self) -> str:
        q = _quote(self.query)
        pred = f"(name={q} or type={q})"
        if self.source_id:
            pred += f" and source_id={_quote(self.source_id)}"
        return pred

    def _misfits(self, info) -> list:
        from .discover import fit_problems

        return fit_problems(info.channel_count(), info.nominal_srate(), _fmt_name(info), want_channels=self.n_channels,
                            want_rate=self.sampling_rate, formats=self.formats)  # fmt: skip

    def _choose(self, infos: list):
        """Prefer a stream that fits the bundle, then a name match over a type match, then the
        newest (reconnection; `open()` refuses an ambiguous choice in `_pick` instead)."""
        infos = _unique(infos)
        fitting = [i for i in infos if not self._misfits(i)] or infos
        best = sorted(fitting, key=lambda i: (i.name() == self.query, i.created_at()), reverse=True)
        if len(best) > 1:
            log.warning(
                "%d streams match %r; using %s (others: %s). Pass --source-id to pin one.",
                len(best),
                self.query,
                _describe(best[0]),
                "; ".join(_describe(i) for i in best[1:]),
            )
        return best[0]

    def _pick(self, infos: list):
        """At open: the one candidate that fits the bundle. Several that fit: refuse and list
        them; none fits: say why for each (one candidate: `_validate` says it)."""
        infos = _unique(infos)
        if len(infos) == 1:
            return infos[0]
        misfits = [(i, self._misfits(i)) for i in infos]
        fitting = [i for i, m in misfits if not m]
        if len(fitting) == 1:
            if len(infos) > 1:
                log.info("%d streams match %r; %s is the one that fits the bundle", len(infos), self.query,
                         _describe(fitting[0]))  # fmt: skip
            return fitting[0]
        if fitting:
            raise AmbiguousStreamError(
                f"{len(fitting)} LSL streams match '{self.query}' and fit the bundle: "
                + "; ".join(_describe(i) for i in fitting)
                + ". Pass --source-id with the source_id of the one to decode (`rtdecode streams` lists them)"
                + (", or --stream with a name that only one of them has" if len({i.name() for i in fitting}) > 1 else "")
            )
        why = "; ".join(f"{_describe(i)} {m[0].text}" for i, m in misfits)
        raise StreamMismatchError(
            f"{len(infos)} LSL streams match '{self.query}' but none fits the bundle: {why}. "
            f"Start a stream that fits, or pick another with --stream or --source-id "
            f"(`rtdecode streams --bundle DIR` shows which fit), or retrain"
        )

    def _resolve(self, timeout: float):
        pred = self._predicate()
        infos = pylsl.resolve_bypred(pred, 1, timeout)
        if infos:
            # liblsl returns as soon as one stream has answered; listen a little longer so that
            # every matching stream is a candidate and the choice does not depend on who answered first
            settle = min(_SETTLE_S, max(timeout, 0.2))
            infos = list(infos) + list(pylsl.resolve_bypred(pred, _MAX_STREAMS, settle))
            return self._pick(infos)
        wait = min(1.0, max(0.2, timeout / 5))
        visible = pylsl.resolve_streams(wait_time=wait)
        listing = "; ".join(_describe(i) for i in visible) if visible else "none"
        if self.source_id:
            same = [i for i in visible if self.query in (i.name(), i.type())]
            if same:
                raise StreamNotFoundError(
                    f"no LSL stream named or typed '{self.query}' has source_id '{self.source_id}' "
                    f"(looked for {timeout:g} s). Streams named or typed '{self.query}' have source_id "
                    + ", ".join(f"'{i.source_id()}'" for i in same)
                    + f": pass one of them with --source-id, or drop --source-id (`rtdecode streams` lists "
                    f"every visible stream). Visible streams: {listing}"
                )
            raise StreamNotFoundError(
                f"no LSL stream named or typed '{self.query}' with source_id '{self.source_id}' found within "
                f"{timeout:g} s. Visible streams: {listing}. Start the acquisition (or `rtdecode replay FILE`), "
                f"check that it is on this network (LSL ResolveScope, firewall), or fix --stream / --source-id "
                f"(`rtdecode streams` lists every visible stream with its source_id)"
            )
        raise StreamNotFoundError(
            f"no LSL stream named or typed '{self.query}' found within {timeout:g} s. "
            f"Visible streams: {listing}. Start the acquisition (or `rtdecode replay FILE`), "
            f"check that it is on this network (LSL ResolveScope, firewall), wait longer (--resolve-timeout), "
            f"or pass --stream with one of the names or types above (`rtdecode streams` lists them)"
        )

    def _validate(self, info) -> None:
        misfits = self._misfits(info)
        if misfits:
            where = f"stream '{info.name()}' (type '{info.type()}', source_id '{info.source_id()}')"
            raise StreamMismatchError(f"{where} {misfits[0].text}: {misfits[0].fix}")

    # -- inlet lifecycle ------------------------------------------------------------------
    def _connect(self, info, timeout: float, tc_timeout: float) -> None:
        inlet = pylsl.StreamInlet(
            info, max_buflen=max(1, math.ceil(self.max_buffered_s)), max_chunklen=0, recover=False
        )
        try:
            inlet.open_stream(timeout=timeout)
            full = inlet.info(timeout=timeout)
            # liblsl's first offset estimate takes ~0.65 s (a train of probes): open() waits
            # for it; a reconnection does not, keeps the previous offset and retries per pull
            try:
                self._offset = inlet.time_correction(timeout=tc_timeout)
                self._offset_valid = True
            except _TIMEOUTS:
                self._offset_valid = False
            inlet.flush()
        except BaseException:
            inlet.close_stream()
            raise
        fmt = _fmt_name(info)
        try:
            labels = full.get_channel_labels() if hasattr(full, "get_channel_labels") else None
        except Exception:  # pragma: no cover - malformed desc
            labels = None
        self._perm, self.channel_order, why = channel_order(labels, self.channel_names)
        if why:
            log.warning("stream '%s': %s", info.name(), why)
        if fmt == "float32" and self._perm is None:
            self._dest, self._convert = self.data, False
        else:
            self._dest, self._convert = np.zeros((self.max_chunk, self.n_channels), _NUMPY_DTYPES[fmt]), True
            if self._perm is not None and fmt != "float32":
                self._f32 = np.zeros((self.max_chunk, self.n_channels), np.float32)
        self._dest_rest = self._dest[1:]
        self._inlet = inlet
        self._uid = info.uid()
        self._info = {
            "name": info.name(),
            "type": info.type(),
            "source_id": info.source_id(),
            "uid": info.uid(),
            "hostname": info.hostname(),
            "n_channels": info.channel_count(),
            "rate": info.nominal_srate(),
            "format": fmt,
            "channel_names": list(labels) if labels and all(labels) else None,
            "channel_order": self.channel_order,
        }
        self._connected = True
        self._prev_ts = math.nan
        self._rate_warned = [False, False]
        self._fit_reset()  # a new inlet is a new clock segment
        self.clock_shift = 0.0
        self._old_line = None
        self._last_data = pylsl.local_clock()
        self._next_offset = self._last_data + 1.0 if self._offset_valid else self._last_data

    def _drop_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # pragma: no cover - already gone
                pass
            del inlet

    def _refresh_offset(self, now: float) -> None:
        try:
            self._offset = self._inlet.time_correction(timeout=0.0)
            self._offset_valid = True
        except _TIMEOUTS:
            pass  # no estimate yet: keep the previous offset
        except _LostError:
            pass  # the next pull reports it
        self._next_offset = now + 1.0 if self._offset_valid else now

    def _on_empty(self) -> None:
        if self._connected and pylsl.local_clock() - self._last_data > self.stall_timeout:
            self._connected = False
            self.events.stalls += 1
            log.warning("stream '%s' stalled: no sample for %.2f s", self._info.get("name"), self.stall_timeout)

    def _on_lost(self) -> None:
        now = pylsl.local_clock()
        self.events.lost += 1
        self._connected = False
        self._excluded[self._uid] = now + _FORGET_AFTER_S + 0.5  # the resolver still lists it a while
        self._drop_inlet()
        self._backoff = self._backoff0
        self._next_attempt = now
        log.warning("stream '%s' lost; looking for it again", self._info.get("name"))

    def _try_reconnect(self, now: float) -> bool:
        cands = []
        for info in self._resolver.results():
            uid = info.uid()
            if self._inlet is not None and uid == self._uid:
                continue  # the stalled stream we hold: it resumes by itself if it does
            if self._excluded.get(uid, 0.0) > now:
                continue
            if (info.name() if self._by == "name" else info.type()) != self.query:
                continue
            cands.append(info)
        if not cands:
            return False
        info = self._choose(cands)
        try:
            self._validate(info)
        except StreamMismatchError as e:
            self.events.mismatched_streams += 1
            self.last_error = str(e)
            self._excluded[info.uid()] = now + 10.0
            log.error("refusing a reappeared stream: %s", e)
            return False
        old = self._inlet
        self._inlet = None
        try:
            self._connect(info, timeout=max(2.0 * self.pull_timeout, 0.1), tc_timeout=0.0)
        except (_LostError, *_TIMEOUTS, RuntimeError) as e:
            self._inlet = old
            self.last_error = f"could not open {_describe(info)}: {e}"
            self._excluded[info.uid()] = now + 1.0
            return False
        if old is not None:
            try:
                old.close_stream()
            except Exception:  # pragma: no cover
                pass
        self.events.reconnects += 1
        self._reconnected = True
        self.last_error = ""
        log.warning("reconnected to %s", _describe(info))
        return True

    # -- timestamps: the dejittered clock ------------------------------------------------
    def _fit_reset(self) -> None:
        """Start a new clock segment (new inlet, clock reset): no fit, no published clock."""
        self._k = 0.0  # segment sample count of the next sample (lost samples included)
        self._fk = self._ft = 0.0  # the fit's reference: sample count and raw stamp
        self._S0 = self._Su = self._Suu = self._Sv = self._Suv = 0.0  # weighted sums about it
        self._ok = self._ot = math.nan  # sample count and published stamp of the last sample out
        self._env_n = 0  # pulls in the envelope ring
        self._rw_t0 = math.nan  # the rate window (`_rate_window`): its start (wall clock), real samples
        self._rw_n = 0  # since, samples counted lost when it started, windows in a row too fast / lossy
        self._rw_lost0 = self.events.samples_lost_est
        self._rw_fast = self._rw_slow = self._rw_max = 0  # ... and the largest pull in it

    def _line(self) -> tuple[float, float]:
        """(a, b): the fitted raw stamp at the reference is ft + a, b seconds per sample."""
        T = self._period
        b = T
        S0, Su = self._S0, self._Su
        if S0 > 2.0 * self.sampling_rate:  # 2 s in the fit: the slope is free (clock drift)
            det = S0 * self._Suu - Su * Su
            if det > 0.0:
                b = (S0 * self._Suv - Su * self._Sv) / det
                b = min(max(b, T * (1.0 - _MAX_DRIFT)), T * (1.0 + _MAX_DRIFT))
        return (self._Sv - b * Su) / S0, b

    def _residuals(self, i0: int, i1: int, k0: float) -> np.ndarray:
        """res[i0:i1]: raw stamps of samples i0.. minus the fit's prediction for counts k0.."""
        a, b = self._line()
        u = self._u[i0:i1]
        np.add(self._ramp[: i1 - i0], k0 - self._fk, out=u)
        r = self._res[i0:i1]
        np.multiply(u, b, out=r)
        r += self._ft + a
        np.subtract(self._raw[1 + i0 : 1 + i1], r, out=r)
        return r

    def _fit_add(self, i0: int, i1: int, k0: float) -> None:
        """Add samples i0..i1-1 (segment counts k0..) to the fit; re-reference at the last."""
        m = i1 - i0
        if m <= 0:
            return
        raw = self._raw
        k_last, t_last = k0 + m - 1, float(raw[i1])
        S0 = self._S0
        if S0 > 0.0:
            s, r = k_last - self._fk, t_last - self._ft
            Su, Sv = self._Su, self._Sv
            w = self._lam**s
            self._Suv = w * (self._Suv - r * Su - s * Sv + s * r * S0)
            self._Suu = w * (self._Suu - 2.0 * s * Su + s * s * S0)
            self._Su = w * (Su - s * S0)
            self._Sv = w * (Sv - r * S0)
            self._S0 = w * S0
        self._fk, self._ft = k_last, t_last
        v = self._dt[:m]
        np.subtract(raw[1 + i0 : 1 + i1], t_last, out=v)
        u = self._u[:m]
        np.subtract(self._ramp[:m], m - 1.0, out=u)
        self._S0 += m
        self._Su -= m * (m - 1) / 2.0
        self._Suu += (m - 1) * m * (2 * m - 1) / 6.0
        self._Sv += float(v.sum())
        self._Suv += float(np.dot(u, v))

    def _sigma(self) -> float:
        return math.sqrt(self._sig_s / self._sig_w) if self._sig_w > 0.0 else 0.0

    def _tolerance(self) -> float:
        return max(self.gap_tolerance_s, 6.0 * self._sigma())

    def _emit(self, i0: int, i1: int, k0: float) -> None:
        """timestamps[i0:i1] for segment counts k0..: one fitted period per sample, slewed
        (at most _SLEW) toward the fit plus the current clock offset."""
        m = i1 - i0
        if m <= 0:
            return
        a, b = self._line()
        k_last = k0 + m - 1
        target = self._ft + a + b * (k_last - self._fk) + self._offset
        if self._ok != self._ok:  # segment start: the first sample sits on the fit
            self._ok, self._ot = k0 - 1.0, target - m * b
        d = k_last - self._ok
        e = target - (self._ot + d * b)
        lim = _SLEW * d * self._period
        if abs(e) > max(0.05, 20.0 * self._tolerance()):  # far off (offset jump): snap, do not slew for minutes
            c = e
        else:
            c = min(max(e, -lim), lim)
        ts = self.timestamps[i0:i1]
        np.add(self._ramp[:m], k0 - self._ok, out=ts)
        ts *= b + c / d
        ts += self._ot
        self._ok, self._ot = k_last, float(ts[m - 1])

    def _stamp(self, n: int) -> int:
        """Classify and dejitter the raw stamps raw[1:n+1]; returns n (larger when a gap's
        size was settled on the chunks that followed it)."""
        raw = self._raw
        raw[0] = raw[1] - self._period if self._prev_ts != self._prev_ts else self._prev_ts
        dt = self._dt[:n]
        np.subtract(raw[1 : n + 1], raw[:n], out=dt)
        if dt.min() <= 0.0:  # raw jitter (pulls with a non-increasing stamp): absorbed by the dejittered clock
            self.events.backsteps += 1
        k = self._k
        if self._S0 <= 0.0:  # first pull of a segment
            self._fit_add(0, n, k)
            self._emit(0, n, k)
            self._k = k + n
        else:
            r = self._residuals(0, n, k)
            tol = self._tolerance()
            lo = float(r.min())
            if r.max() > tol or lo < -tol:
                n = self._slow(n, tol)
            else:
                self._env_add(int(r.argmin()), k)
                w = self._lam_sig**n
                self._sig_w = w * self._sig_w + n
                self._sig_s = w * self._sig_s + float(np.dot(r, r))
                self._fit_add(0, n, k)
                self._emit(0, n, k)
                self._k = k + n
        self._prev_ts = raw[n]
        if self._old_line is not None:
            self._refine_shift()
        return n

    def _refine_shift(self) -> None:
        """After a clock reset: the jump is the old line, extrapolated, minus the new fit, at
        the same sample; the new fit firms up over its first 2 s, then the shift is kept."""
        ft, a, b, fk, k0, base = self._old_line
        a2, _ = self._line()
        self.clock_shift = base + (ft + a + b * (k0 + self._fk - fk)) - (self._ft + a2)
        if self._k >= 2.0 * self.sampling_rate:
            self._old_line = None

    def _slow(self, n: int, tol: float) -> int:
        """Slow path: a stamp beyond the tolerance. Later than the fit: a gap (or a late
        chunk); earlier: a clock reset."""
        r = self._res[:n]
        k = self._k
        ev = self.events
        hi = np.flatnonzero(r > tol)
        lo = np.flatnonzero(r < -max(10.0 * tol, 0.05))
        g = int(hi[0]) if hi.size else n
        j = int(lo[0]) if lo.size else n
        if g == n and j == n:  # early by more than the tolerance, not enough for a reset: absorbed
            self.events.stamp_outliers += 1
            self._fit_add(0, n, k)
            self._emit(0, n, k)
            self._k = k + n
            return n
        if j < n:  # clock reset at sample j: a new segment from there. A late chunk before it in
            # the same pull (g < j) is absorbed by the old segment: a gap cannot be settled on
            # chunks that are on another clock, and settling would mix them into the old fit
            self._fit_add(0, j, k)
            self._emit(0, j, k)
            a, b = self._line()
            # how far the stamps jumped: t_lsl follows the stream's stamps (LabRecorder keeps
            # the raw stream on them too), ages and staleness add this back. First from one
            # stamp; refined against the new segment's fit for its first 2 s (_refine_shift)
            old = (self._ft, a, b, self._fk, k + j, self.clock_shift)
            self.clock_shift += self._ft + a + b * (k + j - self._fk) - float(self._raw[j + 1])
            self._fit_reset()
            self._old_line = old
            self._fit_add(j, n, 0.0)
            self._emit(j, n, 0.0)
            self._k = float(n - j)
            self.last_flags |= PULL_CLOCK_RESET
            ev.clock_resets += 1
            self._next_offset = 0.0  # re-read the offset at the next pull
            return n
        # a deficit from sample g on: how many periods? settle on the chunks that follow
        if g > 0:
            self._env_add(int(r[:g].argmin()), k)
        self._fit_add(0, g, k)
        T = self._period
        sig = self._sigma()
        settled = sig > _SETTLE_SIGMA * T
        if settled:
            n = self._settle(n, g, sig)
        a, b = self._line()
        r = self._residuals(g, n, k + g)
        raw = self._raw
        starts = [g] + [i for i in range(g + 1, n) if abs(raw[i + 1] - raw[i] - T) > 1e-3 * T]
        seq = [float(r[i - g]) for i in starts]  # each chunk's residual, in arrival order
        later = sorted(seq[1:])
        vals = sorted(seq)
        e = _level_from(seq, tol, starts, n, self.sampling_rate)
        fit_from = g  # the late chunks of a drained backlog stay out of the fit
        if e is not None and e > 0 and seq[0] - min(seq[e:]) > tol:
            # late chunks, then level ones: a pusher that stalled and has drained its backlog (each
            # chunk stamped when pushed, so the backlog's stamps say when it was pushed, not
            # acquired), or one late push before a loss. Only the level chunks say what is
            # missing: a deficit left once the backlog has drained was lost during the stall
            ev.catchups += 1
            level = sorted(seq[e:])
            fit_from = starts[e]
            if level[len(level) // 2] < 0.5 * tol:
                lost, how = 0, "line"
            else:
                how = "drained"
                pre = self._envelope(a, b, len(level)) if self._env_n >= _ENV_MIN else 0.0
                lost = int(round((level[0] - pre) / b)) if settled else int(round(sum(level) / len(level) / b))
        elif _catching_up(seq, tol):
            # a stalled pusher still draining its backlog: late, not lost (yet known). Nothing is
            # filled; the late stamps stay out of the fit (a push is never early, so lateness says
            # nothing of the clock) and the count-based clock runs on. Whatever deficit is left once
            # the backlog has drained (a loss during the stall) is a gap of a later pull.
            ev.catchups += 1
            ev.stamp_outliers += 1
            self._emit(0, g, k)
            self._emit(g, n, k + g)
            self._k = k + n
            return n
        elif later and later[len(later) // 2] < 0.5 * tol:  # most chunks after the first back on the line
            lost = 0
            how = "line"
        elif settled and self._env_n >= _ENV_MIN:
            how = "envelope"
            # a push is never early: stamps are the true time plus a delay >= 0, so compare the
            # lower envelopes (lowest residual) after and before the gap, both against the line
            # of now; late pushes, and a pusher catching up, only raise residuals and cannot
            # inflate the count
            pre = self._envelope(a, b, len(vals))
            lost = int(round((vals[0] - pre) / b))
            self._gap_why = (pre / b, vals[0] / b, len(vals), self._env_n, sig / T)
        else:
            how = "mean"
            med = vals[len(vals) // 2]
            keep = [v for v in vals if abs(v - med) <= max(4.0 * sig, T)]
            lost = int(round(sum(keep) / len(keep) / b))
        if lost >= 1:
            self.last_gap_samples = lost
            self.last_gap_at = g
            self.last_flags |= PULL_GAP
            ev.gaps += 1
            ev.samples_lost_est += lost
            self.gap_log.append((round(float(raw[g + 1]), 4), lost, how, len(vals)))
        else:  # stamped late (a late push), nothing missing: the count-based clock is not affected
            lost = 0
            ev.stamp_outliers += 1
        k2 = k + g + lost
        self._fit_add(fit_from, n, k2 + (fit_from - g))
        self._emit(0, g, k)
        self._emit(g, n, k2)
        self._k = k2 + (n - g)
        return n

    def _env_add(self, i: int, k: float) -> None:
        """Keep sample i of this pull (segment count k + i) as the pull's lowest stamp."""
        j = self._env_n % _ENV
        self._env_k[j] = k + i
        self._env_t[j] = self._raw[1 + i]
        self._env_n += 1

    def _envelope(self, a: float, b: float, m_after: int) -> float:
        """The lower envelope of the residuals before a gap, against the line (a, b) of now, as a
        minimum over m_after chunks would see it: the median of the minima of consecutive
        blocks of m_after pulls (the minimum of all the pulls when there are fewer than 2
        blocks). The gap's size compares it with the minimum over the m_after chunks after the
        gap, so both are minima over as many chunks: a minimum over more is lower (by ~0.1
        sample for 256 against 30 chunks of 0-3 ms jitter), which would bias sizes up; the
        median, not the mean, so that a stretch of late pushes (a loaded machine) in less than
        half the window does not bias them down. Slow path (a gap): allocates."""
        m = min(self._env_n, _ENV)
        r = self._env_r[:m]
        np.subtract(self._env_k[:m], self._fk, out=r)
        r *= b
        r += self._ft + a
        np.subtract(self._env_t[:m], r, out=r)
        q = m // max(1, m_after)
        if m_after <= 1 or q < 2:
            return float(r.min())
        if self._env_n > _ENV:  # the ring has wrapped: oldest first
            r = np.roll(r, -(self._env_n % _ENV))
        return float(np.median(r[m - q * m_after :].reshape(q, m_after).min(axis=1)))

    def _settle(self, n: int, g: int, sig: float) -> int:
        """Keep pulling after a suspected gap at sample g until the chunks after it pin its
        size down (enough of them for a standard error of 0.1 period), for at most
        gap_settle_s of stream or wall time, or until the buffer is full."""
        inlet = self._inlet
        T = self._period
        need = min(60, math.ceil((sig / (0.1 * T)) ** 2))
        raw = self._raw
        t_end = time.monotonic() + self.gap_settle_s + self.pull_timeout
        tol = self._tolerance()
        a, b = self._line()
        c0 = self._ft + a + b * (self._k - self._fk)  # the line's stamp for sample 0 of this pull

        def resid(i: int) -> float:
            return float(raw[i + 1]) - (c0 + b * i)

        starts: list[int] = []  # chunk starts after the first one (the chunks pulled so far)
        seq = [resid(g)]  # every chunk's residual, in arrival order
        scan = g + 1
        while n < self.max_chunk and inlet is not None:
            for i in range(scan, n):  # only the samples pulled since the last pass
                if abs(raw[i + 1] - raw[i] - T) > 1e-3 * T:
                    starts.append(i)
                    seq.append(resid(i))
            scan = n
            now = time.monotonic()
            # the samples after the suspected gap arrive faster than they were sampled (their stamps
            # advance less than their count): a backlog draining, perhaps slowly, in small pushes;
            # judge it on 0.2 s of samples at least, not on a few chunks whose lateness falls by less
            # than the tolerance
            m = n - (g + 1)
            compressed = m > 1 and raw[n] - raw[g + 1] < 0.9 * m * T and m < _LEVEL_S * self.sampling_rate
            if seq[-1] > 0.5 * tol and (compressed or _catching_up(seq, tol)):  # still draining: wait for its end
                if now >= t_end + _CATCHUP_S:
                    break
            elif len(starts) + 1 >= need or raw[n] - raw[g + 1] >= self.gap_settle_s or now >= t_end:
                break
            if starts:  # chunks after the first one back on the line: a late push, not a loss; decide now
                later = sorted(seq[1:])
                if later[len(later) // 2] < 0.5 * tol:
                    break
            try:
                ts = inlet.pull_chunk(timeout=0.02, max_samples=1, dest_obj=self._dest[n:], **self._kw)[1]
                if len(ts) == 0:
                    continue
                raw[n + 1] = ts[0]
                n += 1
                if n < self.max_chunk:
                    ts = inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk - n, dest_obj=self._dest[n:], **self._kw)[1]
                    m = len(ts)
                    if m:
                        raw[n + 1 : n + 1 + m] = ts
                        n += m
            except _LostError:
                break  # the next pull reports it
        return n
