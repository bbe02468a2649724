"""Print or record what `rtdecode run` publishes (docs/schema.md).

  python tools/subscribe.py                                   # print kinematics and status
  python tools/subscribe.py --count 1000 --out decoded.npz    # record 1000 bins
  python tools/subscribe.py --topics kinematics --out decoded.csv
  python tools/subscribe.py --latest --period 0.05            # a 20 Hz task loop: always the newest bin

Recording keeps, per kinematics message: seq, t_lsl, t_pub, t_recv (this host's
pylsl.local_clock at receipt), lat_ms, flags and the values (one column per output name).
At the end it prints how many messages arrived, how many were missed (jumps in seq) and
the latency from the bin's last sample to receipt (t_recv - t_lsl, same host only).
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

try:
    from pylsl import local_clock
except ImportError:  # pragma: no cover - a subscriber machine without pylsl
    local_clock = time.monotonic

from rtdecode.sinks.zmq import Subscriber, flag_names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--address", default="tcp://127.0.0.1:5556", help="publisher address")
    p.add_argument("--topics", default="kinematics,status,hello", help="comma-separated topics")
    p.add_argument("--count", type=int, default=0, help="stop after this many kinematics messages (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds without a message")
    p.add_argument("--out", default=None, help="record kinematics to this .npz or .csv")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--latest", action="store_true",
                   help="act like a task loop: take only the newest bin each time (Subscriber.latest), skip older ones")
    p.add_argument("--period", type=float, default=0.0, help="with --latest: seconds the 'task' spends per step")
    return p.parse_args(argv)


def save(path: Path, rows: list, names: list[str] | None, hello: dict | None) -> None:
    n_out = len(rows[0][-1]) if rows else (len(names) if names else 0)
    names = list(names) if names and len(names) == n_out else [f"y{i}" for i in range(n_out)]
    cols = ["seq", "t_lsl", "t_pub", "t_recv", "lat_ms", "flags"]
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols + names)
            for *head, values in rows:
                w.writerow(head + [repr(float(v)) for v in values])
        return
    if path.suffix != ".npz":
        raise SystemExit(f"--out {path}: use a .npz or .csv file name")
    head = list(zip(*[r[:-1] for r in rows])) if rows else [[]] * len(cols)
    arrays = {c: np.asarray(v) for c, v in zip(cols, head)}
    arrays["seq"] = arrays["seq"].astype(np.int64)
    arrays["flags"] = arrays["flags"].astype(np.int64)
    arrays["values"] = np.asarray([r[-1] for r in rows], dtype=np.float32).reshape(len(rows), n_out)
    arrays["names"] = np.asarray(names, dtype=str)
    arrays["hello"] = np.asarray(json.dumps(hello or {}, default=str))
    np.savez(path, **arrays)


def main(argv=None) -> int:
    a = parse_args(argv)
    topics = [t.strip() for t in a.topics.split(",") if t.strip()]
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rows, e2e = [], []
    last_msg = time.monotonic()
    with Subscriber(a.address, topics) as sub:
        while not stop and (a.count <= 0 or len(rows) < a.count):
            if a.latest:
                m = sub.latest(timeout_ms=200)
                got = ("kinematics", m) if m is not None else None
            else:
                got = sub.recv(timeout_ms=200)
            now = time.monotonic()
            if got is None:
                if a.timeout and now - last_msg > a.timeout:
                    print(f"no message for {a.timeout:g} s: stopping", file=sys.stderr)
                    break
                continue
            last_msg = now
            topic, msg = got
            if topic == "kinematics":
                t_recv = local_clock()
                values = msg["values"]
                rows.append((msg["seq"], msg["t_lsl"], msg["t_pub"], t_recv, msg["lat_ms"], msg["flags"],
                             values.tolist()))
                e2e.append((t_recv - msg["t_lsl"]) * 1e3)
                if not a.quiet:
                    named = dict(zip(sub.names or [], (round(v, 4) for v in values.tolist()))) or values.tolist()
                    fl = "|".join(flag_names(msg["flags"])) or "-"
                    age = f" age {(t_recv - msg['t_lsl']) * 1e3:.1f} ms" if a.latest else ""
                    print(f"{msg['seq']:>8} {named} lat {msg['lat_ms']:.3f} ms{age} flags {fl}")
                if a.latest and a.period > 0:
                    time.sleep(a.period)  # the task's step
            elif not a.quiet:
                print(f"[{topic}] {json.dumps({k: v for k, v in msg.items() if k != 'hello'}, default=str)}")
        missed, invalid, names, hello, skipped = sub.missed, sub.invalid, sub.names, sub.hello, sub.skipped
    if a.out:
        save(Path(a.out), rows, names, hello)
    line = f"received {len(rows)} kinematics, missed {missed}, invalid {invalid}"
    if a.latest:
        line += f", skipped {skipped} older bins (--latest)"
    if e2e:
        p50, p99, mx = np.percentile(e2e, [50, 99, 100])
        line += f"; last sample -> received: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {mx:.3f} ms"
    if a.out:
        line += f"; written to {a.out}"
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
