"""What the distilled student is asked to fit: the geometry of a finished run's teacher latents.

    python bench/target_geometry.py runs/s12/dynamics/seed0

For every training session of a run made by `python -m offline.analysis.seeds` (its seed.json
names the config, seed, family and --set overrides), with the run's own teacher checkpoint:

- the share of the latents' variance in their top 4 / 8 / 16 principal components, after the
  per-session mean is removed ("centred") and after the per-session, per-dimension z-score that
  `[loss] standardize_targets = "session"` applies before the cosine loss ("z");
- how much of the latents a lagged ridge on the run's LFP features predicts on the test block
  (penalty per dimension on the validation block), weighted by each dimension's variance and
  with every dimension counted alike (what the z-score asks of the student);
- the velocity and grip R² (test block) of a single-bin ridge from the top 8 principal components
  and from all of them.

It trains nothing; it re-simulates the run's sessions (the seed fixes them) and reads the
teacher from `<run>/checkpoints/teacher.pt`. One line of JSON per session, then the means.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run folder of offline.analysis.seeds (with seed.json and checkpoints/)")
    a = ap.parse_args(argv)
    import torch

    from offline.analysis.seeds import seed_config
    from offline.models.teacher import SpikeTeacher
    from offline.train import pipeline as P
    from offline.train.checkpoint import Checkpoints
    from offline.train.config import load_config
    from offline.train.decode import fit_ridge_val, lagged_features
    from offline.train.teacher import teacher_latents
    from rtdecode.batch import r2_score

    run = Path(a.run)
    info_p = run / "seed.json"
    if not info_p.is_file() or not (run / "checkpoints" / "teacher.pt").is_file():
        print(f"error: {run} is not a finished seeds run (needs seed.json and checkpoints/teacher.pt)", file=sys.stderr)
        return 2
    info = json.loads(info_p.read_text())
    torch.set_num_threads(1)
    cfg = load_config(seed_config(info["config"], info["seed"], info.get("family"), info.get("set", [])))
    sessions = P.load_sessions(cfg)
    n_train = len(sessions) - cfg.data.held_out_sessions
    # the run's features: normalisation fit on the training sessions, as in the run
    _, data, _ = P.prepare(sessions, cfg)
    teacher = SpikeTeacher(cfg.teacher, [d.spikes.shape[1] for d in data[:n_train]])
    teacher.load_state_dict(Checkpoints(run / "checkpoints").done("teacher")["model"])
    teacher.eval()
    names = list(sessions[0].behavior_names)
    kin = [names.index(k) for k in ("vx", "vy", "grip")]
    L, alphas = P.lags(cfg), cfg.eval.ridge_alpha
    rows = []
    for i in range(n_train):
        s = data[i]
        lat = teacher_latents(teacher, s.spikes, i, cfg.seq_bins(cfg.teacher_train)).astype(np.float64)
        fit = lat[s.train]
        c = lat - fit.mean(0)
        ev = np.linalg.eigvalsh(np.cov(fit.T))[::-1]
        evz = np.linalg.eigvalsh(np.corrcoef(fit.T))[::-1]
        fi, vi, te = P._fit_idx(s, cfg.eval.fit_stride, cfg.window_bins), P._val_idx(s), P._test_idx(s)
        xf, xv, xt = (lagged_features(s.features, ix, L) for ix in (fi, vi, te))
        r, _, _ = fit_ridge_val(xf, c[fi], xv, c[vi], alphas)
        y, pred = c[te], r.predict(xt)
        sse, sst = ((y - pred) ** 2).sum(0), ((y - y.mean(0)) ** 2).sum(0)
        row = {"session": s.session_id,
               "top4/8/16 centred": [round(float(ev[:k].sum() / ev.sum()), 3) for k in (4, 8, 16)],
               "top4/8/16 z": [round(float(evz[:k].sum() / evz.sum()), 3) for k in (4, 8, 16)],
               "lfp_predictable variance-weighted": round(float(1 - sse.sum() / sst.sum()), 3),
               "lfp_predictable dims alike": round(float(np.mean(1 - sse / sst)), 3)}  # fmt: skip
        _, vecs = np.linalg.eigh(np.cov(fit.T))
        vecs = vecs[:, ::-1]
        for k in (8, lat.shape[1]):
            z = c @ vecs[:, :k]
            rr, _, _ = fit_ridge_val(z[fi], s.behavior[fi], z[vi], s.behavior[vi], alphas)
            row[f"velocity+grip R2, 1 bin, top {k} PCs"] = round(float(np.mean(r2_score(s.behavior[te], rr.predict(z[te]))[kin])), 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    mean = {}
    for k, v in rows[0].items():
        if k == "session":
            continue
        vals = np.array([r[k] for r in rows], float)
        mean[k] = np.round(vals.mean(0), 3).tolist()
    print(json.dumps({"mean over training sessions": mean, "run": str(run), "family": info.get("family")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
