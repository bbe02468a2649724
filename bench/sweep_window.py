"""Window length against inference latency (ONNX Runtime, one thread) for both student
designs, and optionally against R² (one `run_distill` per point).

    python bench/sweep_window.py --latency-only                         # latency table, random weights
    python bench/sweep_window.py --config configs/distill_default.toml  # + R² (runs the pipeline per point)
    python bench/sweep_window.py --teacher-from runs/default --windows 8,16,32
        # + R² at a fraction of the cost: the finished run's teacher and targets are reused, only
        # the distilled student is trained per point (its distill stage) and decoded by ridge

Window design: one call sees (1, W, F): attention over W*P tokens, cost ~ (W*P)^2.
Streaming design: one call sees (1, 1, F) + caches of W-1 bins: cost ~ W*P.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def latency_ms(student, head, window: int, n: int = 300) -> dict:
    import onnxruntime as ort

    from offline.export import deployable, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        spec = export_onnx(student, head, 0, window, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        _, ex, _ = deployable(student, head, 0, window)
        feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), ex)}
        feed[spec.input_name] = np.random.default_rng(0).standard_normal(ex[0].shape).astype(np.float32)
        for _ in range(20):
            sess.run(None, feed)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, feed)
            t.append(time.perf_counter() - t0)
    t = np.array(t) * 1e3
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}


class _Reuse:
    """A finished run's sessions, features and teacher targets; `point(W, design)` trains the
    distilled student alone (the run's distill stage settings) and returns its ridge R² on
    the training sessions' held-out time and zero-shot on the held-out sessions (velocity
    and grip where named, else all outputs)."""

    def __init__(self, run_dir: str):
        from offline.analysis.latents import load_run
        from offline.train.distill import standardize_targets
        from offline.train.teacher import teacher_latents

        run = load_run(run_dir)
        self.cfg, self.data, self.n_train = run.cfg, run.data, run.n_train
        self.nb = self.data[0].features.shape[1] // np.asarray(run.sessions[0].lfp).shape[1]  # chain branches
        c = self.cfg
        tseq = c.seq_bins(c.teacher_train)  # the run's own targets, whatever W is swept
        t = {i: teacher_latents(run.teacher, self.data[i].spikes, i, tseq) for i in range(self.n_train)}
        self.targets = standardize_targets(t, self.data, c.loss.standardize_targets)
        names = list(run.sessions[0].behavior_names)
        self.outs = [k for k, n in enumerate(names) if n in ("vx", "vy", "grip")] or list(range(len(names)))

    def point(self, w: int, design: str) -> dict:
        from offline.train.checkpoint import Checkpoints
        from offline.train.ddp import Dist
        from offline.train.pipeline import _latents, _ridge_rows, _train_student

        cfg = replace(self.cfg, window_bins=w, design=design)
        t0 = time.perf_counter()
        st, _ = _train_student("distill", cfg, self.data, list(range(self.n_train)), self.targets, Checkpoints(None),
                               Dist(), None, cfg.distill, 0.0, self.nb)  # fmt: skip
        train_s = time.perf_counter() - t0
        r2 = {"held_out_time": [], "held_out_sessions_zero_shot": []}
        for i, s in enumerate(self.data):
            emb = i if i < self.n_train else cfg.eval.zero_shot_from
            row = _ridge_rows("distilled", "", s, _latents(st, s, emb, cfg), cfg)
            r2["held_out_time" if i < self.n_train else "held_out_sessions_zero_shot"].append(
                float(np.mean([row["r2"][k] for k in self.outs])))  # fmt: skip
        return {"distill_s": round(train_s, 1), **{f"distilled_r2_{k}": float(np.mean(v)) for k, v in r2.items() if v}}


def main() -> None:
    import torch

    from offline.models.heads import BehaviorHead
    from offline.models.student import LFPStudent, StudentConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", default="8,16,32,64,100")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--patch-channels", type=int, default=8)
    ap.add_argument("--latency-only", action="store_true")
    ap.add_argument("--config", help="distill config: also train/evaluate one run per window and design")
    ap.add_argument("--teacher-from", help="finished distill run: reuse its teacher, train only the distilled student per point")
    ap.add_argument("--designs", default="window,streaming")
    ap.add_argument("--out", default="runs/sweep_window")
    a = ap.parse_args()
    torch.set_num_threads(1)
    scfg = StudentConfig(dim=a.dim, n_layers=a.layers, n_heads=4, patch_channels=a.patch_channels)
    rows = []
    reuse = _Reuse(a.teacher_from) if a.teacher_from else None
    if reuse is not None:  # the latency model must be the run's student
        c = reuse.cfg
        scfg, a.channels, a.dim = c.student, reuse.data[0].features.shape[1], c.student.dim
    for w in [int(x) for x in a.windows.split(",")]:
        for design in a.designs.split(","):
            torch.manual_seed(0)
            s = LFPStudent(replace(scfg, attn_window=w if design == "streaming" else 0), a.channels, reuse.nb if reuse else 1, 1).eval()
            row = {"window_bins": w, "design": design, "tokens_per_call": (w if design == "window" else 1) * s.n_patches,
                   **latency_ms(s, BehaviorHead(a.dim, 2), w)}  # fmt: skip
            if reuse is not None and not a.latency_only:
                row.update(reuse.point(w, design))
            elif a.config and not a.latency_only:
                from offline.train.config import load_config
                from offline.train.pipeline import run_distill

                cfg = replace(load_config(a.config), window_bins=w, design=design)
                out = Path(a.out) / f"{design}_w{w}"
                t0 = time.perf_counter()
                run_distill(cfg, out)
                m = json.loads((out / "report" / "metrics.json").read_text())["table"]
                row.update(train_s=round(time.perf_counter() - t0, 1),
                           **{f"{k}_r2": v["held_out_time"]["mean"] for k, v in m.items() if "held_out_time" in v})
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r.get(k, float('nan')):.3f}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
