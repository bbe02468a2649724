"""Record a small "new day" with LabRecorder's own recorder (LabRecorderCLI, built by
tools/labrecorder/build.sh), for tests/data/labrecorder/: the file layout is LabRecorder's
(its XDF writer, its 500 ms pull loop, its first-sample chunk, its clock-offset and boundary
chunks, its footers), not this project's test writer.

    python tools/labrecorder/record_day.py BUILD/LabRecorderCLI tests/data/labrecorder/day.xdf --seconds 25

Three outlets in one process, as a rig's acquisition software and task would send them:
- `Amp-LFP` (type LFP): 4 channels, float32, 1 kHz, the samples of
  tests.helpers.synthetic_recording(n_samples=60_000, n_channels=4, seed=11) in order from
  sample 0; chunks of 1-20 samples, each stamped with the clock at push time plus 0-3 ms
  (liblsl back-dates the rest of a chunk);
- `Kinematics` (type Mocap): vel_x, vel_y (float64) at a nominal 60 Hz, pushed one sample at
  a time from a timer, each the behaviour at the LFP's acquisition time, stamped at push;
- `Task-Markers` (type Markers, strings): "trial 1", "trial 2", ... every 5 s.
The recorder is started once the outlets exist and stopped after --seconds (Enter on its
stdin); the recording begins where its inlets joined, so the file holds a slice of the
samples: the test finds it by value.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

N_SAMPLES, N_CHANNELS, SEED, FS = 60_000, 4, 11, 1000.0


def behaviour_at(k: np.ndarray) -> np.ndarray:
    """tests.helpers.synthetic_recording's behaviour at (fractional) LFP sample k, seed SEED."""
    t = k / FS + SEED * 7.3
    return np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t)], -1)


def outlets(stop: threading.Event, ready: threading.Event, box: dict) -> None:
    import pylsl

    from tests.helpers import synthetic_recording

    lfp, _ = synthetic_recording(n_samples=N_SAMPLES, n_channels=N_CHANNELS, seed=SEED)
    rng = np.random.default_rng(SEED)
    amp = pylsl.StreamInfo("Amp-LFP", "LFP", N_CHANNELS, FS, pylsl.cf_float32, "rig-amp-1")
    amp.set_channel_labels([f"ch{c}" for c in range(N_CHANNELS)])
    kin = pylsl.StreamInfo("Kinematics", "Mocap", 2, 60.0, pylsl.cf_double64, "rig-task-kin")
    kin.set_channel_labels(["vel_x", "vel_y"])
    mk = pylsl.StreamInfo("Task-Markers", "Markers", 1, 0.0, pylsl.cf_string, "rig-task-markers")
    o_amp, o_kin, o_mk = pylsl.StreamOutlet(amp), pylsl.StreamOutlet(kin), pylsl.StreamOutlet(mk)
    t0 = pylsl.local_clock() + 0.05  # sample k is acquired at t0 + k / FS
    box["t0"] = t0
    ready.set()

    def task():
        nxt, tick = t0, 0
        while not stop.is_set():
            tick += 1
            if tick % 300 == 0:
                o_mk.push_sample([f"trial {tick // 300}"])
            nxt += 1.0 / 60.0
            time.sleep(max(0.0, nxt - pylsl.local_clock()))
            now = pylsl.local_clock()
            o_kin.push_sample(behaviour_at(np.array((now - t0) * FS)).tolist(), now + rng.uniform(0, 0.002))

    th = threading.Thread(target=task, daemon=True)
    th.start()
    k = 0
    while k < N_SAMPLES and not stop.is_set():
        m = min(int(rng.integers(1, 21)), N_SAMPLES - k)
        time.sleep(max(0.0, t0 + (k + m - 1) / FS - pylsl.local_clock()))
        o_amp.push_chunk(lfp[k : k + m], pylsl.local_clock() + rng.uniform(0, 0.003))
        k += m
    box["pushed"] = k
    stop.set()
    th.join()
    time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recorder", help="LabRecorderCLI (tools/labrecorder/build.sh)")
    ap.add_argument("out", help="the .xdf to write")
    ap.add_argument("--seconds", type=float, default=25.0)
    a = ap.parse_args()
    stop, ready, box = threading.Event(), threading.Event(), {}
    th = threading.Thread(target=outlets, args=(stop, ready, box), daemon=True)
    th.start()
    ready.wait(10)
    time.sleep(1.0)  # the outlets are announced
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = subprocess.Popen([a.recorder, str(out), 'name="Amp-LFP"', 'name="Kinematics"', 'name="Task-Markers"'],
                           stdin=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(a.seconds)
    rec.communicate("\n", timeout=60)
    stop.set()
    th.join(30)
    print(f"recorder exit {rec.returncode}; {out} {out.stat().st_size} bytes; outlet t0 {box['t0']:.6f}")
    return rec.returncode


if __name__ == "__main__":
    raise SystemExit(main())
