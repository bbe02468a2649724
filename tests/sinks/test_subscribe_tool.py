"""tools/subscribe.py records what a real publisher sends."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtdecode.sinks.zmq import ZmqPublisher

ROOT = Path(__file__).resolve().parents[2]


def _publish_to(args: list[str], hello: bool = False, wait_s: float = 20.0) -> str:
    """Run tools/subscribe.py ARGS against a real publisher that sends a kinematics message
    every 5 ms (value 0 = its seq) until the tool exits; returns the tool's stderr."""
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "subscribe.py"), "--address", pub.endpoint, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if hello:
            pub.publish_hello({"names": ["vx", "vy"], "units": ["m/s", "m/s"]})
        seq, t_end = 0, time.monotonic() + wait_s
        while proc.poll() is None and time.monotonic() < t_end:
            pub.publish_kinematics(seq, 5.0, 5.1, 0.2, np.array([seq, 0.5], np.float32), 0)
            seq += 1
            time.sleep(0.005)
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    return err


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_records_count_messages(tmp_path, suffix):
    out = tmp_path / f"rec{suffix}"
    err = _publish_to(["--count", "20", "--out", str(out), "--quiet", "--timeout", "20"], hello=True)
    assert "received 20 kinematics, missed 0" in err
    if suffix == ".npz":
        with np.load(out) as z:
            assert z["values"].shape == (20, 2) and list(z["names"]) == ["vx", "vy"]
            assert np.all(np.diff(z["seq"]) == 1)
            np.testing.assert_array_equal(z["values"][:, 0], z["seq"])
    else:
        with open(out, newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["seq", "t_lsl", "t_pub", "t_recv", "lat_ms", "flags", "vx", "vy"] and len(rows) == 21
        assert [float(r[6]) for r in rows[1:]] == [float(r[0]) for r in rows[1:]]


def test_latest_mode_takes_only_the_newest_bins(tmp_path):
    """--latest with a 50 ms 'task': the tool skips the bins that queued up meanwhile."""
    out = tmp_path / "rec.npz"
    err = _publish_to(["--count", "10", "--latest", "--period", "0.05", "--out", str(out), "--quiet", "--timeout", "20"],
                      wait_s=30.0)
    assert "received 10 kinematics" in err and "skipped" in err
    with np.load(out) as z:
        steps = np.diff(z["seq"])
    assert len(steps) == 9 and np.median(steps) >= 3  # ~10 bins per 50 ms step, only the newest kept
