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
from rtdecode.sinks.zmq import FLAG_GAP, FLAG_RECONNECTED, FLAG_WARMUP
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


def test_online_equals_offline_every_bin_once_in_order(bundle4, tmp_path):
    lfp, _ = synthetic_recording(n_samples=6000, n_channels=4, seed=3)
    rec = tmp_path / "rec.npz"
    Recording(lfp, FS).save(rec)
    name = unique_name("replay")
    h = Harness(bundle4, name).start()
    proc, t0 = _replay_proc(rec, name)
    try:
        h.collect(lambda h: proc.poll() is not None and len(h.msgs) > 0 and h.rt and
                  h.rt.tel.samples >= 6000 - (h.rt.first_sample_ts - t0) * FS - 1, timeout=20)  # fmt: skip
        time.sleep(0.3)
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()
        summary = h.stop()
    assert summary["samples"] > 2000 and h.msgs
    # which sample did the runtime see first? replay stamps sample k at t0 + k / fs
    offset = int(round((summary["first_sample_ts"] - t0) * FS))
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
    assert all(m["flags"] & FLAG_WARMUP for m in h.msgs[:9]) and not h.msgs[-1]["flags"] & FLAG_WARMUP
    assert summary["overruns"] == sum(1 for m in h.msgs if m["lat_ms"] > summary["deadline_ms"])
    assert any(s.get("published", 0) > 0 for s in h.status)


def test_gap_is_filled_flagged_and_cadence_kept(bundle4):
    name = unique_name("gap")
    h = Harness(bundle4, name).start()
    out = start_outlet(name, channels=4, duration=3.0, gap_at=1500, gap_len=200)
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=20)
    finally:
        out.kill()
        summary = h.stop()
    t = np.array([m["t_lsl"] for m in h.msgs])
    assert np.allclose(np.diff(t), 0.01, atol=2e-4)  # one bin every 10 ms, across the gap too
    gap_bins = [m for m in h.msgs if m["flags"] & FLAG_GAP]
    gap_t = np.array([m["t_lsl"] for m in gap_bins])
    assert len(gap_bins) >= 20 and gap_t.min() >= out.t0 + 1.49 and gap_t.max() <= out.t0 + 1.72
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
