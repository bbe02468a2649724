"""The online path end to end: a real LSL outlet in another process, the runtime,
a real ZeroMQ subscriber. Online output must equal the offline pass of the same bundle."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from rtdecode.batch import decode_recording
from rtdecode.recording import Recording
from rtdecode.sinks.zmq import FLAG_GAP, FLAG_INPUT_SCALE, FLAG_OVERRUN, FLAG_RECONNECTED, FLAG_WARMUP, flag_names
from tests.conftest import start_outlet, unique_name
from tests.harness import Harness, free_address as _free_address
from tests.helpers import make_bundle, synthetic_recording

FS = 1000.0


@pytest.fixture(scope="module")
def bundle4(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("rt") / "bundle", n_channels=4, window_bins=10)


def _replay_proc(path, name: str):
    proc = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "replay", str(path), "--name", name,
                             "--type", "LFPTEST", "--chunk", "10"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc, float(line.split()[1])


def _replay_run(bundle, lfp, tmp_path, tag: str, channel_names=None):
    """The runtime on `rtdecode replay` of `lfp` (1 kHz; its channels labelled `channel_names`)
    in another process, until every sample it saw is decoded; returns (harness, summary, t0,
    offset: the first sample it saw)."""
    rec = tmp_path / f"{tag}.npz"
    Recording(lfp, FS, channel_names=channel_names).save(rec)
    name = unique_name(tag)
    h = Harness(bundle, name).start()
    proc, t0 = _replay_proc(rec, name)
    n = len(lfp)
    try:
        h.collect(lambda h: proc.poll() is not None and len(h.msgs) > 0 and h.rt and
                  h.rt.tel.samples >= n - (h.rt.first_sample_ts - t0) * FS - 1, timeout=20)  # fmt: skip
        time.sleep(0.3)
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()
        summary = h.stop()
    # which sample did the runtime see first? replay stamps sample k at t0 + k / fs
    return h, summary, t0, int(round((summary["first_sample_ts"] - t0) * FS))


def test_nan_samples_are_repaired_online_as_the_offline_pass_repairs_them(bundle4, tmp_path):
    """One repair: NaN and Inf held at the channel's last finite value, by the runtime on a
    stream and by compute_features on a file, so a model trains on what it will be fed."""
    lfp, _ = synthetic_recording(n_samples=7000, n_channels=4, seed=4)
    lfp[5000:5025, 1] = np.nan  # a channel out for 25 samples (5 s in: the stream opens in 1-3 s)
    lfp[5500, :] = np.inf  # one corrupt sample on every channel
    lfp[6000:6003, 2] = -np.inf
    h, summary, _, offset = _replay_run(bundle4, lfp, tmp_path, "nanrep")
    assert 0 <= offset < 5000 and summary["repaired_chunks"] >= 1
    st: dict = {}
    offline = decode_recording(bundle4, lfp[offset:])
    from rtdecode.dsp import compute_features

    compute_features(bundle4.chain, lfp[offset:], stats=st)
    assert st["nonfinite"] == 25 + 4 + 3 and np.isnan(lfp[5000, 1])  # counted, and the caller's array untouched
    online = np.stack([m["values"] for m in h.msgs])
    assert np.isfinite(offline).all() and len(online) == len(offline)
    np.testing.assert_allclose(online, offline, rtol=1e-5, atol=1e-5)


def test_online_equals_offline_every_bin_once_in_order(bundle4, tmp_path):
    lfp, _ = synthetic_recording(n_samples=6000, n_channels=4, seed=3)
    h, summary, t0, offset = _replay_run(bundle4, lfp, tmp_path, "replay")
    assert summary["samples"] > 2000 and h.msgs
    assert 0 <= offset < 4000
    offline = decode_recording(bundle4, lfp[offset:])
    seqs = [m["seq"] for m in h.msgs]
    assert seqs == list(range(len(seqs)))  # every bin once, in order, none lost
    assert len(seqs) == len(offline) == summary["published"]
    online = np.stack([m["values"] for m in h.msgs])
    np.testing.assert_allclose(online, offline, rtol=1e-5, atol=1e-5)
    # each message carries the LSL time of its bin's last sample
    t_lsl = np.array([m["t_lsl"] for m in h.msgs])
    expect = t0 + (offset + 10 * np.arange(1, len(seqs) + 1) - 1) / FS
    np.testing.assert_allclose(t_lsl, expect, atol=2e-4)
    # a fresh start is WARMUP (window filling, filters settling), never RECONNECTED
    warm = max(10, h.rt.chain.settle_bins) - 1  # the bin that fills the window is the first full one
    assert all(m["flags"] & FLAG_WARMUP for m in h.msgs[: min(warm, len(h.msgs))])
    assert not any(m["flags"] & FLAG_RECONNECTED for m in h.msgs)
    assert all(not m["flags"] & FLAG_WARMUP for m in h.msgs[warm:])
    # the deadline goes by the bin's age: its last sample -> publish, on one clock
    assert all(abs(m["age_ms"] - (m["t_pub"] - m["t_lsl"]) * 1e3) < 1e-6 for m in h.msgs)
    assert summary["overruns"] == sum(1 for m in h.msgs if m["age_ms"] > summary["deadline_ms"])
    assert any(s.get("published", 0) > 0 for s in h.status)


def test_a_stream_with_the_bundles_channels_in_another_order_is_reordered_by_label(tmp_path, caplog):
    """Found by a new-user probe: a stream whose channels are the training channels in another
    order decoded silently wrong. Labelled with the bundle's names (manifest input.channel_names,
    here electrode ids), its channels are put back into the bundle's order: online equals the
    offline pass of the recording in the bundle's order, and the stream's info says so. Labels
    that are not the bundle's names: decoded by position, with one warning naming both."""
    import logging

    ids = ["17", "3", "42", "8"]  # the training order (the first training file's electrodes)
    lfp, beh = synthetic_recording(n_samples=6000, n_channels=4, seed=6)  # fit on 6 s, replayed: the first 3.5 s
    from offline.linear import fit_linear_bundle

    b = fit_linear_bundle(lfp, FS, beh, ["vel_x", "vel_y"], tmp_path / "b", window_bins=10, line_freq=None,
                          channel_names=ids)  # fmt: skip
    order = [2, 0, 3, 1]  # the stream's own order
    lfp = lfp[:3500]
    with caplog.at_level(logging.WARNING, logger="rtdecode.sources.lsl"):
        h, summary, _, offset = _replay_run(b, lfp[:, order], tmp_path, "perm", channel_names=[ids[i] for i in order])
    assert "another order" in caplog.text and "reordered into the bundle's order by label" in caplog.text
    assert h.rt.source.info["channel_order"] == "reordered by name"
    offline = decode_recording(b, lfp[offset:])
    online = np.stack([m["values"] for m in h.msgs])
    assert len(online) == len(offline)
    np.testing.assert_allclose(online, offline, rtol=1e-5, atol=1e-5)
    wrong = decode_recording(b, lfp[offset:, order])  # what decoding by position would have given
    assert np.abs(wrong - offline).max() > 10 * 1e-5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rtdecode.sources.lsl"):
        h, _, _, offset = _replay_run(b, lfp[:, order], tmp_path, "foreign", channel_names=["A1", "A2", "B1", "B2"])
    assert "are not the bundle's channel names (17, 3, 42, 8)" in caplog.text
    assert h.rt.source.info["channel_order"].startswith("by position")
    np.testing.assert_allclose(np.stack([m["values"] for m in h.msgs]), decode_recording(b, lfp[offset:, order]),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_gap_is_filled_flagged_and_cadence_kept(bundle4):
    name = unique_name("gap")
    h = Harness(bundle4, name).start()
    # the gap sits 3 s in: opening the stream (resolve, then 0.5 s to see every matching stream) takes ~1.2 s
    out = start_outlet(name, channels=4, duration=4.5, gap_at=3000, gap_len=200)
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=20)
    finally:
        out.kill()
        summary = h.stop()
    t = np.array([m["t_lsl"] for m in h.msgs])
    assert np.allclose(np.diff(t), 0.01, atol=2e-4)  # one bin every 10 ms, across the gap too
    gap_bins = [m for m in h.msgs if m["flags"] & FLAG_GAP]
    gap_t = np.array([m["t_lsl"] for m in gap_bins])
    assert len(gap_bins) >= 20 and gap_t.min() >= out.t0 + 2.99 and gap_t.max() <= out.t0 + 3.22
    assert summary["gaps"] == 1 and summary["filled_samples"] == 200


def test_killed_outlet_is_reconnected_and_reported(bundle4):
    name = unique_name("kill")
    h = Harness(bundle4, name, stall_timeout_s=0.3).start()
    a = start_outlet(name, channels=4, duration=30.0)
    try:
        h.collect(lambda h: len(h.msgs) >= 50, timeout=20)
        a.kill()
        h.collect(lambda h: any(not s["connected"] for s in h.status), timeout=10)
        b = start_outlet(name, channels=4, duration=30.0)  # new process, new source_id
        try:
            n_before = len(h.msgs)
            h.collect(lambda h: len(h.msgs) >= n_before + 50, timeout=20)
        finally:
            b.kill()
    finally:
        a.kill()
        summary = h.stop()
    assert summary["reconnects"] == 1
    assert any(not s["connected"] for s in h.status)  # the stall was published
    after = [m for m in h.msgs if m["t_lsl"] >= b.t0]
    assert after and after[0]["flags"] & FLAG_RECONNECTED
    seqs = [m["seq"] for m in h.msgs]
    assert seqs == list(range(len(seqs)))


def test_mismatched_stream_is_refused_with_both_numbers(bundle4):
    name = unique_name("mm")
    out = start_outlet(name, channels=6, duration=20.0)
    try:
        r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "run", "--bundle", str(bundle4.path),
                            "--stream", name, "--quiet", "--address", _free_address()],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        out.kill()
    assert r.returncode == 2, r.stderr
    assert "has 6 channels, bundle expects 4" in r.stderr
    assert "--stream" in r.stderr


# -- streams as amplifiers send them: stamped at push time, jittered, chunked unevenly --------------
ARRIVAL = dict(stamping="arrival", jitter_ms=3.0, chunk_max=19)


@pytest.fixture(scope="module")
def bundle_nohp(tmp_path_factory):
    """No 0.05 Hz high-pass: the filters settle in a few bins, so a short run gets past WARMUP."""
    return make_bundle(tmp_path_factory.mktemp("rt") / "bundle_nohp", n_channels=4, window_bins=10, highpass_hz=None)


def _run_arrival(bundle, prefix, duration=5.0, **outlet):
    # 5 s of stream: opening it takes 1.2-2 s, more on a slow host (4 s left ~200 bins there, too few)
    name = unique_name(prefix)
    # chunks of up to 19 samples make a bin wait up to 18 ms for its last sample: a 10 ms
    # deadline would (rightly) flag OVERRUN; this test is about the timestamps
    h = Harness(bundle, name, deadline_ms=60.0).start()
    out = start_outlet(name, channels=4, duration=duration, **ARRIVAL, **outlet)
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=30)
    finally:
        out.kill()
        summary = h.stop()
    return h, summary


def test_jittery_arrival_stamps_give_no_gaps_no_flags_and_an_exact_cadence(bundle_nohp):
    h, summary = _run_arrival(bundle_nohp, "jit", seed=5)
    assert summary["source_events"]["backsteps"] > 0, "the raw stamps were not jittery: the test shows nothing"
    assert summary["gaps"] == 0 and summary["filled_samples"] == 0 and summary["source_events"]["clock_resets"] == 0
    warm = max(10, h.rt.chain.settle_bins) - 1  # the bin that fills the window is the first full one
    assert len(h.msgs) > warm + 200
    first = [flag_names(m["flags"] & ~FLAG_OVERRUN) for m in h.msgs[:warm]]
    assert all(f == ["WARMUP"] for f in first), [f for f in first if f != ["WARMUP"]]  # a fresh start: WARMUP only, not RECONNECTED
    # the outlet's samples are counters (sample k carries k + c), far from any training data: the
    # amplitude watch rightly flags INPUT_SCALE on them (tests/faults: ..._a_stream_in_volts_...);
    # this test is about the timestamps, so every other flag must be absent
    after = [flag_names(m["flags"] & ~FLAG_INPUT_SCALE) for m in h.msgs[warm:] if m["flags"] & ~FLAG_INPUT_SCALE]
    assert after == [], after  # nothing flagged after warm-up
    t = np.array([m["t_lsl"] for m in h.msgs])
    np.testing.assert_allclose(np.diff(t), 0.01, atol=1e-5)  # one bin apart on the dejittered clock (slew <= 500 ppm)
    assert [m["seq"] for m in h.msgs] == list(range(len(h.msgs)))


def test_a_real_loss_of_37_samples_is_filled_with_exactly_37(bundle_nohp):
    h, summary = _run_arrival(bundle_nohp, "loss", gap_at=2500, gap_len=37, seed=6)
    assert summary["gaps"] == 1 and summary["filled_samples"] == 37, summary
    gap = [m for m in h.msgs if m["flags"] & FLAG_GAP]
    assert 1 <= len(gap) <= 6  # the bins holding or following the 37 missing samples
    t = np.array([m["t_lsl"] for m in h.msgs])
    # the cadence is kept across the loss: to 2 % of a sample period (the clock slews toward the
    # fit after the loss, by up to ~11 µs per bin seen in CI); one sample more or less is 1 ms
    np.testing.assert_allclose(np.diff(t), 0.01, atol=2e-5)
    assert [m["seq"] for m in h.msgs] == list(range(len(h.msgs)))


def test_lsl_out_carries_the_published_values_stamped_with_t_lsl(bundle_nohp):
    import pylsl

    name, out_name = unique_name("lo"), unique_name("Decoded")
    h = Harness(bundle_nohp, name, lsl_out=out_name).start()
    out = start_outlet(name, channels=4, duration=30.0)
    got_v, got_t = [], []
    try:
        infos = pylsl.resolve_byprop("name", out_name, 1, 20.0)
        assert infos, "the --lsl-out stream did not appear"
        info = pylsl.StreamInlet(infos[0]).info(timeout=5.0)
        assert info.channel_count() == 2 and info.channel_format() == pylsl.cf_float32
        assert abs(info.nominal_srate() - 100.0) < 1e-9
        assert info.get_channel_labels() == ["vel_x", "vel_y"]
        inlet = pylsl.StreamInlet(infos[0], max_buflen=10)
        inlet.open_stream(timeout=5.0)
        h.collect(lambda h: len(h.msgs) >= 10, timeout=20)
        t_end = time.monotonic() + 10
        while len(got_t) < 150 and time.monotonic() < t_end:
            h.collect(lambda h: True, timeout=0.01)
            x, ts = inlet.pull_chunk(timeout=0.05)
            got_v += x
            got_t += ts
        h.collect(lambda h: len(h.msgs) > 0 and h.msgs[-1]["t_lsl"] >= got_t[-1], timeout=5)
        inlet.close_stream()
    finally:
        out.kill()
        h.stop()
    assert len(got_t) >= 150
    by_t = {m["t_lsl"]: m["values"] for m in h.msgs}
    matched = [t for t in got_t if t in by_t]  # stamps equal t_lsl exactly (same host: no clock offset)
    assert len(matched) == len(got_t)
    for t, v in zip(got_t, got_v):
        np.testing.assert_array_equal(np.asarray(v, np.float32), by_t[t])


class _SlowTerminal:
    """A stderr whose writes block (a stuck terminal or pipe): records which threads wrote."""

    def __init__(self, block_s: float):
        import threading

        self.block_s, self.threads, self._lock = block_s, set(), threading.Lock()

    def write(self, s):
        import threading

        with self._lock:
            self.threads.add(threading.current_thread().name)
        time.sleep(self.block_s)
        return len(s)

    def flush(self):
        time.sleep(self.block_s)


def test_status_line_is_written_off_the_real_time_thread(bundle_nohp, monkeypatch):
    slow = _SlowTerminal(0.4)
    monkeypatch.setattr(sys, "stderr", slow)
    name = unique_name("st")
    h = Harness(bundle_nohp, name, quiet=False).start()  # status every 0.2 s, each line blocks 0.8 s
    out = start_outlet(name, channels=4, duration=4.0)  # opening the stream takes 1.2-2 s of it on a loaded machine
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=30)
    finally:
        out.kill()
        summary = h.stop()
    assert slow.threads == {"rtdecode-status"}, slow.threads  # the loop never wrote to the terminal itself
    assert len(h.msgs) > 150 and len(h.status) >= 5
    # the bins kept flowing while the terminal was stuck: no bin waited anywhere near one blocked write
    assert max(m["lat_ms"] for m in h.msgs) < 0.5 * slow.block_s * 1e3, summary["lat_ms"]


@pytest.mark.parametrize("tty", [True, False])
def test_status_line_is_rewritten_on_a_terminal_and_one_line_each_in_a_log(tty):
    """A terminal gets one line rewritten in place (carriage returns); a pipe or log file one
    newline-terminated line per status, so that a redirected log stays readable."""
    import io

    from rtdecode.runtime import _StatusPrinter

    class Stream(io.StringIO):
        def isatty(self):
            return tty

    out = Stream()
    p = _StatusPrinter(out)
    for k in range(3):
        p.put((100.0, 0.5 + k, 2.0, 3.0, 0, 0, 0, "onnxruntime (cpu)", True))
    p.close()
    text = out.getvalue()
    assert text.count("bins/s") == 3
    if tty:
        assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n")
    else:
        assert "\r" not in text and text.count("\n") == 3 and "latency p50 1.50 ms" in text.splitlines()[1]


@pytest.mark.parametrize("opts", [{"gc_mode": "tick", "spin_s": 0.0005, "rt_priority": 1}, {"gc_mode": "python"}])
def test_loop_scheduling_options_keep_every_bin_and_restore_the_process(bundle_nohp, opts):
    """gc_mode tick: no automatic collection while the loop runs, exactly one per status tick,
    and the collector as it was afterwards; spin_s and rt_priority change when, never what, is decoded."""
    import gc
    import os

    name = unique_name("sched")
    h = Harness(bundle_nohp, name, **opts).start()
    out = start_outlet(name, channels=4, duration=4.0)
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=30)
    finally:
        out.kill()
        summary = h.stop()
    assert len(h.msgs) > 150 and [m["seq"] for m in h.msgs] == list(range(len(h.msgs)))
    assert summary["gaps"] == 0 and summary["filled_samples"] == 0
    g = summary["gc"]
    assert g["mode"] == opts["gc_mode"]
    if opts["gc_mode"] == "tick":
        assert summary["status_ticks"] > 5 and g["collections"] == summary["status_ticks"], (g, summary["status_ticks"])
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the process's collector as before the run
    rt = summary["rt_priority"]
    if opts.get("rt_priority"):
        assert rt.startswith(("SCHED_FIFO", "not applied")), rt
    else:
        assert rt == "off"
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    assert all(os.sched_getscheduler(t) != os.SCHED_FIFO for t in tasks if os.path.exists(f"/proc/self/task/{t}"))
