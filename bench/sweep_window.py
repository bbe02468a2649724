"""Window length against inference latency (ONNX Runtime, one thread) for both student
designs, and optionally against R² (one `run_distill` per point).

    python bench/sweep_window.py --latency-only                         # latency table, random weights
    python bench/sweep_window.py --config configs/distill_default.toml  # + R² (runs the pipeline per point)

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
    ap.add_argument("--out", default="runs/sweep_window")
    a = ap.parse_args()
    torch.set_num_threads(1)
    scfg = StudentConfig(dim=a.dim, n_layers=a.layers, n_heads=4, patch_channels=a.patch_channels)
    rows = []
    for w in [int(x) for x in a.windows.split(",")]:
        for design in ("window", "streaming"):
            torch.manual_seed(0)
            s = LFPStudent(replace(scfg, attn_window=w if design == "streaming" else 0), a.channels, 1, 1).eval()
            row = {"window_bins": w, "design": design, "tokens_per_call": (w if design == "window" else 1) * s.n_patches,
                   **latency_ms(s, BehaviorHead(a.dim, 2), w)}  # fmt: skip
            if a.config and not a.latency_only:
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
