"""Gap sizing against the truth, per gap (issue 14): tools/fault_outlet.py with arrival stamps,
restarted whenever it dies, read by an LSLSource in this process; prints every injected gap's
true size beside the size the source estimated.

    python bench/gap_sizing.py SECONDS SEED [FAULTS]      e.g. 120 5 gap,die
"""
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rtdecode.sources.lsl import LSLSource  # noqa: E402

name = f"gapdiag-{time.time_ns()%100000}"
dur = float(sys.argv[1])
seed = int(sys.argv[2])
faults = sys.argv[3] if len(sys.argv) > 3 else "gap,die"
lines = []
def start(s):
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "tools" / "fault_outlet.py"), "--name", name, "--channels", "96", "--source-id", "fixed-sid",
                      "--duration", str(dur), "--fault-every", "1.5", "--faults", faults, "--stamping", "arrival", "--seed", str(s)],
                     stdout=subprocess.PIPE, text=True)
    def rd():
        for ln in p.stdout: lines.append(ln.strip())
    threading.Thread(target=rd, daemon=True).start()
    return p
p = start(seed)
src = LSLSource(name, n_channels=96, sampling_rate=1000.0, resolve_timeout=10)
src.open()
est = []
t_end = time.monotonic() + dur
s = seed
while time.monotonic() < t_end:
    if p.poll() is not None:
        s += 1
        p = start(s)
    n = src.pull()
    if n == 0 and not src.connected:
        src.poll_reconnect()
    if src.last_gap_samples > 0:
        est.append((round(time.monotonic(),2), src.last_gap_samples))
p.kill()
drops = [int(re.search(r"dropped=(\d+)", l).group(1)) for l in lines if " gap " in l and "dropped=" in l]
print("events", src.events.to_dict())
print("true", drops)
print("est ", [e[1] for e in est])
print("sum true", sum(drops), "sum est", sum(e[1] for e in est))
