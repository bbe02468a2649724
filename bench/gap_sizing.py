"""Gap sizing against the truth, per gap (issue 14): tools/fault_outlet.py with arrival stamps,
restarted whenever it dies, read by an LSLSource in this process. Every gap the source
reports within a clock segment is put beside the fault the outlet printed just before it: a
`gap` fault's true size (`dropped=`) against the estimate, or, for any other fault, a gap that
nothing dropped (a phantom: invented samples).

    python bench/gap_sizing.py SECONDS SEED [FAULTS] [--new-sid]
    e.g. python bench/gap_sizing.py 120 5 gap,die
         python bench/gap_sizing.py 300 1 gap,die,reset,burst,nan,flat --new-sid   # as bench/soak.py

--new-sid gives each restarted outlet a new source_id (as bench/soak.py does); without it they
share one. Gaps across a reconnection (the time the outlet was down) are not sized here.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pylsl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rtdecode.sources.lsl import PULL_GAP, PULL_RECONNECTED, LSLSource  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
new_sid = "--new-sid" in sys.argv
dur, seed = float(args[0]), int(args[1])
kinds = args[2] if len(args) > 2 else "gap,die"
name = f"gapdiag-{time.time_ns() % 100000}"
faults: list[tuple[float, str, int]] = []  # (local_clock, kind, samples dropped or -1)


def start(s: int) -> subprocess.Popen:
    sid = ["--source-id", f"sid-{s}" if new_sid else "fixed-sid"]
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "tools" / "fault_outlet.py"),
                          "--name", name, "--channels", "96", *sid, "--duration", str(dur), "--fault-every", "1.5",
                          "--faults", kinds, "--stamping", "arrival", "--seed", str(s)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip

    def read():
        for ln in p.stdout:
            part = ln.split()
            if part and part[0] == "FAULT":
                drop = [int(x.split("=")[1]) for x in part[3:] if x.startswith("dropped=")]
                faults.append((float(part[1]), part[2], drop[0] if drop else -1))

    threading.Thread(target=read, daemon=True).start()
    return p


p = start(seed)
src = LSLSource(name, n_channels=96, sampling_rate=1000.0, resolve_timeout=10)
src.open()
est: list[tuple] = []  # (local_clock, size, segment count, envelope pulls, unrounded size)
t_end, s = time.monotonic() + dur, seed
while time.monotonic() < t_end:
    if p.poll() is not None:
        s += 1
        p = start(s)
    n = src.pull()
    if n == 0 and not src.connected:
        src.poll_reconnect()
    if src.last_flags & PULL_GAP and not src.last_flags & PULL_RECONNECTED:
        why = src._gap_why
        src._gap_why = ()
        est.append((pylsl.local_clock(), src.last_gap_samples, int(src._k), src._env_n, why[1] - why[0] if why else float("nan")))
p.kill()
time.sleep(0.3)

sized, phantom, missed = [], [], []
used = set()
for t, size, k, env, raw in est:
    before = [(i, f) for i, f in enumerate(faults) if f[0] < t]
    i, (tf, kind, drop) = before[-1] if before else (-1, (float("nan"), "none", -1))
    if kind == "gap" and i not in used:
        used.add(i)
        sized.append((drop, size, k, env, round(raw - drop, 2)))
    else:
        phantom.append((size, kind, round(t - tf, 3), k, env))
t_last = est[-1][0] if est else 0.0
missed = [f for i, f in enumerate(faults) if f[1] == "gap" and i not in used and f[0] < t_last]
bad = [x for x in sized if x[0] != x[1]]
print("events", src.events.to_dict())
print(f"gap faults {sum(1 for f in faults if f[1] == 'gap')}, sized {len(sized)}, wrong size {len(bad)}: "
      f"(true, est, segment count, envelope pulls, error) {bad}")
print(f"phantom gaps {len(phantom)}: (size, fault before it, seconds after it, segment count, envelope pulls) {phantom}")
print(f"gap faults with no gap reported (before the last gap) {len(missed)}: {missed}")
print(f"samples: dropped {sum(x[0] for x in sized)}, sized {sum(x[1] for x in sized)}, phantom {sum(x[0] for x in phantom)}")
print("sizing error before rounding, in samples (deficit after - envelope before - true), sorted:",
      sorted(x[4] for x in sized))
print("RESULT", "OK" if not bad and not phantom and not missed else "WRONG")
