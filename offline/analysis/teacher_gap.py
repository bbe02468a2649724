"""Does the spike teacher's latent beat a linear model of its own input? (issue 13, item 2)

On held-out time of every generative family, a ridge from the teacher's latents of a single
bin should reach at least the lagged ridge (10 bins) on the same binned spikes, velocity and
grip each. This trains only the teacher (the distill config's [teacher] and [teacher_train],
with its validation block and early stopping) on a small instance of a family and reports both.
It also reports how much of the teacher's latent variance the LFP features (the config's chain,
lagged as every LFP baseline) predict on held-out time ("lfp_predictable": the ridge R² of the
latents, weighted by each latent dimension's variance, mean over sessions): the part of the
target a distilled student can reach.

    python -m offline.analysis.teacher_gap --family dynamics --sessions 3 --minutes 2 \
        --config configs/distill_tiny.toml [--set teacher.objective=masked --set teacher.causal=false]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def teacher_gap(family: str, config, n_sessions: int = 3, minutes: float = 2.0, channels: int = 32, seed: int = 0,
                overrides: dict | None = None) -> dict:
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
    tables: dict[str, dict] = {}  # {"teacher.objective": value}: a one-off variant, each table replaced at once
    for key, val in (overrides or {}).items():
        table, name = key.split(".", 1)
        tables.setdefault(table, {})[name] = val
    for table, kv in tables.items():
        cfg = replace(cfg, **{table: replace(getattr(cfg, table), **kv)})
    torch.set_num_threads(max(1, cfg.threads))
    t0 = time.perf_counter()
    sessions = simulate_family(family, n_sessions, seed, FamilyConfig(duration_s=60.0 * minutes, n_channels=channels))
    _, data, n_train = prepare(sessions, cfg)
    teacher = _train_teacher(cfg, data, list(range(n_train)), Checkpoints(None), Dist())
    names = list(sessions[0].behavior_names)
    kin = [names.index(k) for k in ("vx", "vy", "grip")]
    rows, pred = [], []
    for i, s in enumerate(data):
        lat = teacher_latents(teacher, s.spikes, i, cfg.seq_bins(cfg.teacher_train))
        rows += _unsup_rows("teacher", "held_out_time", s, lat, cfg) + [_spike_rows("held_out_time", s, cfg)]
        pred.append(lfp_predictable(s, lat, cfg))
    out = {"family": family, "n_sessions": n_sessions, "minutes": minutes, "seconds": round(time.perf_counter() - t0, 1),
           "teacher_config": dict(cfg.teacher.__dict__), "lfp_predictable": round(float(np.mean(pred)), 3)}
    for m in ("teacher_1bin", "teacher", "ridge_spikes"):  # (the config is under "teacher_config")
        r = np.array([[row["r2"][k] for k in kin] for row in rows if row["model"] == m])
        out[m] = dict(zip(("vx", "vy", "grip"), r.mean(0).round(3).tolist()))
    out["gap"] = {k: round(out["teacher_1bin"][k] - out["ridge_spikes"][k], 3) for k in ("vx", "vy", "grip")}
    return out


def lfp_predictable(sess, lat: np.ndarray, cfg) -> float:
    """Share of the variance of the teacher's latents `lat` (n_bins, D) on the test block that a
    lagged ridge on the LFP features predicts (penalty per latent dimension chosen on the
    validation block, refit on fit + validation; `pipeline._ridge_decoder` with the latents as
    the outputs): 1 - sum of squared errors / sum of squares about the mean, over all dimensions."""
    from dataclasses import replace

    from offline.train.pipeline import _ridge_decoder, _test_idx, lags

    as_target = replace(sess, behavior=lat.astype(np.float32))
    r = _ridge_decoder(as_target, sess.features, cfg, lags(cfg))[0]
    te = _test_idx(sess)
    from offline.train.decode import lagged_features

    y, yhat = lat[te], r.predict(lagged_features(sess.features, te, lags(cfg)))
    return float(1.0 - ((y - yhat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def _value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append", help="family name (repeatable; default: every family)")
    ap.add_argument("--config", default="configs/distill_tiny.toml")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override one config key, e.g. teacher.objective=masked (repeatable)")
    a = ap.parse_args(argv)
    over = {}
    for kv in a.set:
        if "=" not in kv or "." not in kv.split("=", 1)[0]:
            ap.error(f"--set {kv!r}: write TABLE.KEY=VALUE, e.g. teacher.causal=false")
        k, v = kv.split("=", 1)
        over[k.strip()] = _value(v.strip())
    from offline.data.families import FAMILIES

    for fam in a.family or list(FAMILIES):
        if fam not in FAMILIES:
            ap.error(f"--family {fam!r} is not a generative family; one of {', '.join(FAMILIES)}")
        try:
            out = teacher_gap(fam, a.config, a.sessions, a.minutes, a.channels, overrides=over)
        except (TypeError, ValueError, AttributeError) as e:  # a --set naming no key, or a value out of range
            print(f"error: {e} (check --set TABLE.KEY=VALUE against the config's tables)", file=sys.stderr)
            return 2
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
