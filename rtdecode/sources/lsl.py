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
- Timestamp checks run on the raw (uncorrected) stamps, so an update of the clock offset
  is never mistaken for a gap: a step larger than one period + `gap_tolerance_s` is a gap
  (`last_gap_samples` estimated missing samples, `last_gap_at` the index in this pull of
  the first sample after it), a step backwards by more than that is a clock reset, a
  smaller non-increasing step is a "backstep" (timestamp jitter). The fast path is two
  numpy reductions; the slow path runs only when one of them trips.
- A stream is *stalled* when no sample arrived for `stall_timeout`, *lost* when liblsl
  reports the outlet gone (inlets are opened with `recover=False`: liblsl's own recovery
  hides a dead stream, DESIGN.md). Either way `connected` turns False, and
  `poll_reconnect()` looks for a matching stream (same name, or same type when the query
  matched the type; a new source_id is fine unless one was pinned) in a background
  `ContinuousResolver`, with exponential backoff, never blocking longer than about
  `pull_timeout`. A stalled stream that resumes on the same inlet needs no reconnect: the
  next pull reports the gap.

Per-pull results: `data[:n]`, `timestamps[:n]`, `last_gap_samples`, `last_gap_at`,
`last_flags` (PULL_* bits below, numerically equal to the message flags of
`rtdecode.sinks.zmq`, so the runtime may OR them into a bin's flags). Cumulative counters:
`events` (a `SourceEvents`).
"""

from __future__ import annotations

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
PULL_CLOCK_RESET = 64  # timestamps went backwards by more than the tolerance (== FLAG_CLOCK_RESET)
PULL_BACKSTEP = 128  # a timestamp did not increase (jitter, within tolerance) (== FLAG_TIME_JITTER)

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

_REMEDY = "pick another stream with --stream or retrain"
_FORGET_AFTER_S = 2.0  # the background resolver drops a vanished stream after this long


class StreamNotFoundError(RuntimeError):
    """No stream matched the query: the message lists what was searched and what is visible."""


class StreamMismatchError(ValueError):
    """The stream's channel count, rate or format disagrees with the bundle (both values given)."""


@dataclass
class SourceEvents:
    """Cumulative counters (plain ints; `to_dict()` for status messages)."""

    chunks: int = 0  # pulls that returned samples
    samples: int = 0
    gaps: int = 0  # timestamp jumps (and reconnects that lost samples)
    samples_lost_est: int = 0  # estimated from timestamp jumps
    clock_resets: int = 0
    backsteps: int = 0  # non-increasing timestamps within tolerance (jitter)
    stalls: int = 0  # no sample for stall_timeout
    lost: int = 0  # liblsl reported the outlet gone
    reconnects: int = 0
    mismatched_streams: int = 0  # candidates refused during reconnection
    nonfinite_chunks: int = 0
    stale_chunks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt_name(info) -> str:
    return _FORMAT_NAMES.get(info.channel_format(), f"format#{info.channel_format()}")


def _describe(info) -> str:
    return (
        f"'{info.name()}' (type '{info.type()}', {info.channel_count()} ch, {info.nominal_srate():g} Hz, "
        f"{_fmt_name(info)}, source_id '{info.source_id()}', host '{info.hostname()}')"
    )


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
        stale_after_s: float = 0.25,
        formats: tuple[str, ...] = ("float32", "double64", "int32", "int16"),
        check_finite: bool = True,
        backoff_max_s: float = 2.0,
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

        self._period = 1.0 / self.sampling_rate
        tol = 0.5 * self._period if gap_tolerance_s is None else float(gap_tolerance_s)
        self.gap_tolerance_s = tol
        self._gap_thr = self._period + tol  # a step above this is a gap
        self._reset_thr = self._period + tol  # a step below minus this is a clock reset

        # outputs of pull(): preallocated once
        self.data = np.zeros((self.max_chunk, self.n_channels), dtype=np.float32)
        self.timestamps = np.zeros(self.max_chunk, dtype=np.float64)
        self.last_gap_samples = 0
        self.last_gap_at = -1
        self.last_flags = 0
        self.events = SourceEvents()
        self.last_error = ""  # the latest refusal or failure during reconnection, for status

        self._raw = np.zeros(self.max_chunk + 1, dtype=np.float64)  # [prev, raw stamps of this pull]
        self._dt = np.zeros(self.max_chunk, dtype=np.float64)
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
            ts = inlet.pull_chunk(timeout=self.pull_timeout, max_samples=1, dest_obj=self._dest, **self._kw)[1]
            n = len(ts)
            if n == 0:
                self._on_empty()
                return 0
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
        if self._convert:
            np.copyto(self.data[:n], self._dest[:n], casting="unsafe")
        now = pylsl.local_clock()
        self._last_data = now
        self._connected = True
        if now >= self._next_offset:
            self._refresh_offset(now)
        ts_out = self.timestamps[:n]
        np.add(raw[1 : n + 1], self._offset, out=ts_out)

        # timestamp checks on raw stamps: fast path is two reductions
        raw[0] = raw[1] - self._period if self._prev_ts != self._prev_ts else self._prev_ts
        dt = self._dt[:n]
        np.subtract(raw[1 : n + 1], raw[:n], out=dt)
        if dt.max() > self._gap_thr or dt.min() <= 0.0:
            self._inspect(n)
        self._prev_ts = raw[n]

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
        if self.check_finite and not math.isfinite(self.data[:n].sum()):
            self.last_flags |= PULL_NONFINITE
            ev.nonfinite_chunks += 1
        if now - ts_out[n - 1] > self.stale_after_s:
            self.last_flags |= PULL_STALE
            ev.stale_chunks += 1
        return n

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

    def _choose(self, infos: list):
        """Prefer a name match over a type match, then the newest stream."""
        best = sorted(infos, key=lambda i: (i.name() == self.query, i.created_at()), reverse=True)
        if len(best) > 1:
            log.warning(
                "%d streams match %r; using %s (others: %s). Pass --source-id to pin one.",
                len(best),
                self.query,
                _describe(best[0]),
                "; ".join(_describe(i) for i in best[1:]),
            )
        return best[0]

    def _resolve(self, timeout: float):
        infos = pylsl.resolve_bypred(self._predicate(), 1, timeout)
        if infos:
            return self._choose(infos)
        wait = min(1.0, max(0.2, timeout / 5))
        visible = pylsl.resolve_streams(wait_time=wait)
        listing = "; ".join(_describe(i) for i in visible) if visible else "none"
        pinned = f" with source_id '{self.source_id}'" if self.source_id else ""
        raise StreamNotFoundError(
            f"no LSL stream named or typed '{self.query}'{pinned} found within {timeout:g} s. "
            f"Visible streams: {listing}. Start the acquisition (or `rtdecode replay <recording.npz>`), "
            f"check that it is on this network (LSL ResolveScope, firewall), or pass --stream with one "
            f"of the names or types above."
        )

    def _validate(self, info) -> None:
        where = f"stream '{info.name()}' (type '{info.type()}', source_id '{info.source_id()}')"
        if info.channel_count() != self.n_channels:
            raise StreamMismatchError(
                f"{where} has {info.channel_count()} channels, bundle expects {self.n_channels} "
                f"(manifest.json input.n_channels): {_REMEDY}"
            )
        rate = info.nominal_srate()
        if rate <= 0:
            raise StreamMismatchError(
                f"{where} has an irregular rate (nominal_srate {rate:g}), bundle expects "
                f"{self.sampling_rate:g} Hz (manifest.json input.sampling_rate): {_REMEDY}"
            )
        if abs(rate - self.sampling_rate) > 1e-6 * self.sampling_rate:
            raise StreamMismatchError(
                f"{where} has a nominal rate of {rate:g} Hz, bundle expects {self.sampling_rate:g} Hz "
                f"(manifest.json input.sampling_rate): resample at the source, {_REMEDY}"
            )
        fmt = _fmt_name(info)
        if fmt not in self.formats:
            raise StreamMismatchError(
                f"{where} sends {fmt} samples, the runtime reads {', '.join(self.formats)} "
                f"(converted to the bundle's float32, manifest.json input.dtype): "
                f"send a numeric format from the acquisition or {_REMEDY}"
            )

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
        if fmt == "float32":
            self._dest, self._convert = self.data, False
        else:
            self._dest, self._convert = np.zeros((self.max_chunk, self.n_channels), _NUMPY_DTYPES[fmt]), True
        self._dest_rest = self._dest[1:]
        try:
            labels = full.get_channel_labels() if hasattr(full, "get_channel_labels") else None
        except Exception:  # pragma: no cover - malformed desc
            labels = None
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
        }
        self._connected = True
        self._prev_ts = math.nan
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

    def _inspect(self, n: int) -> None:
        """Slow path: locate and classify the timestamp steps that tripped the fast check."""
        dt = self._dt[:n]
        ev = self.events
        for i in np.flatnonzero((dt > self._gap_thr) | (dt <= 0.0)):
            d = float(dt[i])
            if d > self._gap_thr:
                lost = max(1, int(round(d / self._period)) - 1)
                self.last_gap_samples += lost
                if self.last_gap_at < 0:
                    self.last_gap_at = int(i)
                self.last_flags |= PULL_GAP
                ev.gaps += 1
                ev.samples_lost_est += lost
            elif d < -self._reset_thr:
                self.last_flags |= PULL_CLOCK_RESET
                ev.clock_resets += 1
                self._next_offset = 0.0  # re-read the offset at the next pull
            else:
                self.last_flags |= PULL_BACKSTEP
                ev.backsteps += 1
