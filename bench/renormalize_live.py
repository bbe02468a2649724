"""`rtdecode run --renormalize` live on the unseen days of a finished `rtdecode distill` run
(simulated data, per-session z-scoring), against the same refit done offline.

    python bench/renormalize_live.py runs/s17/reference_session/seed0 --sessions 0,1 --seconds 60

For each chosen unseen session (simulated again from the run's config: the data the run held
out), the session is replayed in real time as an LSL outlet in another process (`rtdecode
replay`, schedule stamps) and decoded live by the runtime with `renormalize_s = SECONDS`: it
sums SECONDS of features once the filters settle, sets the chain's statistics once, and flags
bins WARMUP until a window of renormalised bins has passed. The online R² is scored from the
published ZeroMQ messages (each placed in the session by its `t_lsl`, WARMUP left out; as
`rtdecode demo` does). On the same stretch of the session, offline: the bundle as shipped
(the export session's statistics), and `rtdecode calibrate --label-free` on the session's
first SECONDS (offline.calibrate). Prints a markdown table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration_curve import session_lfp  # noqa: E402

from offline.calibrate import calibrate  # noqa: E402
from offline.train.pipeline import load_config, load_sessions  # noqa: E402
from rtdecode.batch import decode_recording, r2_score  # noqa: E402
from rtdecode.bundle import load_bundle  # noqa: E402
from rtdecode.demo import live_decode, truth_at  # noqa: E402
from rtdecode.recording import Recording  # noqa: E402


def _address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder of rtdecode distill (simulated data, [chain] normalize = 'session')")
    ap.add_argument("--sessions", default="0,1", help="which unseen sessions (indices among them)")
    ap.add_argument("--seconds", type=float, default=60.0, help="renormalize_s, and the offline label-free block")
    ap.add_argument("--out", default=None, help="JSON (default: RUN/renormalize_live.json)")
    a = ap.parse_args()
    run = Path(a.run)
    b = load_bundle(run / "bundle")
    cfg = load_config(b.provenance["config"], legacy=True)
    unseen = load_sessions(cfg)[-cfg.data.held_out_sessions :]
    names = list(b.output_names)
    kin = [i for i, n in enumerate(names) if n in ("vx", "vy", "vel_x", "vel_y", "grip", "force")]
    rows: dict[str, list] = {}
    info, t_start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in (int(x) for x in a.sessions.split(",")):
            s = unseen[i]
            lfp, ids = session_lfp(b, s)
            beh = np.asarray(s.behavior, np.float64)
            rec = Recording(lfp, s.lfp_rate, channel_names=ids, behavior=beh.astype(np.float32),
                            behavior_names=list(s.behavior_names), behavior_rate=1.0 / s.bin_width)  # fmt: skip
            path = Path(tmp) / f"{s.session_id}.npz"
            rec.save(path)
            arr: dict = {}
            t = time.time()
            live = live_decode(b, rec, seconds=len(lfp) / s.lfp_rate, address=_address(), out=Path(tmp),
                               run_kw={"renormalize_s": a.seconds}, arrays=arr)  # fmt: skip
            sc = arr["scored"]
            q = arr["q"][sc]
            on = r2_score(truth_at(beh, q), arr["values"][sc])
            lo, hi = int(np.ceil(q.min())), int(np.floor(q.max())) + 1  # the same stretch, on the training grid
            ev = slice(lo, hi)
            shipped = r2_score(beh[ev], decode_recording(b, lfp)[ev])
            out = Path(tmp) / f"{s.session_id}-lf"
            calibrate(b.path, path, out, minutes=a.seconds / 60.0, label_free=True, log=lambda *x: None)
            lf = r2_score(beh[ev], decode_recording(load_bundle(out), lfp)[ev])
            for k, v in (("as shipped (export session's z-scoring), offline", shipped),
                         (f"calibrate --label-free on the first {a.seconds:g} s, offline", lf),
                         (f"run --renormalize {a.seconds:g}, online (published messages)", on)):  # fmt: skip
                rows.setdefault(k, []).append(np.asarray(v, np.float64).tolist())
            rn = live.get("renormalized") or {}
            info.append({"session": s.session_id, "scored_s": [lo * s.bin_width, hi * s.bin_width],
                         "bins_scored": int(sc.sum()), "bins_warmup": live["bins_warmup"],
                         "renormalized": rn, "online_vs_offline_max_abs": live["max_abs_diff_online_vs_offline"],
                         "latency_ms_bin_end_to_received": live["latency_ms_bin_end_to_received"],
                         "overruns": live["overruns"], "wall_s": round(time.time() - t, 1)})  # fmt: skip
            print(f"[{s.session_id}] scored {lo * s.bin_width:.1f}-{hi * s.bin_width:.1f} s; online "
                  f"{np.mean(on):+.3f}, label-free offline {np.mean(lf):+.3f}, shipped {np.mean(shipped):+.3f}", flush=True)
    sess = ", ".join(d["session"] for d in info)
    print(f"\nbundle {b.path}; unseen sessions {sess}; {time.time() - t_start:.0f} s\n")
    kn = "/".join(names[i] for i in kin)
    print(f"| decoder | mean R², all {len(names)} outputs (per session) | mean R², {kn} | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for k, v in rows.items():
        v = np.asarray(v)
        per = " / ".join(f"{x:+.3f}" for x in v.mean(1))
        print(f"| {k} | {v.mean():+.3f} ({per}) | {v[:, kin].mean():+.3f} | " + " | ".join(f"{x:+.3f}" for x in v.mean(0)) + " |")
    dest = Path(a.out) if a.out else run / "renormalize_live.json"
    dest.write_text(json.dumps({"bundle": str(b.path), "seconds": a.seconds, "outputs": names, "r2": rows, "runs": info},
                               indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
