"""rtdecode.replay: a recording played as an LSL outlet at its real rate."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from rtdecode.recording import Recording
from rtdecode.replay import replay
from rtdecode.sources.lsl import LSLSource

RATE, CH = 1000.0, 3


def indexed_recording(n: int) -> Recording:
    k = np.arange(n, dtype=np.float32)[:, None]
    return Recording(k + np.arange(CH, dtype=np.float32), RATE, ["a", "b", "c"])


def test_replay_rate_and_content_in_another_process(tmp_path, lsl_replay):
    path = tmp_path / "rec.npz"
    indexed_recording(20_000).save(path)
    o = lsl_replay(path, f"Replay-{uuid.uuid4().hex[:10]}", chunk_size=10)
    with LSLSource(o.name, n_channels=CH, sampling_rate=RATE, resolve_timeout=5.0) as src:
        assert src.info["channel_names"] == ["a", "b", "c"] and src.info["source_id"] == o.source_id
        while src.pull() == 0:
            pass
        first = src.data[0, 0]
        t_wall0, count, rows = time.monotonic(), 0, []
        while time.monotonic() - t_wall0 < 1.0:
            n = src.pull()
            count += n
            rows.append(src.data[:n].copy())
        wall = time.monotonic() - t_wall0
    data = np.concatenate(rows)
    # a timing property: samples received against wall time elapsed, loosely
    assert abs(count / wall - RATE) / RATE < 0.05, f"{count} samples in {wall:.3f} s"
    k = data[:, 0]
    assert k[0] > first and np.all(np.diff(k) == 1)
    np.testing.assert_array_equal(data, k[:, None] + np.arange(CH))


def test_loop_duration_stop_event_and_return_value():
    rec = indexed_recording(25)  # shorter than what is pushed: wraps around
    name = f"Loop-{uuid.uuid4().hex[:10]}"
    started, out = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: out.setdefault("n", replay(rec, name=name, chunk_size=10, loop=True, duration=3.0,
                                                  on_start=lambda info: started.set()))
    )
    thread.start()
    assert started.wait(5)
    src = LSLSource(name, n_channels=CH, sampling_rate=RATE, pull_timeout=0.05)
    src.open()
    got = []
    while thread.is_alive() or src.pull():
        n = src.pull()
        got.append(src.data[:n, 0].copy())
    src.close()
    thread.join()
    assert out["n"] == 3000  # 3 s at 1 kHz; the stream opens after ~1.2 s (resolve sees every match)
    k = np.concatenate(got)
    assert k.size > 100 and set(np.unique(k)) <= set(range(25))
    assert np.all((np.diff(k) == 1) | ((k[:-1] == 24) & (k[1:] == 0))), "wrap-around broke the sequence"

    stop = threading.Event()
    t = time.monotonic()
    threading.Timer(0.2, stop.set).start()
    n = replay(rec, name=name, loop=True, stop_event=stop)
    assert time.monotonic() - t < 1.0 and 150 <= n <= 260


def test_hold_keeps_the_stream_open_until_stdin_closes(tmp_path):
    """`rtdecode replay --hold`: after its last sample it prints END and keeps the stream, so
    a consumer (the demo's runtime) is stopped first and never sees the stream as lost; once
    stdin closes, the stream goes and the same consumer does see that (the control)."""
    import subprocess
    import sys

    path = tmp_path / "rec.npz"
    indexed_recording(3000).save(path)
    name = f"Hold-{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "replay", str(path), "--name", name, "--hold"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().startswith("READY ")
        with LSLSource(name, n_channels=CH, sampling_rate=RATE, resolve_timeout=10.0, pull_timeout=0.05,
                       stall_timeout=30.0) as src:  # fmt: skip
            assert proc.stdout.readline().split() == ["END", "3000"]
            got = 0
            t_end = time.monotonic() + 2.0  # well past what liblsl needs to notice a closed outlet
            while time.monotonic() < t_end:
                got += src.pull()
            assert src.events.lost == 0 and proc.poll() is None
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
            t_end = time.monotonic() + 10.0
            while src.events.lost == 0 and time.monotonic() < t_end:
                src.pull()
            assert src.events.lost == 1  # without --hold this is what the consumer saw at the end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
    assert got >= 500  # it received the replay (what its buffer held when END came)
