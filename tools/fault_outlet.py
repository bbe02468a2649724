"""An LSL outlet that misbehaves on purpose: check a setup (or rtdecode) against real faults.

Streams synthetic LFP-like data (sinusoids + noise) on a drift-free schedule and, every
``--fault-every`` seconds, injects one fault drawn at random (seeded):

  gap     samples are not pushed for 50-400 ms (their timestamps still advance)
  nan     one sample of one channel is NaN, another is +Inf
  burst   nothing is pushed for 150-300 ms, then the backlog arrives at once
  reset   timestamps jump back by 5 s from now on (a clock reset at the source)
  flat    one channel holds one value for 2.5 s (disconnected or railed)
  die     the outlet disappears (the process exits with code 3: restart it to "come back")

  python tools/fault_outlet.py --name LFP --channels 96 --duration 1800 --fault-every 3 --seed 0

Prints ``READY <t0> <source_id>`` once the outlet exists and one ``FAULT <t> <kind> <detail>``
line per injected fault, so a harness can line up what it injected with what it saw (a
``gap`` line ends with ``dropped=<n>``: exactly how many samples were never pushed).

``--stamping arrival`` stamps each chunk as acquisition software does: ``local_clock()``
when it is pushed, plus 0..``--jitter-ms`` (liblsl back-dates the chunk's other samples by
the nominal period); a ``burst``'s backlog then goes out as one chunk stamped at push time,
a ``reset`` subtracts 5 s from that clock. The default (``schedule``) stamps every sample
on its drift-free schedule.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import numpy as np
import pylsl

KINDS = ("gap", "nan", "burst", "reset", "flat", "die")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="LFP")
    p.add_argument("--type", default="LFP")
    p.add_argument("--source-id", default=None)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--fault-every", type=float, default=3.0, help="seconds between faults (0: none)")
    p.add_argument("--faults", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stamping", choices=["schedule", "arrival"], default="schedule",
                   help="schedule: every sample on its drift-free schedule; arrival: the clock at push time plus jitter")
    p.add_argument("--jitter-ms", type=float, default=3.0, help="arrival stamping: uniform 0..this added per chunk")
    a = p.parse_args(argv)
    kinds = [k for k in a.faults.split(",") if k]
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        p.error(f"unknown fault kind(s) {bad}; choose from {','.join(KINDS)}")

    rng = np.random.default_rng(a.seed)
    sid = a.source_id or f"fault-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(a.name, a.type, a.channels, a.rate, pylsl.cf_float32, sid)
    outlet = pylsl.StreamOutlet(info, chunk_size=a.chunk, max_buffered=2)
    freqs = rng.uniform(2.0, 40.0, a.channels)
    phases = rng.uniform(0, 2 * np.pi, a.channels)
    t0 = pylsl.local_clock() + 0.05
    print(f"READY {t0:.6f} {sid}", flush=True)

    k, n_total = 0, int(a.duration * a.rate)
    shift = 0.0  # clock-reset offset applied to stamps
    skip_until = hold_until = flat_until = -1  # sample indices
    flat_ch, flat_val = 0, 0.0
    next_fault = int(a.fault_every * a.rate) if a.fault_every > 0 else n_total + 1
    backlog_x: list[np.ndarray] = []
    backlog_t: list[np.ndarray] = []
    while k < n_total:
        end = k + a.chunk
        delay = t0 + (end - 1) / a.rate - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        idx = np.arange(k, end)
        t = idx / a.rate
        x = (50.0 * np.sin(2 * np.pi * freqs * t[:, None] + phases) + rng.normal(0, 10.0, (a.chunk, a.channels))).astype(np.float32)
        if k >= next_fault:
            kind = kinds[rng.integers(len(kinds))]
            detail = ""
            if kind == "gap":
                want = int(rng.uniform(0.05, 0.4) * a.rate)
                skip_until = k + want
                dropped = -(-want // a.chunk) * a.chunk  # whole chunks are skipped
                detail = f"{want} samples dropped={dropped}"
            elif kind == "nan":
                x[rng.integers(a.chunk), rng.integers(a.channels)] = np.nan
                x[rng.integers(a.chunk), rng.integers(a.channels)] = np.inf
            elif kind == "burst":
                hold_until = k + int(rng.uniform(0.15, 0.3) * a.rate)
                detail = f"{hold_until - k} samples held"
            elif kind == "reset":
                shift -= 5.0
                detail = "-5 s"
            elif kind == "flat":
                flat_until, flat_ch = k + int(2.5 * a.rate), int(rng.integers(a.channels))
                flat_val = float(x[0, flat_ch])
                detail = f"channel {flat_ch}"
            print(f"FAULT {pylsl.local_clock():.6f} {kind} {detail}", flush=True)
            if kind == "die":
                return 3
            next_fault = k + int(a.fault_every * a.rate)
        if k < flat_until:
            x[:, flat_ch] = flat_val
        stamps = t0 + t + shift
        if k < skip_until:
            k = end
            continue
        if k < hold_until:
            backlog_x.append(x)
            backlog_t.append(stamps)
            k = end
            continue
        if a.stamping == "arrival":  # one stamp per push: the clock now (+ jitter, + the reset shift)
            block = np.concatenate(backlog_x + [x]) if backlog_x else x
            outlet.push_chunk(block, pylsl.local_clock() + rng.uniform(0, a.jitter_ms) / 1e3 + shift)
            backlog_x.clear()
            backlog_t.clear()
        elif backlog_x:
            outlet.push_chunk(np.concatenate(backlog_x + [x]), np.concatenate(backlog_t + [stamps]).tolist())
            backlog_x.clear()
            backlog_t.clear()
        else:
            outlet.push_chunk(x, stamps.tolist())
        k = end
    time.sleep(0.2)  # let the last chunk leave before the outlet goes
    return 0


if __name__ == "__main__":
    sys.exit(main())
