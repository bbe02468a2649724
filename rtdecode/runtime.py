"""The real-time loop: pull chunk -> signal chain -> per bin: window, infer, publish.

One message per bin (sequence number, LSL timestamp of the bin's last sample,
publish time, processing latency, age, flags, values). A deadline per bin (the bin
width by default), measured from the bin's last sample (its dejittered, clock-corrected
LSL time, on the same clock as `local_clock()`) to publication, so time spent waiting in
the inlet or behind a slow step counts: overruns are counted, flagged and reported.
Telemetry goes out on the `status` topic once a second and into a summary at shutdown.
The status line is written by a low-priority thread, never by the loop, and with
`--lsl-out NAME` every decoded bin also goes to an LSL outlet stamped with its `t_lsl`.

Scheduling (docs/bench/bench_s5_tail.md has what each bought): the source polls for the
next chunk from `spin_s` (0.5 ms) before it is due instead of sleeping through it; the
garbage collector is off in the loop (`gc_mode = "tick"`: start-up objects frozen, one
collection per status tick, between bins); the status tick itself waits until a pull has
completed a bin; `rt_priority` N > 0 puts the loop, liblsl's and ZeroMQ's threads on
SCHED_FIFO (where permitted; otherwise a warning) and restores them at the end.

The loop knows its source, sink and backend only through the small surfaces they
expose (`pull`/`data`/`timestamps`/`poll_reconnect`, `publish_*`, `infer`), and the
hot path (per chunk, per bin) allocates no arrays and logs nothing.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .bundle import Bundle
from .dsp import SignalChain, WindowRing
from .dsp.spec import NORM_FLOOR
from .dsp.kernels import count_changes, has_nonfinite, hold_nonfinite
from pylsl import local_clock

log = logging.getLogger(__name__)

from .sinks.zmq import (  # message flags, documented in docs/schema.md
    FLAG_CLOCK_RESET,
    FLAG_FLAT_CHANNEL,
    FLAG_INPUT_SCALE,
    FLAG_GAP,
    FLAG_OVERRUN,
    FLAG_RATE,
    FLAG_RECONNECTED,
    FLAG_REPAIRED,
    FLAG_STALE,
    FLAG_TIME_JITTER,
    FLAG_WARMUP,
)

_SOURCE_FLAGS = FLAG_STALE | FLAG_CLOCK_RESET | FLAG_TIME_JITTER | FLAG_RATE  # passed from the source to the bins
# flags of samples, carried to the bin that contains them even when it completes in a later pull
_CARRIED = _SOURCE_FLAGS | FLAG_REPAIRED | FLAG_GAP


@dataclass(frozen=True)
class RunConfig:
    """`rtdecode run` settings (configs/run.toml; every key is a CLI flag too)."""

    stream: str = "LFP"
    bundle: str = ""
    address: str = "tcp://127.0.0.1:5556"
    backend: str = "auto"
    fallback: bool = False
    threads: int = 1
    deadline_ms: float | None = None  # default: the bin width
    stall_policy: Literal["all", "newest"] = "all"
    status_interval_s: float = 1.0
    max_chunk: int = 1024
    pull_timeout_s: float = 0.05
    stall_timeout_s: float = 0.5
    resolve_timeout_s: float = 10.0
    max_fill_s: float = 0.5  # gaps up to this long are filled (cadence kept); longer ones reset the chain
    source_id: str | None = None
    duration_s: float | None = None
    summary_path: str | None = None
    quiet: bool = False  # hides the status line only
    lsl_out: str | None = None  # also publish the decoded bins on an LSL outlet of this name
    # the loop's own scheduling (docs/bench/bench_s5_tail.md has what each one bought):
    gc_mode: Literal["tick", "python"] = "tick"  # tick: no automatic collection in the loop, one per status tick
    spin_s: float = 0.0005  # > 0: poll for the next chunk this long either side of its expected arrival
    rt_priority: int = 0  # > 0: SCHED_FIFO at this priority for the loop, liblsl's and ZeroMQ's threads
    input_scale: float = 1.0  # every sample is multiplied by this before the chain (1e6: a stream in volts
    # for a bundle trained on microvolts); the amplitude watch (FLAG_INPUT_SCALE) says when it looks wrong
    renormalize_s: float = 0.0  # > 0: once the filters settle, refit the chain's z-scoring on this many seconds
    # of the stream (label-free: a new day for a bundle trained with [chain] normalize = "session"); bins
    # carry WARMUP until then and for one model window after


# the amplitude watch: over a status period, the normalised features' variance (about 1 on the
# training data) below 1/SCALE_BOUND (an amplitude about 30x too small: a linear chain fed volts or
# millivolts), or their mean square above SCALE_BOUND (too large, or the offset a log-power chain
# shows for a wrong scale), on SCALE_CHECKS status periods in a row: bins carry FLAG_INPUT_SCALE
SCALE_BOUND = 1e3
SCALE_CHECKS = 3


@dataclass
class Telemetry:
    """Counters and a fixed-size latency ring; percentiles computed once per status tick."""

    capacity: int = 1 << 16
    bins: int = 0
    published: int = 0
    skipped: int = 0  # bins not decoded under the 'newest' stall policy
    overruns: int = 0
    late_on_arrival: int = 0  # overruns already past the deadline when their chunk was pulled (not filled bins)
    gaps: int = 0
    filled_samples: int = 0
    resets: int = 0
    reconnects: int = 0
    repaired_chunks: int = 0
    samples: int = 0
    long_pulls: int = 0  # pulls of more than one bin's samples (an outlet's chunking, or a backlog)
    lat: np.ndarray = field(default=None)  # type: ignore[assignment]  # processing latency, ms
    age: np.ndarray = field(default=None)  # type: ignore[assignment]  # bin's last sample -> publish, ms
    _n: int = 0
    _mark: int = 0

    def __post_init__(self):
        self.lat = np.zeros(self.capacity, dtype=np.float64)
        self.age = np.zeros(self.capacity, dtype=np.float64)

    def record(self, latency_ms: float, age_ms: float = float("nan")) -> None:
        i = self._n % self.capacity
        self.lat[i] = latency_ms
        self.age[i] = age_ms
        self._n += 1

    def percentiles(self, since_mark: bool = False, which: str = "lat") -> dict:
        n = self._n - (self._mark if since_mark else 0)
        n = min(n, self.capacity)
        if n <= 0:
            return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
        end = self._n % self.capacity
        idx = (np.arange(end - n, end)) % self.capacity
        v = (self.age if which == "age" else self.lat)[idx]
        p = np.percentile(v, [50, 90, 99])
        return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "max": float(v.max()), "n": int(n)}

    def mark(self) -> None:
        self._mark = self._n


def warn_normalization(bundle: Bundle, renormalize_s: float) -> bool:
    """A bundle trained on per-session z-scoring (chain.norm_scope "session") that nothing has
    renormalised for this day decodes on its export session's statistics: say so, once, with
    the two fixes. True when it warned."""
    cal = bundle.provenance.get("calibration") if isinstance(bundle.provenance, dict) else None
    if bundle.chain.norm_scope != "session" and renormalize_s:  # found by a new-user probe: said nothing
        log.warning("%s was trained on features z-scored over every training session together (chain.norm_scope "
                    "'pooled'): its decoder never saw per-session statistics, so --renormalize (which refits them on "
                    "this stream, label-free) may not help and can hurt; train with [chain] normalize = \"session\" "
                    "for it, or check it with `rtdecode calibrate BUNDLE DAY.nwb --renormalize`", bundle.path)  # fmt: skip
        return True
    if bundle.chain.norm_scope != "session" or renormalize_s or (isinstance(cal, dict) and cal.get("renormalized")):
        return False
    log.warning("%s was trained on features z-scored per session, and holds its export session's statistics: on another "
                "day pass --renormalize 120 (refit on the stream's first 2 minutes, label-free), or renormalise it "
                "once with `rtdecode calibrate BUNDLE DAY.nwb --label-free --minutes 3 --out NEW`", bundle.path)  # fmt: skip
    return True


class Runtime:
    """Owns the loop. Build with `Runtime.from_config` or pass the parts (tests, bench)."""

    def __init__(self, bundle: Bundle, source, sink, backend, cfg: RunConfig, backend_reason: str = "",
                 lsl_out=None):  # fmt: skip
        self.bundle, self.source, self.sink, self.backend, self.cfg = bundle, source, sink, backend, cfg
        self.lsl_out = lsl_out  # optional second sink: rtdecode.sinks.lsl_out.LslOutlet
        self._printer: _StatusPrinter | None = None
        self.backend_reason = backend_reason or getattr(backend, "name", "?")
        spec = bundle.chain
        self.chain = SignalChain(spec, max_chunk=cfg.max_chunk)
        self.streaming = bundle.model.kind == "streaming"
        self.ring = WindowRing(bundle.model.window_bins, spec.n_features)
        self.deadline_ms = cfg.deadline_ms if cfg.deadline_ms is not None else spec.bin_width_s * 1e3
        self.tel = Telemetry()
        self.seq = 0
        self.first_sample_ts: float | None = None  # LSL time of the first sample decoded
        self.stop_event = threading.Event()
        self._max_fill = max(1, int(round(cfg.max_fill_s * spec.fs)))
        self._fill = np.zeros((min(self._max_fill, cfg.max_chunk), spec.n_channels), dtype=np.float32)
        self._fill_ts = np.zeros(self._fill.shape[0], dtype=np.float64)
        self._steps = np.arange(1, self._fill.shape[0] + 1, dtype=np.float64)
        self._last_ts = 0.0
        self._last_good = np.zeros(spec.n_channels, dtype=np.float32)
        # flat-channel watch: per-channel change counts over one status period
        self._ch_last = np.full(spec.n_channels, np.nan, dtype=np.float32)
        self._ch_changes = np.zeros(spec.n_channels, dtype=np.int64)
        self._flat_flag = 0  # FLAG_FLAT_CHANNEL while the last period found a flat channel
        self.flat_channels: list[int] = []
        self._samples_at_check = 0
        # amplitude watch: the normalised features' sums over a status period (`_check_scale`): FLAG_INPUT_SCALE
        self._scale = np.float32(cfg.input_scale)
        self._scale_flag = 0
        self._scale_bad = 0  # status periods in a row out of range
        self._f_sum = np.zeros(spec.n_features, dtype=np.float64)  # this period's features: sum, sum of squares
        self._f_sq = np.zeros(spec.n_features, dtype=np.float64)
        self._f_tmp = np.zeros(spec.n_features, dtype=np.float64)
        self._f_n = 0
        self.input_var: float | None = None  # last check: the normalised features' variance over the period (mean over features)
        self._carry_flags = 0
        self._one = np.zeros((1, 1, spec.n_features), dtype=np.float32)  # streaming input
        self._pending_flags = 0  # RECONNECTED after a reconnect or reset; a fresh start is only WARMUP
        self._warm_bins = 0
        # WARMUP until the model window is full of real bins and the filters have settled
        self._warm_needed = max(self.ring.n_bins, self.chain.settle_bins)
        # online renormalisation (cfg.renormalize_s): the features' sums over the first bins after
        # the filters settle, then the chain's mean/std set in place once (`_renormalize`)
        self._rn_bins = int(round(cfg.renormalize_s / spec.bin_width_s)) if cfg.renormalize_s else 0
        self._rn_sum = np.zeros(spec.n_features, dtype=np.float64)
        self._rn_sq = np.zeros(spec.n_features, dtype=np.float64)
        self._rn_n = 0
        self.renormalized: dict | None = None  # what the renormalisation found (summary)
        if self._rn_bins:
            self._warm_needed = self.chain.settle_bins + self._rn_bins + self.ring.n_bins
        self._signals = 0
        self._chain_ms = 0.0  # chain time of the chunk that completed the current bins
        self._t_start = 0.0
        self._last_status = 0.0
        self.gc_stats = {"mode": cfg.gc_mode, "collections": 0, "max_ms": 0.0, "total_ms": 0.0}
        self._gc_t0 = 0.0
        self._gc_tick = False
        self.rt_priority = "off"  # what rt_priority achieved (summary)
        self._ticks = 0
        self._late_at = (0, 0, 0, 0, 0, 0, 0)  # published, overruns, late_on_arrival, samples, pulls, stalls + catch-ups, long pulls at the last status
        self._bin_samples = int(self.chain.spec.bin_samples)
        self._late_warned = False

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: RunConfig) -> "Runtime":
        from .backends import select_backend
        from .bundle import load_bundle
        from .sinks.zmq import ZmqPublisher
        from .sources.lsl import LSLSource

        bundle = load_bundle(cfg.bundle)
        warn_normalization(bundle, cfg.renormalize_s)
        backend, reason = select_backend(bundle, cfg.backend, fallback=cfg.fallback, threads=cfg.threads)
        source = LSLSource(
            cfg.stream,
            n_channels=bundle.n_channels,
            sampling_rate=bundle.sampling_rate,
            max_chunk=cfg.max_chunk,
            resolve_timeout=cfg.resolve_timeout_s,
            stall_timeout=cfg.stall_timeout_s,
            pull_timeout=cfg.pull_timeout_s,
            source_id=cfg.source_id,
            spin_s=cfg.spin_s,
            channel_names=bundle.channel_names,
        )
        sink = lsl_out = None
        try:
            # bind first: subscribers can connect while the stream is being resolved,
            # so they miss no bin (ZeroMQ's slow-joiner problem)
            sink = ZmqPublisher(cfg.address)
            if cfg.lsl_out:
                from .sinks.lsl_out import LslOutlet

                lsl_out = LslOutlet(cfg.lsl_out, bundle.output_names, bundle.output_units,
                                    bundle.chain.bin_rate, bundle=str(bundle.path))  # fmt: skip
            source.open()
        except BaseException:
            source.close()
            backend.close()
            for part in (sink, lsl_out):
                if part is not None:
                    part.close()
            raise
        return cls(bundle, source, sink, backend, cfg, backend_reason=reason, lsl_out=lsl_out)

    # -- the loop -----------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM stop the loop cleanly; a second signal exits at once."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            self._signals += 1
            if self._signals > 1:
                sys.stderr.write("\nsecond signal: exiting now\n")
                sys.stderr.flush()
                import os

                os._exit(128 + signum)
            self.stop_event.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def run(self) -> dict:

        cfg = self.cfg
        src = self.source
        if not cfg.quiet and self._printer is None:
            self._printer = _StatusPrinter()
        rt_restore: list = []
        gc_was_enabled = gc.isenabled()

        def prepare() -> None:  # after the first-call costs, before the inlet is flushed
            if cfg.rt_priority > 0:
                self.rt_priority = _realtime(cfg.rt_priority, rt_restore)
            if cfg.gc_mode == "tick":
                # what start-up built (modules, bundle, sessions) is never garbage: freeze it, so
                # that a collection only looks at what the loop made; collect once per status
                # tick, right after a chunk is handled, instead of whenever an allocation count trips
                gc.collect()
                gc.freeze()
                gc.disable()
                self._gc_tick = True
            gc.callbacks.append(self._gc_timer)

        try:
            self.warmup(before_flush=prepare)
            hello = self.hello()
            self.sink.publish_hello(hello)
            self._t_start = self._last_status = local_clock()
            t_end = self._t_start + cfg.duration_s if cfg.duration_s else float("inf")
            timed = hasattr(src, "t_data")  # the source says when the data was in hand, before its own work
            while not self.stop_event.is_set():
                n = src.pull()
                now = local_clock()
                if n:
                    self._on_chunk(n, src.t_data if timed else now)
                elif not src.connected:
                    if src.poll_reconnect():
                        self.tel.reconnects += 1
                        self._reset(FLAG_RECONNECTED)
                # status (and the loop's garbage collection) between bins: after a pull that
                # completed a bin, not while one is half in, unless that takes a whole interval more
                since = now - self._last_status
                if since >= cfg.status_interval_s and (not self.chain.samples_in_bin or since >= 2 * cfg.status_interval_s):
                    self._status(now)
                if now >= t_end:
                    break
        finally:
            for tid, policy, prio in rt_restore:  # in-process use (tests, notebooks): leave no thread real-time
                try:
                    os.sched_setscheduler(tid, policy, os.sched_param(prio))
                except OSError:
                    pass
            if self._gc_tick:
                self._gc_tick = False
                gc.unfreeze()
                if gc_was_enabled:
                    gc.enable()
            try:
                gc.callbacks.remove(self._gc_timer)
            except ValueError:
                pass
            summary = self.summary()
            try:
                self.sink.publish_status({**summary, "final": True})
            finally:
                self.close()
        return summary

    def _gc_timer(self, phase: str, info: dict) -> None:
        """gc.callbacks: count the collections made while the loop runs and time them."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_t0) * 1e3
        g = self.gc_stats
        g["collections"] += 1
        g["total_ms"] += ms
        g["max_ms"] = max(g["max_ms"], ms)

    def warmup(self, before_flush=None) -> None:
        """Pay every first-call cost (numba cache load, ONNX Runtime/TensorRT first runs)
        before the first real chunk, then drop the samples that queued up meanwhile, so
        the first bins are neither late nor decoded from a backlog."""
        self.backend.warmup()
        spec = self.bundle.chain
        self.chain.process(np.zeros((spec.bin_samples, spec.n_channels), dtype=np.float32), spec.bin_samples)
        self.chain.reset()
        probe = np.full((1, spec.n_channels), np.nan, dtype=np.float32)  # the repair's kernels, loaded before a NaN comes
        if has_nonfinite(probe, 1):
            hold_nonfinite(probe, 1, np.zeros(spec.n_channels, dtype=np.float32))
        if before_flush is not None:
            before_flush()
        flush = getattr(self.source, "flush", None)
        if flush is not None:
            flush()

    def _reset(self, flag: int) -> None:
        self.chain.reset()
        self.ring.clear()
        self.backend.reset_state()
        self._warm_bins = 0
        if self.renormalized is not None:  # the stream's statistics stand: only the filters and the window refill
            self._warm_needed = max(self.ring.n_bins, self.chain.settle_bins)
        elif self._rn_bins:  # a reset mid-collection: collect again once the filters settle
            self._rn_n = 0
            self._rn_sum[:] = 0.0
            self._rn_sq[:] = 0.0
        self._pending_flags |= flag
        self._carry_flags = 0  # the partial bin they belonged to is gone
        self.tel.resets += 1

    def _on_chunk(self, n: int, t_arrive: float) -> None:
        src = self.source
        data, ts = src.data, src.timestamps
        flags = (getattr(src, "last_flags", 0) & _SOURCE_FLAGS) | self._pending_flags
        if self._scale != 1.0:  # in place, in the source's own buffer (before repair: its values are scaled)
            np.multiply(data[:n], self._scale, out=data[:n])
        if has_nonfinite(data, n):
            self._repair(data, n)
            flags |= FLAG_REPAIRED
            self.tel.repaired_chunks += 1
        if self.tel.samples == 0:
            self.first_sample_ts = float(ts[0])
        self.tel.samples += n
        if n > self._bin_samples:
            self.tel.long_pulls += 1
        count_changes(data, n, self._ch_last, self._ch_changes)
        flags |= self._flat_flag | self._scale_flag
        gap = getattr(src, "last_gap_samples", 0)
        if gap <= 0:
            self._process(data, n, ts, flags, t_arrive)
        else:  # rare path: samples [0, at) came before the gap, [at, n) after it
            self.tel.gaps += 1
            at = max(0, getattr(src, "last_gap_at", 0))
            if at:
                self._process(data[:at], at, ts[:at], flags, t_arrive)
            if gap <= self._max_fill:
                self._fill_gap(gap, t_arrive, float(ts[at]))  # the bins it completes, and the next one: GAP
            else:
                self._reset(FLAG_GAP | FLAG_RECONNECTED)
            # the real samples after the gap: only the bin that still holds filled ones is GAP
            # (the source may have settled the gap's size on a longer stretch of them)
            self._process(data[at:n], n - at, ts[at:n], flags | self._pending_flags, t_arrive)

    def _process(self, data: np.ndarray, n: int, ts: np.ndarray, flags: int, t_arrive: float) -> None:
        if n <= 0:
            return
        t0 = local_clock()
        bins = self.chain.process(data, n)
        self._chain_ms = (local_clock() - t0) * 1e3  # published per bin (chain_ms)
        # a flagged sample may sit in a bin that completes in a later pull: carry its flags
        # to the first bin this pull completes
        carry = self._carry_flags
        if bins.shape[0]:
            self._on_bins(bins, bins.shape[0], flags, t_arrive, ts, carry)
            self._carry_flags = flags & _CARRIED if self.chain.samples_in_bin else 0
        else:
            self._carry_flags = (flags | carry) & _CARRIED
        self._last_good[:] = data[n - 1]
        self._last_ts = ts[n - 1]

    def _fill_gap(self, gap: int, t_arrive: float, t_next: float | None = None) -> None:
        """Keep the bin cadence across a short gap: feed the last good sample `gap` times;
        bins completed by filled samples are decoded and published with FLAG_GAP, stamped
        with the times the missing samples would have had (evenly between the samples
        around the gap, on the source's dejittered clock)."""
        fill = self._fill
        fill[:] = self._last_good
        t0 = self._last_ts
        dt = (t_next - t0) / (gap + 1) if t_next is not None else 1.0 / self.bundle.chain.fs
        left = gap
        while left > 0:
            m = min(left, fill.shape[0])
            np.multiply(self._steps[:m], dt, out=self._fill_ts[:m])
            self._fill_ts[:m] += t0
            bins = self.chain.process(fill, m)
            if bins.shape[0]:
                self._on_bins(bins, bins.shape[0], FLAG_GAP | self._pending_flags, t_arrive, self._fill_ts,
                              self._carry_flags)  # fmt: skip
                self._carry_flags = 0
            t0 = self._fill_ts[m - 1]
            left -= m
        self._carry_flags |= FLAG_GAP  # the next bin holds filled samples, or follows them
        self.tel.filled_samples += gap

    def _repair(self, data: np.ndarray, n: int) -> None:
        """Replace NaN/Inf by the channel's last finite value (as compute_features does offline)."""
        hold_nonfinite(data, n, self._last_good)

    def _advance(self, row: np.ndarray):
        """Push one bin into the window; a streaming model consumes every bin (its state
        must advance) and returns its output, a window model returns None here."""
        self.ring.push(row)
        self.tel.bins += 1
        np.add(self._f_sum, row, out=self._f_sum)  # the amplitude watch's sums: no allocation
        np.multiply(row, row, out=self._f_tmp)
        np.add(self._f_sq, self._f_tmp, out=self._f_sq)
        self._f_n += 1
        if self._rn_n < self._rn_bins and self._warm_bins >= self.chain.settle_bins:
            np.add(self._rn_sum, row, out=self._rn_sum)
            np.add(self._rn_sq, self._f_tmp, out=self._rn_sq)
            self._rn_n += 1
            if self._rn_n == self._rn_bins:
                self._renormalize()
        if self._warm_bins < self._warm_needed:
            self._warm_bins += 1
        if self.streaming:
            self._one[0, 0] = row
            return self.backend.infer(self._one)
        return None

    def _renormalize(self) -> None:
        """Once: the chain's z-scoring refit on the bins summed since the filters settled. The
        sums are of features normalised with the bundle's statistics (z = (x - m) / s), so the
        stream's own are m + s * mean(z) and s * std(z), written into the chain's arrays in place
        (`SignalChain.set_normalization`; this runs once). The model window then refills with
        renormalised bins (WARMUP meanwhile)."""
        ch = self.chain
        n = float(self._rn_n)
        std0 = ch.norm_std  # rare path: once per run
        mz = self._rn_sum / n
        sz = np.sqrt(np.maximum(self._rn_sq / n - mz * mz, 0.0))
        flat = int((std0 * sz <= NORM_FLOOR).sum())
        ch.set_normalization(ch.norm_mean + std0 * mz, std0 * sz)
        self._warm_needed = max(self._warm_bins + 1 + self.ring.n_bins, self._warm_needed)
        self.renormalized = {"bins": int(self._rn_n), "seconds": round(self._rn_n * self.bundle.chain.bin_width_s, 3),
                             "at_bin": int(self.tel.bins), "flat_features": flat,
                             "rms_before": float(np.sqrt(np.mean(self._rn_sq / n)))}  # fmt: skip
        log.info("renormalised: the chain's z-scoring refit on %.1f s of the stream (features' RMS under the bundle's "
                 "statistics was %.3g)%s", self.renormalized["seconds"], self.renormalized["rms_before"],
                 f"; {flat} features flat (std floored)" if flat else "")  # fmt: skip

    def _on_bins(self, bins: np.ndarray, k: int, flags: int, t_arrive: float, ts: np.ndarray, carry: int = 0) -> None:

        ends = self.chain.ends
        newest_only = self.cfg.stall_policy == "newest"
        deadline_s = self.deadline_ms / 1e3
        lsl_out = self.lsl_out
        shift = getattr(self.source, "clock_shift", 0.0)  # the stream's stamps jumped back this much (clock resets)
        for j in range(k):
            t_inf = local_clock()
            t_lsl = float(ts[ends[j]])  # the bin's last sample, dejittered, on local_clock()
            y = self._advance(bins[j])
            # behind: a bin already past its deadline is skipped when a newer one is waiting
            if newest_only and j < k - 1 and t_inf - t_lsl - shift > deadline_s:
                self.tel.skipped += 1
                continue
            if y is None:
                y = self.backend.infer(self.ring.window())
            f = flags | carry  # carried flags go to the first bin published
            carry = 0
            if self._warm_bins < self._warm_needed:
                f |= FLAG_WARMUP
            t_pub = local_clock()
            infer_ms = (t_pub - t_inf) * 1e3  # window push + inference of this bin
            lat = (t_pub - t_arrive) * 1e3  # processing: chunk in hand -> publish
            age = (t_pub - t_lsl - shift) * 1e3  # the deadline's measure: bin's last sample -> publish
            if age > self.deadline_ms:
                f |= FLAG_OVERRUN
                self.tel.overruns += 1
                if age - lat > self.deadline_ms and not f & FLAG_GAP:  # late before the pull returned its samples
                    self.tel.late_on_arrival += 1
            self.sink.publish_kinematics(self.seq, t_lsl, t_pub, lat, y, f,
                                         chain_ms=self._chain_ms, infer_ms=infer_ms, age_ms=age)  # fmt: skip
            if lsl_out is not None:
                lsl_out.push(y, t_lsl)
            self.seq += 1
            self.tel.published += 1
            self.tel.record(lat, age)
        if self._warm_bins >= self._warm_needed:
            self._pending_flags = 0

    # -- telemetry ------------------------------------------------------------------
    def hello(self) -> dict:
        b = self.bundle
        return {
            "bundle": str(b.path),
            "names": list(b.output_names),
            "units": list(b.output_units),
            "bin_width_s": b.chain.bin_width_s,
            "window_bins": b.model.window_bins,
            "model_kind": b.model.kind,
            "backend": self.backend_reason,
            "deadline_ms": self.deadline_ms,
            "stream": getattr(self.source, "info", {}),
        }

    def _check_channels(self) -> None:
        """Once per status period: channels that did not change at all are flat (dead or
        railed); bins carry FLAG_FLAT_CHANNEL until a period finds none."""
        if self.tel.samples - self._samples_at_check < 2:
            return  # no data this period (stalled or lost): nothing to judge
        self._samples_at_check = self.tel.samples
        flat = np.flatnonzero(self._ch_changes == 0)
        if flat.size != len(self.flat_channels) or (flat.size and (flat != self.flat_channels).any()):
            names = self.bundle.channel_names
            if flat.size:
                log.warning("flat channels (no change for a status period): %s",
                            [names[i] if names else int(i) for i in flat[:16]])  # fmt: skip
            self.flat_channels = flat.tolist()
        self._flat_flag = FLAG_FLAT_CHANNEL if flat.size else 0
        self._ch_changes[:] = 0

    def _check_scale(self) -> None:
        """Once per status period, after warm-up: the normalised features' variance over the
        period's bins (mean over features) and their mean square, both about 1 on the training
        data. Variance below 1/SCALE_BOUND or mean square above SCALE_BOUND on SCALE_CHECKS
        periods in a row: the input's amplitude is not the training data's (a stream in volts or
        millivolts for a bundle trained on microvolts, a gain setting); bins carry
        FLAG_INPUT_SCALE until a period is back in range, and one warning says what to do."""
        n = self._f_n
        mean_sq = self._f_sq / max(n, 1)
        var = float(np.mean(mean_sq - (self._f_sum / max(n, 1)) ** 2))
        ms = float(np.mean(mean_sq))
        self._f_sum[:] = 0.0
        self._f_sq[:] = 0.0
        self._f_n = 0
        if self._warm_bins < self._warm_needed or n < 10:
            return  # filters still settling, or too few bins this period to judge
        self.input_var = max(var, 0.0)
        out = var < 1.0 / SCALE_BOUND or ms > SCALE_BOUND
        self._scale_bad = self._scale_bad + 1 if out else 0
        if out and self._scale_bad == SCALE_CHECKS:
            unit = getattr(self.bundle, "input_unit", "uV")
            log.warning(
                "the input's amplitude is not the training data's: the normalised features' RMS deviation is %.3g and "
                "their RMS %.3g (both about 1 when trained; the bundle expects %s). A stream in volts needs "
                "--input-scale 1e6, in millivolts 1e3 (now %g); bins carry INPUT_SCALE until it is back in range",
                max(var, 0.0) ** 0.5, ms**0.5, unit, float(self._scale))  # fmt: skip
            self._scale_flag = FLAG_INPUT_SCALE
        elif not out and self._scale_flag:
            log.warning("the input's amplitude is back in the training data's range (RMS deviation of the normalised "
                        "features %.3g)", max(var, 0.0) ** 0.5)  # fmt: skip
            self._scale_flag = 0

    def _check_lateness(self) -> None:
        """Once per status period: when a tenth of the period's bins overran and nearly all of them
        were already late when their chunk was pulled, the stream's chunking is the cause (an
        outlet that sends chunks longer than a bin holds a bin's last sample until the chunk
        goes), not rtdecode's processing: say so once, with the fix."""
        t = self.tel
        bins, over, late = t.published - self._late_at[0], t.overruns - self._late_at[1], t.late_on_arrival - self._late_at[2]
        ev = getattr(self.source, "events", None)
        pulls = getattr(ev, "chunks", 0) or 0
        stalls = (getattr(ev, "stalls", 0) or 0) + (getattr(ev, "catchups", 0) or 0)
        samples, n_pulls = t.samples - self._late_at[3], pulls - self._late_at[4]
        stalled = stalls > self._late_at[5]  # the outlet stalled this period: its backlog, not its chunking, was late
        n_long = t.long_pulls - self._late_at[6]
        self._late_at = (t.published, t.overruns, t.late_on_arrival, t.samples, pulls, stalls, t.long_pulls)
        per = samples / n_pulls if n_pulls > 0 else 0.0
        # most pulls longer than a bin: the outlet's chunks are (one hiccup's backlog, pulled at
        # once, raises the mean samples per pull but not this); else the lateness came from elsewhere
        if (self._late_warned or stalled or bins < 20 or over < max(5, 0.1 * bins) or late < 0.8 * over
                or n_pulls == 0 or n_long < 0.5 * n_pulls):  # fmt: skip
            return
        self._late_warned = True
        rate = self.bundle.sampling_rate
        log.warning("%d of %d bins in the last status period were past the %.3g ms deadline before rtdecode had their "
                    "samples (the stream arrives in chunks of %.1f samples on average, %.1f ms): the lateness is the "
                    "outlet's chunking, not the decoding. Send smaller chunks from the acquisition (at most one bin, "
                    "%d samples), or set --deadline-ms above the chunk's duration plus the processing time",
                    over, bins, self.deadline_ms, per, 1e3 * per / rate, self.chain.spec.bin_samples)  # fmt: skip

    def _status(self, now: float) -> None:
        self._ticks += 1
        if self._gc_tick:  # the loop's one collection per tick, right after a chunk was handled
            gc.collect()
        self._check_channels()
        self._check_scale()
        self._check_lateness()
        src_ev = getattr(self.source, "events", None)
        p = self.tel.percentiles(since_mark=True)
        pa = self.tel.percentiles(since_mark=True, which="age")
        dt = now - self._last_status
        st = {
            "t": now,
            "uptime_s": now - self._t_start,
            "bins": self.tel.bins,
            "published": self.tel.published,
            "rate_hz": (p["n"] / dt) if dt > 0 else 0.0,
            "lat_ms": p,
            "age_ms": pa,
            "overruns": self.tel.overruns,
            "late_on_arrival": self.tel.late_on_arrival,
            "skipped": self.tel.skipped,
            "gaps": self.tel.gaps,
            "filled_samples": self.tel.filled_samples,
            "resets": self.tel.resets,
            "reconnects": self.tel.reconnects,
            "repaired_chunks": self.tel.repaired_chunks,
            "connected": bool(getattr(self.source, "connected", True)),
            "source_error": getattr(self.source, "last_error", ""),
            "flat_channels": self.flat_channels,
            "input_rms": None if self.input_var is None else self.input_var**0.5,
            "input_scale_ok": not self._scale_flag,
            "source_events": src_ev.__dict__ if src_ev is not None and hasattr(src_ev, "__dict__") else {},
            "dropped_msgs": getattr(self.sink, "dropped", 0),
            "backend": self.backend_reason,
            "names": list(self.bundle.output_names),
        }
        self.sink.publish_status(st)
        self.tel.mark()
        self._last_status = now
        if self._printer is not None:  # formatted and written by the printer thread, never here
            self._printer.put((st["rate_hz"], p["p50"], p["p99"], pa["p99"], self.tel.overruns, self.tel.gaps,
                               self.tel.reconnects, self.backend_reason, st["connected"]))  # fmt: skip

    def summary(self) -> dict:

        dur = local_clock() - self._t_start if self._t_start else 0.0
        p = self.tel.percentiles()
        return {
            "duration_s": dur,
            "first_sample_ts": self.first_sample_ts,
            "samples": self.tel.samples,
            "bins": self.tel.bins,
            "published": self.tel.published,
            "skipped": self.tel.skipped,
            "overruns": self.tel.overruns,
            "late_on_arrival": self.tel.late_on_arrival,
            "deadline_ms": self.deadline_ms,
            "lat_ms": p,
            "age_ms": self.tel.percentiles(which="age"),
            "gaps": self.tel.gaps,
            "filled_samples": self.tel.filled_samples,
            "resets": self.tel.resets,
            "reconnects": self.tel.reconnects,
            "repaired_chunks": self.tel.repaired_chunks,
            "flat_channels": self.flat_channels,
            "input_rms": None if self.input_var is None else self.input_var**0.5,
            "input_scale": float(self._scale),
            "input_scale_ok": not self._scale_flag,
            "source_events": self.source.events.to_dict() if hasattr(self.source, "events") else {},
            "dropped_msgs": getattr(self.sink, "dropped", 0),
            "backend": self.backend_reason,
            "first_sample_raw_ts": getattr(self.source, "first_raw_ts", None),
            "pulls": getattr(getattr(self.source, "events", None), "chunks", None),
            "gc": dict(self.gc_stats),
            "status_ticks": self._ticks,
            "rt_priority": self.rt_priority,
            "renormalized": self.renormalized,
            "gap_log": [list(g) for g in getattr(self.source, "gap_log", ())],  # each gap's size estimate (the last 1024)
        }

    def close(self) -> None:
        printer, self._printer = self._printer, None
        if printer is not None:
            printer.close()
        for part in (self.source, self.sink, self.backend, self.lsl_out):
            if part is None:
                continue
            try:
                part.close()
            except Exception as e:  # closing must not hide the real error
                log.warning("closing %s: %s", type(part).__name__, e)


def _realtime(priority: int, restore: list) -> str:
    """SCHED_FIFO at `priority` for the calling thread and for the threads that are not
    Python's (liblsl's receiver, ZeroMQ's I/O thread: they carry the loop's data), never for
    the Python helper threads (status printer, log listener). Needs root, CAP_SYS_NICE or an
    RLIMIT_RTPRIO (e.g. a limits.conf line for a realtime group); without it the loop runs
    as before. Returns what was done, for the summary; `restore` gets (tid, policy, priority)
    of every thread changed."""
    if not hasattr(os, "sched_setscheduler"):
        return "not applied: no sched_setscheduler on this platform"
    me = threading.get_native_id()
    helpers = {t.native_id for t in threading.enumerate()} - {me}
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [me]
    def one(tid: int) -> None:
        before = (tid, os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
        os.sched_setscheduler(tid, os.SCHED_FIFO, param)
        restore.append(before)

    try:
        param = os.sched_param(int(priority))
        one(me)
        for tid in tids:
            if tid != me and tid not in helpers:
                try:
                    one(tid)
                except ProcessLookupError:  # gone meanwhile
                    pass
    except (OSError, ValueError) as e:
        msg = (f"not applied ({e}): SCHED_FIFO needs root, CAP_SYS_NICE or an rtprio limit (ulimit -r); "
               "the loop runs at normal priority")  # fmt: skip
        log.warning("rt_priority %d %s", priority, msg)
        return msg
    return f"SCHED_FIFO {int(priority)} on {len(restore)} threads"


class _StatusPrinter:
    """Writes the status line from its own low-priority thread: the loop only hands it a
    tuple (`SimpleQueue.put` never blocks), so a slow or blocked terminal, pipe or log
    file never delays a bin."""

    def __init__(self, stream=None):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stream = stream if stream is not None else sys.stderr
        try:  # a terminal gets one line rewritten in place; a pipe or log file one line per status
            self._tty = bool(self._stream.isatty())
        except (AttributeError, OSError, ValueError):
            self._tty = False
        self._wrote = False
        self._thread = threading.Thread(target=self._loop, name="rtdecode-status", daemon=True)
        self._thread.start()

    def put(self, item) -> None:
        self._q.put(item)

    def _loop(self) -> None:
        try:  # Linux: a thread is a task with its own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            item = self._q.get()
            if item is None:
                break
            rate, p50, p99, age99, overruns, gaps, reconnects, backend, connected = item
            f = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
            state = "" if connected else "  [STREAM LOST: reconnecting]"
            try:
                line = (f"{rate:6.1f} bins/s  latency p50 {f(p50)} ms p99 {f(p99)} ms  age p99 {f(age99)} ms"
                        f"  overruns {overruns}  gaps {gaps}  reconnects {reconnects}  [{backend.split(' (')[0]}]{state}")  # fmt: skip
                self._stream.write(f"\r{line}   " if self._tty else f"{line}\n")
                self._stream.flush()
                self._wrote = True
            except (OSError, ValueError):  # closed or broken stream: the loop must not care
                pass
        if self._wrote and self._tty:
            try:
                self._stream.write("\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def close(self, timeout: float = 1.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)


def _log_off_the_loop():
    """Route the root logger's records through a queue to its handlers on another thread,
    so a warning from the loop (stall, reconnect, flat channel) never writes to a terminal
    or file from the real-time thread. Returns the listener (None if nothing to route)."""
    import logging.handlers

    root = logging.getLogger()
    handlers = list(root.handlers)
    if not handlers:
        return None
    q: queue.SimpleQueue = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, *handlers, respect_handler_level=True)
    listener._rtdecode_handlers = handlers  # type: ignore[attr-defined]
    listener._rtdecode_qh = logging.handlers.QueueHandler(q)  # type: ignore[attr-defined]
    for h in handlers:
        root.removeHandler(h)
    root.addHandler(listener._rtdecode_qh)  # type: ignore[attr-defined]
    listener.start()
    return listener


def _restore_handlers(listener) -> None:
    root = logging.getLogger()
    root.removeHandler(listener._rtdecode_qh)
    for h in listener._rtdecode_handlers:
        root.addHandler(h)


def run(cfg: RunConfig) -> dict:
    """Build the runtime from a config, run until stopped, return the summary."""
    import json

    rt = Runtime.from_config(cfg)
    rt.install_signal_handlers()
    out = f"; LSL outlet '{cfg.lsl_out}'" if cfg.lsl_out else ""
    sys.stderr.write(f"{rt.bundle.describe()}\nbackend: {rt.backend_reason}\npublishing on {cfg.address}{out}\n")
    sys.stderr.flush()
    listener = _log_off_the_loop()
    try:
        summary = rt.run()
    finally:
        if listener is not None:
            listener.stop()
            _restore_handlers(listener)
    if cfg.summary_path:
        with open(cfg.summary_path, "w") as f:
            json.dump(summary, f, indent=1)
    time.sleep(0)  # let the final status leave
    return summary
