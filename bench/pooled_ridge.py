"""The linear baselines of a distill config, one per session against one for every session.

    python bench/pooled_ridge.py configs/distill_reference.toml [--outputs vx,vy,grip]

Loads the config's sessions (simulated from its seed, or its NWB files), computes the features
with the bundle's chain exactly as `rtdecode distill` does (offline.train.pipeline.prepare),
and fits, with the run's own functions and rules:
- the lagged ridge of each training session (`ridge_lfp`: its own fit block, penalty on its
  validation block, refit on both);
- the pooled lagged ridge (`ridge_pooled`: every training session's fit blocks, penalty by
  their mean validation R², refit on every fit + validation block; `pooled_ridge`).
It prints, on the outputs named (default: vx, vy, grip where the data have them), mean R²
over sessions: held-out time (each training session's test block), validation with each
session's own readout, as shipped on the other training sessions (the export session's ridge;
the pooled ridge left-one-session-out), and as shipped on the unseen sessions' test blocks (no
refit: what `rtdecode run` decodes on a new day), beside the per-session ridge refit on each
unseen session (the report's "zero-shot" row of the ridge). These are the figures a full run
of the config reports for these two rows (no model is trained here). `--per-session-norm` is
an experiment the product does not run: every session's features z-scored on its own training
time (no behaviour used), as a new day's rest block could give them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offline.train import pipeline as pl  # noqa: E402
from offline.train.decode import lagged_features  # noqa: E402
from rtdecode.batch import r2_score  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="an rtdecode distill TOML config")
    ap.add_argument("--outputs", default=None, help="comma-separated output names (default: vx,vy,grip present)")
    ap.add_argument("--per-session-norm", action="store_true",
                    help="an experiment, not what the product does: z-score each session's features (training and "
                         "unseen alike) on its own training time, no behaviour used, before every fit and score")
    a = ap.parse_args()
    t0 = time.perf_counter()
    cfg = pl.load_config(a.config)
    sessions = pl.load_sessions(cfg)
    _, data, n_train = pl.prepare(sessions, cfg)
    if a.per_session_norm:  # each session on its own unlabelled training time, as a new day could be
        for d in data:
            m, sd = d.features[d.train].mean(0), d.features[d.train].std(0)
            d.features = ((d.features - m) / np.maximum(sd, 1e-6)).astype(d.features.dtype)
    names = list(sessions[0].behavior_names)
    want = a.outputs.split(",") if a.outputs else [n for n in ("vx", "vy", "grip") if n in names] or names
    idx = [names.index(n) for n in want]
    n = pl.lags(cfg)
    e = cfg.export.session

    def score(y, p):
        return float(np.mean(r2_score(y, p)[idx]))

    per = [pl._ridge_decoder(data[j], data[j].features, cfg, n) for j in range(n_train)]
    pr = pl.pooled_ridge(cfg, data, n_train)
    te = [pl._test_idx(d) for d in data]
    va = [pl._val_idx(d) for d in data]
    x = {j: lagged_features(d.features, te[j], n) for j, d in enumerate(data)}
    xv = {j: lagged_features(data[j].features, va[j], n) for j in range(n_train)}
    others = [j for j in range(n_train) if j != e]
    unseen = list(range(n_train, len(data)))
    rows = {
        "ridge_lfp": {
            "held-out time": np.mean([score(data[j].behavior[te[j]], per[j][0].predict(x[j])) for j in range(n_train)]),
            "validation (own readout)": np.mean([np.mean(per[j][1][idx]) for j in range(n_train)]),
            "as shipped, other training sessions' validation": np.mean(
                [score(data[j].behavior[va[j]], per[e][0].predict(xv[j])) for j in others]) if others else np.nan,
            "as shipped, unseen sessions' test": np.mean(
                [score(data[j].behavior[te[j]], per[e][0].predict(x[j])) for j in unseen]) if unseen else np.nan,
            "refit on each unseen session (zero-shot row)": np.mean(
                [score(data[j].behavior[te[j]], pl._ridge_decoder(data[j], data[j].features, cfg, n)[0].predict(x[j]))
                 for j in unseen]) if unseen else np.nan,
        },
        "ridge_pooled": {
            "held-out time": np.mean([score(data[j].behavior[te[j]], pr.ridge.predict(x[j])) for j in range(n_train)]),
            "validation (own readout)": np.mean([np.mean(pr.val_r2[j][idx]) for j in range(n_train)]),
            "as shipped, other training sessions' validation": np.mean(
                [np.mean(pr.loso_val_r2[j][idx]) for j in others]) if others else np.nan,
            "as shipped, unseen sessions' test": np.mean(
                [score(data[j].behavior[te[j]], pr.ridge.predict(x[j])) for j in unseen]) if unseen else np.nan,
            "refit on each unseen session (zero-shot row)": np.nan,
        },
    }
    cols = list(rows["ridge_lfp"])
    norm = "each session z-scored on its own training time" if a.per_session_norm else "the bundle's normalisation"
    print(f"{a.config}: {n_train} training + {len(unseen)} unseen sessions, outputs {', '.join(want)}, "
          f"{n} lags, features: {norm}; {time.perf_counter() - t0:.0f} s\n")
    print("| decoder | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join("–" if np.isnan(v) else f"{v:.3f}" for v in r.values()) + " |")
    print(f"\npooled ridge penalties (relative, per output {names}): {pr.alphas.tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
