"""Two finished seed sets of one config that differ in one setting, paired session by session.

    python tools/paired_runs.py runs/s18/ab_hga_pooled runs/s18/ab_hga_session --seeds 0 1 2

Each seed's data are the same in both sets when the setting does not touch them (the teacher's
rows, which read only spikes, then match exactly: printed as a check). Per model and split:
mean difference B - A of velocity and grip R² (the last three outputs) over session x seed
units, a bootstrap CI, how many units B wins, and a Wilcoxon signed-rank p."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = ("ridge_lfp", "distilled", "lfp_multi_unsup", "distilled_sup", "lfp_multi", "lfp_single", "teacher_1bin")
SPLITS = ("held_out_time", "held_out_sessions_zero_shot")


def rows(run: Path, seed: int, outputs: slice) -> dict:
    m = json.loads((run / f"seed{seed}" / "report" / "metrics.json").read_text())
    return {(r["model"], r["split"], r["session"]): float(np.mean(r["r2"][outputs])) for r in m["rows"]}


def main(argv=None) -> int:
    from scipy.stats import wilcoxon

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-boot", type=int, default=4000)
    a = ap.parse_args(argv)
    out = slice(-3, None)  # vx, vy, grip
    A = {s: rows(a.a, s, out) for s in a.seeds}
    B = {s: rows(a.b, s, out) for s in a.seeds}
    rng = np.random.default_rng(0)
    print(f"B = {a.b}, A = {a.a}; velocity and grip (the last three outputs)")
    for model in MODELS:
        for split in SPLITS:
            d = np.array([B[s][k] - A[s][k] for s in a.seeds for k in A[s] if k[:2] == (model, split) and k in B[s]])
            if not len(d):
                continue
            boot = rng.choice(d, (a.n_boot, len(d))).mean(1)
            p = wilcoxon(d).pvalue if len(d) > 5 and np.any(d) else float("nan")
            print(f"{model:16s} {split:28s} n={len(d):2d} B-A {d.mean():+.3f} [{np.quantile(boot, .025):+.3f}, "
                  f"{np.quantile(boot, .975):+.3f}] B better {int((d > 0).sum())}/{len(d)} p={p:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
