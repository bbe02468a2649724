"""How much calibration a new day needs: `rtdecode calibrate` on the unseen sessions of a
finished `rtdecode distill` run whose data come from the built-in simulators.

    python bench/calibration_curve.py runs/s14/hga_cal --minutes 0.5,1,2,3
    python bench/calibration_curve.py RUN --minutes 0.5,1,2 --label-free   # no behaviour read: the z-scoring only

The unseen sessions are simulated again from the run's config (same seed: the same data the
run held out). For each unseen session and each calibration length m, the run's bundle is
calibrated on the session's first m minutes (offline.calibrate), and the shipped and the
calibrated bundles are both decoded from the raw LFP (rtdecode.batch.decode_recording, the
runtime's backend) and scored on one evaluation block: the session's bins after the longest
calibration block and its guard (a window plus 10 bins), the same for every m. Prints a markdown table (mean over
outputs, and per output averaged over sessions).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offline.calibrate import GUARD_BINS, calibrate  # noqa: E402
from offline.train.pipeline import load_config, load_sessions  # noqa: E402
from rtdecode.batch import decode_recording, r2_score  # noqa: E402
from rtdecode.bundle import load_bundle  # noqa: E402
from rtdecode.recording import Recording  # noqa: E402


def session_lfp(b, s) -> tuple[np.ndarray, list[str]]:
    """A simulated session's LFP (float32) and channel ids, in the bundle's channel order when
    the bundle names the same channels."""
    lfp = np.asarray(s.lfp, np.float32)
    ids = [str(c) for c in s.channel_ids]
    if b.channel_names and sorted(ids) == sorted(b.channel_names):
        lfp = lfp[:, [ids.index(c) for c in b.channel_names]]
        ids = list(b.channel_names)
    return lfp, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder of rtdecode distill (simulated data)")
    ap.add_argument("--minutes", default="0.5,1,2,3", help="calibration lengths")
    ap.add_argument("--renormalize", action="store_true")
    ap.add_argument("--label-free", dest="label_free", action="store_true",
                    help="rtdecode calibrate --label-free: only the chain's z-scoring refit on the block, no behaviour read")
    ap.add_argument("--out", default=None, help="JSON of the figures (default: RUN/calibration_curve.json)")
    a = ap.parse_args()
    run = Path(a.run)
    b = load_bundle(run / "bundle")
    cfg = load_config(b.provenance["config"], legacy=True)  # the run's own config, as its bundle records it
    sessions = load_sessions(cfg)
    unseen = sessions[len(sessions) - cfg.data.held_out_sessions :]
    mins = [float(m) for m in a.minutes.split(",")]
    w = b.model.window_bins
    rows, t0 = {}, time.time()
    chosen = b.provenance.get("decoder_choice", {}).get("chosen", "?")
    with tempfile.TemporaryDirectory() as tmp:
        for s in unseen:
            lfp, ids = session_lfp(b, s)
            beh = np.asarray(s.behavior, np.float32)
            rec = Path(tmp) / f"{s.session_id}.npz"
            Recording(lfp, s.lfp_rate, channel_names=ids, behavior=beh, behavior_names=list(s.behavior_names),
                      behavior_rate=1.0 / s.bin_width).save(rec)  # fmt: skip
            lo = int(round(max(mins) * 60 / s.bin_width)) + w + GUARD_BINS  # after the longest block and its guard
            if len(beh) - lo < 1000:
                raise SystemExit(f"{s.session_id}: {len(beh)} bins leave {len(beh) - lo} to score after {max(mins)} min")
            ev = slice(lo, len(beh))
            rows.setdefault("shipped", []).append(r2_score(beh[ev], decode_recording(b, lfp)[ev]).tolist())
            for m in mins:
                out = Path(tmp) / f"{s.session_id}-{m}"
                calibrate(b.path, rec, out, minutes=m, renormalize=a.renormalize, label_free=a.label_free, log=lambda *x: None)
                y = decode_recording(load_bundle(out), lfp)
                what = "renormalised (label-free)" if a.label_free else "calibrated"
                rows.setdefault(f"{what} on {m:g} min", []).append(r2_score(beh[ev], y[ev]).tolist())
    names = list(b.output_names)
    eval_min = (len(beh) - lo) * s.bin_width / 60
    print(f"\nbundle {b.path} (ships {chosen}); {len(unseen)} unseen sessions ({', '.join(s.session_id for s in unseen)}); "
          f"scored on each session's last {eval_min:.1f} min; {time.time() - t0:.0f} s\n")  # fmt: skip
    print("| readout | mean R² (sessions: " + ", ".join(s.session_id for s in unseen) + ") | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for k, v in rows.items():
        v = np.asarray(v)
        per_s = " / ".join(f"{x:+.3f}" for x in v.mean(1))
        print(f"| {k} | {v.mean():+.3f} ({per_s}) | " + " | ".join(f"{x:+.3f}" for x in v.mean(0)) + " |")
    dest = Path(a.out) if a.out else run / ("calibration_curve_label_free.json" if a.label_free else
                                            "calibration_curve_renorm.json" if a.renormalize else "calibration_curve.json")  # fmt: skip
    dest.write_text(json.dumps({"bundle": str(b.path), "chosen": chosen, "outputs": names, "eval_minutes": eval_min,
                                "sessions": [s.session_id for s in unseen], "r2": rows}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
