"""Does the spike teacher's latent beat a linear model of its own input? (issue 13, item 2)

On held-out time of every generative family, a ridge from the teacher's latents of a single
bin should reach at least the lagged ridge (10 bins) on the same binned spikes, velocity and
grip each. This trains only the teacher (the distill config's [teacher] and [teacher_train],
with its validation block and early stopping) on a small instance of a family and reports both.

    python -m offline.analysis.teacher_gap --family dynamics --sessions 3 --minutes 2 \
        --config configs/distill_tiny.toml
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def teacher_gap(family: str, config, n_sessions: int = 3, minutes: float = 2.0, channels: int = 32, seed: int = 0) -> dict:
    """Train the config's teacher on `n_sessions` sessions of `family` (all of them training
    sessions) and return per output (vx, vy, grip) the mean over sessions of the test-block R²
    of the single-bin teacher ridge, the lagged teacher ridge and the lagged spike ridge."""
    import torch

    from offline.data.families import FamilyConfig, simulate_family
    from offline.train.checkpoint import Checkpoints
    from offline.train.config import load_config
    from offline.train.ddp import Dist
    from offline.train.pipeline import _spike_rows, _train_teacher, _unsup_rows, prepare
    from offline.train.teacher import teacher_latents

    cfg = load_config(config) if not hasattr(config, "teacher") else config
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, held_out_sessions=0))
    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.perf_counter()
    sessions = simulate_family(family, n_sessions, seed, FamilyConfig(duration_s=60.0 * minutes, n_channels=channels))
    _, data, n_train = prepare(sessions, cfg)
    teacher = _train_teacher(cfg, data, list(range(n_train)), Checkpoints(None), Dist())
    names = list(sessions[0].behavior_names)
    kin = [names.index(k) for k in ("vx", "vy", "grip")]
    rows = []
    for i, s in enumerate(data):
        lat = teacher_latents(teacher, s.spikes, i, cfg.seq_bins(cfg.teacher_train))
        rows += _unsup_rows("teacher", "held_out_time", s, lat, cfg) + [_spike_rows("held_out_time", s, cfg)]
    out = {"family": family, "n_sessions": n_sessions, "minutes": minutes, "seconds": round(time.perf_counter() - t0, 1)}
    for m in ("teacher_1bin", "teacher", "ridge_spikes"):
        r = np.array([[row["r2"][k] for k in kin] for row in rows if row["model"] == m])
        out[m] = dict(zip(("vx", "vy", "grip"), r.mean(0).round(3).tolist()))
    out["gap"] = {k: round(out["teacher_1bin"][k] - out["ridge_spikes"][k], 3) for k in ("vx", "vy", "grip")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", help="family name (repeatable; default: every family)")
    ap.add_argument("--config", default="configs/distill_tiny.toml")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--channels", type=int, default=32)
    a = ap.parse_args(argv)
    from offline.data.families import FAMILIES

    for fam in a.family or list(FAMILIES):
        print(json.dumps(teacher_gap(fam, a.config, a.sessions, a.minutes, a.channels)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
