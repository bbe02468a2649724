"""A scripted LSL outlet, run as a separate process by the tests (and by hand).

Sample k carries k in channel 0 and k + c in channel c, so a test can check that every
sample arrives exactly once and in order. Timestamps follow a drift-free schedule:
sample k is stamped t0 + k / rate, and the chunk ending with it is pushed at that time.

  python tests/sources/lsl_outlet_proc.py --name X --source-id Y [--gap-at 500 --gap-len 200]

Prints ``READY <t0>`` once the outlet exists; pushes until --duration or until killed.
Faults: --flat-channel C holds channel C constant; --gap-at/--gap-len skip pushing samples (their timestamps still advance);
--reset-at shifts timestamps back by --reset-by seconds from that sample on (clock reset);
--pause-at/--pause-s stall the pusher once, after which it catches up as fast as it can.
--stamping arrival stamps each chunk as acquisition software does (local_clock() at push time plus
0..--jitter-ms, liblsl back-dates the chunk's other samples); --chunk-max varies the chunk sizes.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pylsl

FORMATS = {"float32": pylsl.cf_float32, "double64": pylsl.cf_double64, "int16": pylsl.cf_int16}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--type", default="LFP")
    p.add_argument("--source-id", required=True)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--format", default="float32", choices=sorted(FORMATS))
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--gap-at", type=int, default=-1)
    p.add_argument("--gap-len", type=int, default=0)
    p.add_argument("--reset-at", type=int, default=-1)
    p.add_argument("--reset-by", type=float, default=10.0)
    p.add_argument("--nan-at", type=int, default=-1)
    p.add_argument("--flat-channel", type=int, default=-1, help="this channel holds one value (dead or railed)")
    p.add_argument("--stamping", default="schedule", choices=["schedule", "arrival"],
                   help="arrival: stamp each chunk with local_clock() at push time plus --jitter-ms (liblsl back-dates the rest)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="arrival stamping: uniform 0..this added to each chunk's stamp")
    p.add_argument("--chunk-max", type=int, default=0, help="chunk sizes drawn uniformly from 1..this (0: always --chunk)")
    p.add_argument("--pause-at", type=int, default=-1,
                   help="the pusher stalls once before this sample for --pause-s, then pushes its backlog as fast as it can")
    p.add_argument("--pause-s", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--true-rate", type=float, default=0.0, help="push (and stamp) at this rate, not the announced --rate (0: --rate)")
    p.add_argument("--labels", default="", help="comma-separated channel labels ('none': no labels; default ch0, ch1, ...)")
    a = p.parse_args(argv)

    info = pylsl.StreamInfo(a.name, a.type, a.channels, a.rate, FORMATS[a.format], a.source_id)
    if a.labels != "none":
        info.set_channel_labels(a.labels.split(",") if a.labels else [f"ch{c}" for c in range(a.channels)])
    outlet = pylsl.StreamOutlet(info, chunk_size=a.chunk, max_buffered=2)
    dtype = np.int16 if a.format == "int16" else np.float32
    offsets = np.arange(a.channels, dtype=np.float64)
    rng = np.random.default_rng(a.seed)
    t0 = pylsl.local_clock() + 0.05
    print(f"READY {t0:.6f}", flush=True)
    k = 0  # index of the next sample
    rate = a.true_rate or a.rate  # a stream announced at --rate that really runs at --true-rate
    n_total = int(a.duration * rate)
    while k < n_total:
        c = int(rng.integers(1, a.chunk_max + 1)) if a.chunk_max > 0 else a.chunk
        end = k + c  # this chunk holds samples k .. end-1
        due = t0 + (end - 1) / rate
        if 0 <= a.pause_at < end:  # a pusher that stalls (a busy acquisition thread), then catches up:
            time.sleep(a.pause_s)  # the chunks due meanwhile go out back to back, each stamped when pushed
            a.pause_at = -1
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        idx = np.arange(k, end, dtype=np.float64)
        if a.gap_at >= 0:
            keep = (idx < a.gap_at) | (idx >= a.gap_at + a.gap_len)
        else:
            keep = np.ones(c, dtype=bool)
        if keep.any():
            x = (idx[keep, None] + offsets[None, :]).astype(dtype)
            if a.flat_channel >= 0:
                x[:, a.flat_channel] = 1000
            if a.nan_at >= 0 and (idx[keep] == a.nan_at).any():
                x[idx[keep] == a.nan_at, -1] = np.nan
            ts = t0 + idx[keep] / rate
            if a.reset_at >= 0:
                ts = np.where(idx[keep] >= a.reset_at, ts - a.reset_by, ts)
            if a.stamping == "arrival":  # as acquisition software does: the clock at push time, plus its jitter
                late = (c - 1 - int(np.flatnonzero(keep)[-1])) / rate  # dropped samples at the chunk's end
                reset = a.reset_by if 0 <= a.reset_at <= idx[keep][-1] else 0.0
                outlet.push_chunk(x, pylsl.local_clock() + rng.uniform(0, a.jitter_ms) / 1e3 - late - reset)
            else:
                outlet.push_chunk(x, ts.tolist())
        k = end
    time.sleep(0.2)  # let the last chunk leave before the outlet goes
    del outlet
    return 0


if __name__ == "__main__":
    sys.exit(main())
