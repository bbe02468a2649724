"""Soak: `rtdecode run` against a stream that misbehaves every few seconds (tools/fault_outlet.py).

    python bench/soak.py --minutes 30 --fault-every 3 --out runs/soak      # the full run
    python bench/soak.py --minutes 0.25 --fault-every 2 --out /tmp/soak    # the CI-sized one
    python bench/soak.py --minutes 30 --fault-every 3 --stamping arrival   # stamped at push time, 0-3 ms jitter

Three processes, as in a lab: the faulty outlet (restarted when it "dies"), `rtdecode run`
(the real CLI), and this subscriber. At the end the runtime gets SIGTERM. Reported (JSON +
one line per figure):

- crashes: the runtime must still run when stopped and exit 0;
- seq: published bins must be numbered +1 each, none lost or duplicated on the way;
- cadence: consecutive bins must be one bin width apart in LSL time unless the later one is
  flagged GAP, RECONNECTED, CLOCK_RESET or STALE (a reported fault); anything else is an
  unexplained break;
- memory: the runtime's RSS after warm-up and at the end (/proc/<pid>/status);
- samples: the outlet prints how many samples each `gap` really dropped; the runtime's
  filled samples beyond those are *invented* (must be 0), dropped samples it did not fill
  are *unfilled*; gaps injected against gaps the runtime found.

``--stamping arrival`` makes the outlet stamp each chunk with the clock at push time plus
0-3 ms of jitter, as acquisition software does, instead of the sample schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtdecode.sinks.zmq import FLAG_CLOCK_RESET, FLAG_GAP, FLAG_RECONNECTED, FLAG_STALE, Subscriber  # noqa: E402

EXPLAINED = FLAG_GAP | FLAG_RECONNECTED | FLAG_CLOCK_RESET | FLAG_STALE


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _bundle(path: Path, n_channels: int):
    from offline.linear import fit_linear_bundle

    rng = np.random.default_rng(0)
    lfp = rng.standard_normal((20_000, n_channels)).astype(np.float32) * 50
    beh = rng.standard_normal((2000, 2)).astype(np.float32)
    return fit_linear_bundle(lfp, 1000.0, beh, ["vel_x", "vel_y"], path, window_bins=10, line_freq=None)


def _outlet(name: str, channels: int, duration: float, fault_every: float, seed: int, env: dict,
            stamping: str = "schedule"):  # fmt: skip
    cmd = [sys.executable, str(ROOT / "tools" / "fault_outlet.py"), "--name", name, "--channels", str(channels),
           "--duration", str(duration), "--fault-every", str(fault_every), "--seed", str(seed),
           "--stamping", stamping]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    os.set_blocking(proc.stdout.fileno(), False)
    return proc


def soak(minutes: float, fault_every: float, out: Path, channels: int = 96, seed: int = 0, bundle: str | None = None,
         stamping: str = "schedule") -> dict:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if "LSLAPICFG" not in env:  # keep discovery on this machine's link
        cfg = out / "lsl.cfg"
        cfg.write_text("[log]\nlevel = -3\n\n[multicast]\nResolveScope = link\n")
        env["LSLAPICFG"] = str(cfg)
    os.environ["LSLAPICFG"] = env["LSLAPICFG"]
    bpath = Path(bundle) if bundle else _bundle(Path(tempfile.mkdtemp(prefix="soak-")) / "bundle", channels).path
    name = f"soak-{os.getpid()}-{int(time.time()) % 100000}"
    address = _free_address()
    duration = minutes * 60.0
    sub = Subscriber(address, topics=("kinematics", "status"))
    rt = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "run", "--bundle", str(bpath), "--stream", name,
                           "--address", address, "--backend", "onnxruntime", "--quiet", "--stall-policy", "all",
                           "--summary", str(out / "runtime_summary.json")], env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    faults: list[str] = []
    drops: list[tuple[float, int]] = []  # (local_clock of the fault, samples really dropped)
    restarts = 0

    fault_log: list[tuple[float, str]] = []  # (local_clock, kind): to tell what preceded each gap

    def fault(line: str) -> None:
        parts = line.split()
        faults.append(parts[2])
        fault_log.append((float(parts[1]), parts[2]))
        for p in parts[3:]:
            if p.startswith("dropped="):
                drops.append((float(parts[1]), int(p.split("=", 1)[1])))

    seqs: list[int] = []
    gap_pub: list[tuple[int, float]] = []  # (seq, t_pub) of every GAP bin
    t_lsl: list[float] = []
    flags: list[int] = []
    rss: list[tuple[float, float]] = []
    t_start = time.monotonic()
    outlet = _outlet(name, channels, duration + 5, fault_every, seed, env, stamping)
    crashed = None
    try:
        next_rss = 0.0
        while (el := time.monotonic() - t_start) < duration:
            m = sub.recv(timeout_ms=100)
            if m is not None and m[0] == "kinematics":
                seqs.append(m[1]["seq"])
                if m[1]["flags"] & FLAG_GAP:
                    gap_pub.append((m[1]["seq"], m[1]["t_pub"]))
                t_lsl.append(m[1]["t_lsl"])
                flags.append(m[1]["flags"])
            for line in iter(outlet.stdout.readline, ""):
                if line.startswith("FAULT"):
                    fault(line)
            if outlet.poll() is not None:  # it died (on purpose): bring it back as a new source
                for line in outlet.stdout.read().splitlines():
                    if line.startswith("FAULT"):
                        fault(line)
                outlet.stdout.close()
                restarts += 1
                time.sleep(0.5)
                outlet = _outlet(name, channels, duration - el + 5, fault_every, seed + restarts, env, stamping)
            if rt.poll() is not None:
                crashed = f"runtime exited with {rt.returncode}: {rt.stderr.read()[-2000:]}"
                break
            if el >= next_rss:
                rss.append((el, _rss_mb(rt.pid)))
                next_rss = el + max(1.0, duration / 100)
    finally:
        from pylsl import local_clock

        t_stop = local_clock()
        if rt.poll() is None:
            rt.send_signal(signal.SIGTERM)
        try:
            rc = rt.wait(timeout=15)
        except subprocess.TimeoutExpired:
            rt.kill()
            rc = rt.wait()
        while (m := sub.recv(timeout_ms=300)) is not None:
            if m[0] == "kinematics":
                seqs.append(m[1]["seq"])
                if m[1]["flags"] & FLAG_GAP:
                    gap_pub.append((m[1]["seq"], m[1]["t_pub"]))
                t_lsl.append(m[1]["t_lsl"])
                flags.append(m[1]["flags"])
        outlet.kill()
        outlet.wait()
        outlet.stdout.close()
        rt.stderr.close()
        sub.close()
    s = np.asarray(seqs)
    dseq = np.diff(s)
    dt = np.diff(np.asarray(t_lsl))
    f = np.asarray(flags[1:], dtype=np.int64)
    bin_s = 0.01
    breaks = (np.abs(dt - bin_s) > 2e-4) & ((f & EXPLAINED) == 0)
    summary = json.loads((out / "runtime_summary.json").read_text()) if (out / "runtime_summary.json").exists() else {}
    warm = [r for t, r in rss if t >= min(10.0, duration / 5)]
    # gaps the runtime had time to see: over, and settled, before it was stopped
    t_first = t_lsl[0] + 0.5 if t_lsl else float("inf")  # and after the runtime was decoding
    # (a gap that ended within ~0.5 s of the stop may or may not have been filled: either is right)
    seen = [d for t, d in drops if t_first < t and t + d / 1000.0 + 0.5 < t_stop]
    maybe = [d for t, d in drops if t_first < t and t + d / 1000.0 + 0.5 >= t_stop and t + d / 1000.0 < t_stop]
    dropped = int(sum(seen))
    filled = int(summary.get("filled_samples", 0) or 0)
    # every run of GAP bins, with the fault printed last before its first bin was published: a
    # run after anything but a `gap` (or an outlet death: a long loss restarts the window) is a
    # gap nothing dropped
    runs, prev = [], None
    for q, tp in gap_pub:
        if prev is None or q != prev + 1:
            runs.append(tp)
        prev = q
    gap_runs = []
    for tp in runs:
        before = [f for f in fault_log if f[0] < tp]
        kind, after = (before[-1][1], round(tp - before[-1][0], 3)) if before else ("none", None)
        gap_runs.append({"t_pub": round(tp, 3), "fault_before": kind, "seconds_after_it": after,
                         "faults_before": [f[1] for f in before[-3:]]})
    # each injected gap beside the runtime's estimate of it (the source's gap log: the raw stamp of
    # the first sample after the gap, which comes after the fault by about the gap's length, on
    # the outlet's clock: 5 s back for every reset since that outlet started, i.e. since the last death)
    logged = [tuple(g) for g in summary.get("gap_log", [])]
    mis_sized, paired = [], 0
    for t, d in drops:
        since = [f for f in fault_log if f[0] < t]
        deaths = [i for i, f in enumerate(since) if f[1] == "die"]
        shift = -5.0 * sum(1 for f in since[(deaths[-1] + 1 if deaths else 0) :] if f[1] == "reset")
        near = [g for g in logged if t + shift - 0.05 <= g[0] <= t + shift + d / 1000.0 + 0.6]
        if not near:
            continue
        g = min(near, key=lambda g: abs(g[0] - (t + shift + d / 1000.0)))
        logged.remove(g)
        paired += 1
        if g[1] != d:
            before = [f[1] for f in fault_log if f[0] < t][-4:]
            mis_sized.append({"t": round(t, 3), "dropped": d, "counted": g[1], "how": g[2], "chunks_after": g[3],
                              "faults_before": before})  # fmt: skip
    result = {
        "minutes": minutes,
        "channels": channels,
        "fault_every_s": fault_every,
        "faults_injected": {k: faults.count(k) for k in sorted(set(faults))},
        "outlet_restarts": restarts,
        "crashed": crashed,
        "runtime_exit_code": rc,
        "bins_received": int(len(s)),
        "seq_lost": int((dseq[dseq > 1] - 1).sum()) if len(s) > 1 else 0,
        "seq_duplicated_or_backwards": int((dseq < 1).sum()) if len(s) > 1 else 0,
        "cadence_breaks_unexplained": int(breaks.sum()),
        "cadence_breaks_flagged": int(((np.abs(dt - bin_s) > 2e-4) & ((f & EXPLAINED) != 0)).sum()),
        "stamping": stamping,
        "gaps_injected": len(seen),
        "gaps_found": summary.get("gaps"),
        "gaps_paired_with_the_runtimes_estimate": paired,
        "gaps_mis_sized": mis_sized,  # each with what the source's estimate went by and the faults before it
        "samples_dropped_by_outlet": dropped,
        "samples_filled": filled,
        "samples_dropped_near_the_stop": int(sum(maybe)),
        "invented_samples": max(0, filled - dropped - int(sum(maybe))),  # filled beyond what was really lost: must be 0
        "unfilled_samples": max(0, dropped - filled),
        "bins_lost": int((dseq[dseq > 1] - 1).sum()) if len(s) > 1 else 0,
        "bins_duplicated": int((dseq < 1).sum()) if len(s) > 1 else 0,
        "rss_mb_after_warmup": warm[0] if warm else None,
        "rss_mb_end": rss[-1][1] if rss else None,
        "gap_runs_after_other_faults": [g for g in gap_runs if g["fault_before"] not in ("gap", "die")],
        "gap_runs": gap_runs,
        "fault_log": fault_log,  # (local_clock, kind) of every fault, as the outlet printed it
        "drops": drops,  # (local_clock, samples) of every gap: what was really dropped
        "runtime_summary": summary,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=1))
    np.savez_compressed(out / "bins.npz", seq=s, t_lsl=np.asarray(t_lsl), flags=np.asarray(flags, dtype=np.int64))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="rtdecode soak run with injected faults")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fault-every", type=float, default=3.0)
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", default=None, help="bundle to run (default: a ridge bundle on synthetic data)")
    ap.add_argument("--out", default="runs/soak")
    ap.add_argument("--stamping", choices=["schedule", "arrival"], default="schedule",
                    help="outlet stamps: the sample schedule, or the clock at push time with 0-3 ms jitter")
    a = ap.parse_args(argv)
    r = soak(a.minutes, a.fault_every, Path(a.out), a.channels, a.seed, a.bundle, a.stamping)
    for k, v in r.items():
        if k not in ("runtime_summary", "gap_runs", "fault_log", "drops"):
            print(f"{k}: {v}")
    ok = r["crashed"] is None and r["runtime_exit_code"] == 0 and r["seq_lost"] == 0 and r["seq_duplicated_or_backwards"] == 0 \
        and r["cadence_breaks_unexplained"] == 0 and r["invented_samples"] == 0 and r["unfilled_samples"] == 0 \
        and not r["gaps_mis_sized"]  # totals could cancel (one gap a sample over, another one under)
    print("SOAK OK" if ok else "SOAK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
