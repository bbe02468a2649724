"""LSLSource against real outlets in other processes (tests/sources/lsl_outlet_proc.py)."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid

import numpy as np
import pylsl
import pytest

from rtdecode.sources.lsl import (
    PULL_BACKSTEP,
    PULL_CLOCK_RESET,
    PULL_GAP,
    PULL_NONFINITE,
    PULL_RATE,
    PULL_RECONNECTED,
    PULL_STALE,
    LSLSource,
    StreamMismatchError,
    StreamNotFoundError,
)

CH, RATE = 4, 1000.0


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def source(query: str, **kw) -> LSLSource:
    kw.setdefault("resolve_timeout", 5.0)
    return LSLSource(query, n_channels=kw.pop("n_channels", CH), sampling_rate=kw.pop("rate", RATE), **kw)


def collect(src: LSLSource, until, timeout: float = 5.0):
    """Pull until until(indices) is true; returns (indices, timestamps, per-pull records)."""
    idx, ts, pulls = [], [], []
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        n = src.pull()
        if n:
            block = src.data[:n]
            idx.append(block[:, 0].astype(np.int64))
            ts.append(src.timestamps[:n].copy())
            pulls.append((n, int(block[0, 0]), src.last_gap_samples, src.last_gap_at, src.last_flags,
                          pylsl.local_clock() - src.timestamps[n - 1]))
            if until(idx[-1]):
                break
    assert idx, "no samples arrived"
    return np.concatenate(idx), np.concatenate(ts), pulls


def test_resolves_by_name_and_by_type(lsl_outlet):
    o = lsl_outlet(unique_name("N"), type=unique_name("T"), channels=CH)
    for query in (o.name, o.type):
        with source(query) as src:
            assert src.connected
            assert src.info["name"] == o.name and src.info["type"] == o.type
            assert src.info["source_id"] == o.source_id
            assert src.info["channel_names"] == [f"ch{c}" for c in range(CH)]
            assert src.pull() > 0


@pytest.mark.parametrize(
    "kw, expected, found",
    [
        ({"n_channels": 96}, "expects 96", f"has {CH} channels"),
        ({"rate": 500.0}, "expects 500 Hz", "1000 Hz"),
        ({"formats": ("float32",)}, "float32", "sends int16"),
    ],
)
def test_refuses_mismatched_stream_with_both_values(lsl_outlet, kw, expected, found):
    o = lsl_outlet(unique_name("M"), channels=CH, format="int16")
    src = source(o.name, **kw)
    with pytest.raises(StreamMismatchError) as err:
        src.open()
    msg = str(err.value)
    assert expected in msg and found in msg and o.name in msg and "manifest.json" in msg
    assert not src.connected
    src.close()


def test_missing_stream_lists_visible_streams(lsl_outlet):
    o = lsl_outlet(unique_name("Visible"))
    missing = unique_name("Missing")
    src = source(missing, resolve_timeout=0.3)
    with pytest.raises(StreamNotFoundError) as err:
        src.open()
    msg = str(err.value)
    assert missing in msg and o.name in msg and "--stream" in msg


@pytest.mark.parametrize("max_chunk, spin_s", [(1024, 0.0), (7, 0.0), (1024, 0.0005)])
def test_pulls_every_sample_once_in_order(lsl_outlet, max_chunk, spin_s):
    o = lsl_outlet(unique_name("Order"), channels=CH, chunk=10)
    with source(o.name, max_chunk=max_chunk, spin_s=spin_s) as src:
        idx, ts, pulls = collect(src, lambda i: i[-1] >= 1200)
        ev = src.events
    assert np.all(np.diff(idx) == 1), "samples lost, duplicated or reordered"
    # the stream's own stamp of the first sample (no offset, no dejitter): the outlet's, to 0.5 µs (READY's rounding)
    assert abs(src.first_raw_ts - (o.t0 + idx[0] / RATE)) < 1e-6
    assert np.all(np.diff(ts) > 0)
    # the outlet stamps sample k at t0 + k / rate on this host: corrected stamps must agree
    np.testing.assert_allclose(ts - (o.t0 + idx / RATE), 0.0, atol=2e-3)
    assert max(p[0] for p in pulls) <= max_chunk
    assert ev.gaps == 0 and ev.clock_resets == 0 and ev.samples == idx.size
    # min_samples semantics: a pull returns as soon as data is there, it does not wait for max_chunk
    sizes = np.array([p[0] for p in pulls[5:]])
    assert np.median(sizes) <= 20, f"pulls of {np.median(sizes)} samples: waiting for more than what is there"
    lat = np.array([p[5] for p in pulls[5:]])
    assert np.median(lat) < 0.02, f"pull latency p50 {np.median(lat) * 1e3:.2f} ms"


def test_spin_needs_a_nonnegative_time():
    with pytest.raises(ValueError, match="spin_s"):
        source("x", spin_s=-1.0)


def test_converts_int16_stream(lsl_outlet):
    o = lsl_outlet(unique_name("I16"), channels=CH, format="int16")
    with source(o.name) as src:
        idx, _, _ = collect(src, lambda i: i.size > 0 and i[-1] >= 150)
        n = src.pull() or src.pull()
        row = src.data[n - 1]
    assert src.data.dtype == np.float32
    np.testing.assert_array_equal(row, row[0] + np.arange(CH))


def test_detects_gap(lsl_outlet):
    o = lsl_outlet(unique_name("Gap"), channels=CH, gap_at=1500, gap_len=120)
    with source(o.name) as src:
        idx, _, pulls = collect(src, lambda i: i[-1] >= 1700)
        ev = src.events
    assert idx[0] < 1500, "opened too late to see the gap"
    jumps = np.flatnonzero(np.diff(idx) != 1)
    assert jumps.size == 1 and idx[jumps[0]] == 1499 and idx[jumps[0] + 1] == 1620
    flagged = [p for p in pulls if p[4] & PULL_GAP]
    assert len(flagged) == 1
    n, first, gap, at, _, _ = flagged[0]
    assert gap == 120 and first + at == 1620
    assert ev.gaps == 1 and ev.samples_lost_est == 120


def test_clock_reset_and_nonfinite_are_flagged(lsl_outlet):
    o = lsl_outlet(unique_name("Faults"), channels=CH, nan_at=1200, reset_at=1500, reset_by=10.0)
    with source(o.name) as src:
        idx, _, pulls = collect(src, lambda i: i[-1] >= 1600)
        ev = src.events
    assert idx[0] < 1200
    assert ev.clock_resets == 1 and ev.gaps == 0
    assert ev.nonfinite_chunks == 1
    assert sum(1 for p in pulls if p[4] & PULL_CLOCK_RESET) == 1
    assert sum(1 for p in pulls if p[4] & PULL_NONFINITE) == 1


def test_stall_then_resume_on_the_same_inlet(lsl_outlet):
    o = lsl_outlet(unique_name("Stall"), channels=CH)
    with source(o.name, stall_timeout=0.2) as src:
        collect(src, lambda i: i[-1] >= 100)
        os.kill(o.proc.pid, signal.SIGSTOP)
        try:
            t_end = time.monotonic() + 3.0
            while src.connected and time.monotonic() < t_end:
                src.pull()
            assert not src.connected and src.events.stalls == 1
            assert src.poll_reconnect() is False  # no other stream to go to
        finally:
            os.kill(o.proc.pid, signal.SIGCONT)
        # the outlet catches up in a burst: nothing lost, connected again, no reconnect needed
        before = src.events.samples
        idx, _, pulls = collect(src, lambda i: src.events.samples - before > 600)
        assert src.connected
    assert np.all(np.diff(idx) == 1)
    assert src.events.gaps == 0 and src.events.reconnects == 0


def test_backlog_beyond_max_chunk_is_flagged_stale_then_caught_up(lsl_outlet):
    o = lsl_outlet(unique_name("Late"), channels=CH)
    with source(o.name, max_chunk=50, stale_after_s=0.2) as src:
        idx0, _, _ = collect(src, lambda i: i[-1] >= 100)
        time.sleep(0.5)  # the consumer is late: ~500 samples queue up, 10 pulls' worth
        idx, _, pulls = collect(src, lambda i: not src.last_flags & PULL_STALE)
    assert pulls[0][4] & PULL_STALE and pulls[0][5] > 0.2
    assert not pulls[-1][4] & PULL_STALE
    assert np.all(np.diff(np.concatenate([idx0, idx])) == 1), "a backlog within the buffer must lose nothing"
    assert src.events.stale_chunks >= 3


def test_reconnects_to_restarted_outlet_with_new_source_id(lsl_outlet):
    name = unique_name("Restart")
    a = lsl_outlet(name, channels=CH)
    with source(name, pull_timeout=0.05) as src:
        collect(src, lambda i: i[-1] >= 100)
        a.kill()
        t_end = time.monotonic() + 5.0
        while src.connected and time.monotonic() < t_end:
            src.pull()
        assert not src.connected and src.events.lost == 1

        # a stream with the same name but the wrong channel count is refused, not used
        wrong = lsl_outlet(name, channels=CH + 4)
        calls, worst, t0 = 0, 0.0, time.monotonic()
        while src.events.mismatched_streams == 0 and time.monotonic() - t0 < 8.0:
            src.pull()
            t = time.perf_counter()
            assert src.poll_reconnect() is False
            worst = max(worst, time.perf_counter() - t)
            calls += 1
        elapsed = time.monotonic() - t0
        assert src.events.mismatched_streams >= 1 and f"{CH + 4} channels" in src.last_error
        assert calls <= elapsed / 0.05 * 1.5 + 5, f"{calls} calls in {elapsed:.2f} s: busy loop"
        wrong.kill()

        b = lsl_outlet(name, channels=CH)
        t0 = time.monotonic()
        while not src.connected and time.monotonic() - t0 < 10.0:
            src.pull()
            t = time.perf_counter()
            src.poll_reconnect()
            worst = max(worst, time.perf_counter() - t)
        assert src.connected, "no reconnection within 10 s"
        assert src.info["source_id"] == b.source_id != a.source_id
        idx, _, pulls = collect(src, lambda i: i.size > 0 and i[-1] >= 200)
    assert pulls[0][4] & PULL_RECONNECTED
    assert np.all(np.diff(idx) == 1)
    assert src.events.reconnects == 1
    assert worst < 0.5, f"poll_reconnect blocked {worst * 1e3:.0f} ms"


# -- timestamps as acquisition software sends them (docs/faults.md, "Timestamps") ----------------
ARRIVAL = dict(stamping="arrival", jitter_ms=3.0, chunk_max=19)  # stamped at push time, 0-3 ms jitter, 1-19 samples


def test_arrival_stamped_stream_is_dejittered_without_gaps(lsl_outlet):
    o = lsl_outlet(unique_name("Jit"), channels=CH, duration=30.0, seed=1, **ARRIVAL)
    with source(o.name) as src:
        idx, ts, pulls = collect(src, lambda i: i[-1] >= 5000, timeout=15)
        ev = src.events
    assert np.all(np.diff(idx) == 1)
    assert ev.backsteps > 0, "the raw stamps were not jittery: the test shows nothing"
    assert ev.gaps == 0 and ev.samples_lost_est == 0 and ev.clock_resets == 0
    assert not any(p[4] & (PULL_GAP | PULL_CLOCK_RESET | PULL_BACKSTEP) for p in pulls)
    # one fitted period per sample: the published clock never jitters (slew <= 500 ppm)
    np.testing.assert_allclose(np.diff(ts), 1.0 / RATE, atol=1e-6)
    # and it keeps to the acquisition schedule: the stamps are the push times plus 0-3 ms, so the
    # fitted clock runs behind the schedule by the mean push delay (host-dependent: 2-6 ms seen),
    # never ahead of it, and that offset wanders by less than the pusher's 3 ms jitter range plus
    # what the clock's slew (500 ppm) can move in the first seconds of the fit
    offset = ts - (o.t0 + idx / RATE)
    assert offset.min() > -1e-3 and offset.max() < 50e-3, (offset.min(), offset.max())
    assert np.ptp(offset) < 4e-3, np.ptp(offset)


@pytest.mark.parametrize("seed", [2, pytest.param(3, marks=pytest.mark.slow)])  # a second jitter draw: -m slow
def test_real_loss_under_jitter_is_counted_exactly(lsl_outlet, seed):
    # the loss comes 4.5 s in: the stream opens ~1.2 s after the outlet, and the fit's slope is free after 2 s
    o = lsl_outlet(unique_name("Loss"), channels=CH, duration=30.0, gap_at=4500, gap_len=37, seed=seed, **ARRIVAL)
    with source(o.name) as src:
        idx, ts, pulls = collect(src, lambda i: i[-1] >= 5500, timeout=15)
        ev = src.events
    assert idx[0] < 4500
    flagged = [p for p in pulls if p[4] & PULL_GAP]
    assert len(flagged) == 1 and ev.gaps == 1
    n, first, gap, at, _, _ = flagged[0]
    assert gap == 37 and ev.samples_lost_est == 37 and first + at == 4537
    # the dejittered clock runs on across the loss: 38 periods between the samples around it
    # (to 5 % of a period: the published clock slews toward the fit by at most _SLEW per
    # sample, and under 0-3 ms jitter the fit moves by some µs across the loss; one sample
    # more or less would be a whole period)
    j = int(np.flatnonzero(idx == 4537)[0])
    assert abs((ts[j] - ts[j - 1]) * RATE - 38) < 5e-2
    assert ev.clock_resets == 0


@pytest.mark.parametrize("pause_s, gap_len", [pytest.param(0.45, 0, marks=pytest.mark.slow), (1.0, 0), (1.0, 37)])
def test_a_stalled_pusher_catching_up_fills_only_what_it_lost(lsl_outlet, pause_s, gap_len):
    # found by a new-user probe: an arrival-stamped pusher that stalls (0.45 s, under the stall
    # timeout, and 1 s, over it), then pushes its backlog back to back in chunks of 1-19, each
    # stamped when pushed. Nothing lost: nothing filled, no clock reset, every sample once and
    # in order, one fitted period apart. 37 samples lost during the stall: exactly 37 counted,
    # once; where the backlog is larger than one pull (max_chunk) the loss is counted where the
    # drained stamps turn level, at most one pull after it (docs/faults.md)
    o = lsl_outlet(unique_name("Catch"), channels=CH, duration=30.0, pause_at=4000, pause_s=pause_s,
                   gap_at=3990 if gap_len else -1, gap_len=gap_len, seed=5, **ARRIVAL)  # fmt: skip
    with source(o.name) as src:
        idx, ts, pulls = collect(src, lambda i: i[-1] >= 7000, timeout=20)
        ev = src.events
        max_chunk = src.max_chunk
    assert idx[0] < 3990
    assert ev.clock_resets == 0, ev
    assert ev.gaps == (1 if gap_len else 0) and ev.samples_lost_est == gap_len, ev
    step = np.round(np.diff(ts) * RATE, 2)  # periods between consecutive published stamps
    if not gap_len:
        assert np.all(np.diff(idx) == 1)
        np.testing.assert_allclose(step, 1.0, atol=5e-2)
        return
    flagged = [p for p in pulls if p[4] & PULL_GAP]
    assert len(flagged) == 1 and flagged[0][2] == gap_len
    at = flagged[0][1] + flagged[0][3]  # the first sample after the samples counted lost
    assert 3990 + gap_len <= at <= 3990 + gap_len + max_chunk, at
    big = np.flatnonzero(np.abs(step - 1.0) > 5e-2)
    assert len(big) == 1 and idx[big[0] + 1] == at and abs(step[big[0]] - (gap_len + 1)) < 5e-2, (big, step[big])


def test_clock_reset_is_found_under_jitter(lsl_outlet):
    o = lsl_outlet(unique_name("Rst"), channels=CH, duration=30.0, reset_at=2500, reset_by=10.0, seed=4, **ARRIVAL)
    with source(o.name) as src:
        idx, ts, pulls = collect(src, lambda i: i[-1] >= 3500, timeout=15)
        ev = src.events
    assert idx[0] < 2500 and np.all(np.diff(idx) == 1)
    assert ev.clock_resets == 1 and ev.gaps == 0 and ev.samples_lost_est == 0
    assert sum(1 for p in pulls if p[4] & PULL_CLOCK_RESET) == 1
    j = int(np.flatnonzero(np.diff(ts) < 0)[0])  # the new segment starts ~10 s earlier
    assert abs(ts[j + 1] - ts[j] + 10.0) < 0.05
    # the jump is known, so ages and staleness still compare with this host's clock
    assert abs(src.clock_shift - 10.0) < 2e-3, src.clock_shift - 10.0  # refined on the new segment's fit
    assert not any(p[4] & PULL_STALE for p in pulls)


@pytest.mark.parametrize("true_rate, said", [(1000.0, None), (1040.0, "announces 1000 Hz but delivers 10"),
                                             pytest.param(500.0, "of the samples its nominal 1000 Hz implies", marks=pytest.mark.slow)])  # fmt: skip
def test_a_stream_that_does_not_run_at_its_announced_rate_is_said_once(lsl_outlet, monkeypatch, caplog, true_rate, said):
    # found by a new-user probe: an outlet that announces 1000 Hz and really pushes 1024 Hz got
    # t_lsl stamps running ahead of its data without limit (the fitted period is held within
    # 0.1 % of the nominal one), and one that pushes 500 Hz had half its samples filled as lost,
    # both with no word. Windows of 2 s here (10 s in use); arrival stamps, chunks of 1-19.
    import rtdecode.sources.lsl as lsl

    monkeypatch.setattr(lsl, "_RATE_S", 2.0)
    o = lsl_outlet(unique_name("Rate"), channels=CH, duration=30.0, true_rate=true_rate, seed=6, **ARRIVAL)
    with caplog.at_level(logging.WARNING, logger=lsl.__name__), source(o.name) as src:
        _, _, pulls = collect(src, lambda i: False, timeout=7.5)
        ev = src.events
    said_ = [r.getMessage() for r in caplog.records if "Hz" in r.getMessage() and "stream '" in r.getMessage()]
    rate = [bool(p[4] & PULL_RATE) for p in pulls]  # the bins' RATE flag
    if said is None:
        assert ev.rate_mismatches == 0 and not said_ and not any(rate), (ev, said_)
        return
    assert ev.rate_mismatches >= 2 and len(said_) == 1 and said in said_[0], (ev, said_)
    # flagged from the second window that is off (>= 4 s in), then on every pull
    first = rate.index(True)
    assert all(rate[first:]) and not any(rate[:first]) and sum(p[0] for p in pulls[:first]) >= 0.9 * 4.0 * true_rate, first
    if true_rate > 1000:
        assert "delivers 10" in said_[0] and "t_lsl run ahead" in said_[0]
    else:
        assert "counted lost and filled" in said_[0] and ev.samples_lost_est > 0.3 * ev.samples
