"""Calibration of the simulator: how well does a lagged ridge decode velocity from spikes,
and from the LFP through the runtime's own signal chains? Measures, asserts nothing.

    python bench/calibrate_sim.py --sessions 6 --minutes 5 --channels 96 [--lags 10] [--alpha 1e-2] [--json out.json]

Per session: the time split of offline.train.windows.split_time (last 20 % held out, 50-bin
guard), features of the last `lags` bins (offline.train.decode.lagged_features), ridge fit on
the training block, R² on the held-out block, averaged over vx and vy. LFP chains:
`lfp` (notches, 0.05 Hz high-pass, 50 Hz low-pass, CAR, 10 ms bins) and `lmp_bands`
(LMP + 7-20 Hz + 70-200 Hz power), both z-scored on the training block.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from offline.data.simulate import SimConfig, simulate_session  # noqa: E402
from offline.train.decode import lagged_features, ridge_r2  # noqa: E402
from offline.train.windows import split_time  # noqa: E402
from rtdecode.dsp import compute_features  # noqa: E402
from rtdecode.dsp.design import design_chain, fit_normalization  # noqa: E402


def velocity_r2(x: np.ndarray, y: np.ndarray, lags: int, alpha: float, stride: int = 1) -> float:
    tr, te = split_time(len(x), 0.2, 50, min_bins=4 * lags)
    itr = np.arange(tr.start + lags - 1, tr.stop, stride)
    ite = np.arange(te.start, te.stop)
    r2, _ = ridge_r2(lagged_features(x, itr, lags), y[itr], lagged_features(x, ite, lags), y[ite], alpha)
    return float(np.mean(r2))


def chain_features(s, kind: str) -> np.ndarray:
    chain = design_chain(kind, fs=s.lfp_rate, n_channels=s.lfp.shape[1], bin_width_s=s.bin_width)
    f = compute_features(chain, s.lfp)
    tr, _ = split_time(len(f), 0.2, 50, min_bins=40)
    mean, std = fit_normalization(f[tr])
    return ((f - mean) / std).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lags", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=1e-2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cfg = replace(SimConfig(), duration_s=a.minutes * 60.0, n_channels=a.channels)
    rows = []
    print(f"{'session':10s} {'units':>5s} {'spikes':>7s} {'lfp':>7s} {'lmp_bands':>9s} {'rate Hz':>8s}  (velocity R², held-out time)")
    for i in range(a.sessions):
        t = time.perf_counter()
        s = simulate_session(cfg, i, a.seed)
        vel = s.behavior[:, [s.behavior_names.index("vx"), s.behavior_names.index("vy")]]
        sp = s.spikes.astype(np.float32)
        row = {
            "session": s.session_id, "n_units": int(sp.shape[1]), "mean_rate_hz": float(sp.mean() / s.bin_width),
            "spikes": velocity_r2(sp, vel, a.lags, a.alpha),
            "lfp": velocity_r2(chain_features(s, "lfp"), vel, a.lags, a.alpha),
            "lmp_bands": velocity_r2(chain_features(s, "lmp_bands"), vel, a.lags, a.alpha, stride=2),
            "seconds": round(time.perf_counter() - t, 1),
        }  # fmt: skip
        rows.append(row)
        print(f"{row['session']:10s} {row['n_units']:5d} {row['spikes']:7.3f} {row['lfp']:7.3f} {row['lmp_bands']:9.3f} "
              f"{row['mean_rate_hz']:8.1f}", flush=True)  # fmt: skip
    for k in ("spikes", "lfp", "lmp_bands"):
        v = np.array([r[k] for r in rows])
        print(f"{k:10s} mean {v.mean():.3f}  sd {v.std():.3f}  range {v.min():.3f}..{v.max():.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
