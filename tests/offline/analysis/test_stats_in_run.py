"""A real (tiny) `run_distill`: every evaluation row carries its test block's per-block
statistics, and report/metrics.md ends with the paired tests, their CIs and n."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from tiny_sessions import tiny_sessions

torch.set_num_threads(1)
STAGE = {"steps": 6, "batch_size": 4, "warmup": 2}


def test_run_rows_carry_blocks_and_the_report_shows_ci_and_n(tmp_path):
    from offline.analysis.stats import r2_blocks
    from offline.train.pipeline import LABELS, run_distill

    cfg = {
        "seed": 0, "threads": 1, "window_bins": 8, "design": "window", "checkpoint_every": 50,
        "data": {"held_out_sessions": 2, "guard_bins": 10},
        "chain": {"line_freq": 0, "lowpass_hz": 40.0},
        "teacher": {"dim": 16, "n_layers": 1, "n_heads": 2, "n_patches": 2},
        "student": {"dim": 16, "n_layers": 1, "n_heads": 2, "patch_channels": 4},
        "teacher_train": STAGE, "distill": STAGE, "supervised": STAGE, "single": STAGE,
        "eval": {"new_embedding_bins": 200, "new_embedding_steps": 2, "fit_stride": 3, "single_session": False},
        "export": {"choose": "ridge"},
    }  # fmt: skip
    run_distill(cfg, tmp_path / "run", sessions=tiny_sessions(n_sessions=4, n_bins=700))
    summary = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    rows = summary["rows"]
    assert rows and all("blocks" in r for r in rows)
    for r in rows:  # the blocks hold the same predictions the row's R² was computed from
        np.testing.assert_allclose(r2_blocks(r["blocks"], np.ones(len(r["blocks"]["n"]))), np.mean(r["r2"]), atol=1e-6)
    t = next(t for t in summary["paired"]["groups"]["all outputs"]
             if (t["a"], t["b"], t["split"]) == ("distilled", "lfp_multi_unsup", "held_out_sessions_zero_shot"))  # fmt: skip
    assert t["n"] == 2 and t["ci_over"] == "time_blocks" and t["ci"][0] <= t["mean_diff"] <= t["ci"][1]
    best = summary["paired"]["best_lfp"]["None"]
    assert best == summary["export_choice"]["row"] == "ridge_lfp"  # the decoder the bundle ships (export.choose)
    assert any(t["a"] == "best_lfp" and t["b"] == "ridge_lfp" for t in summary["paired"]["groups"]["all outputs"])
    md = (tmp_path / "run" / "report" / "metrics.md").read_text()
    sec = md.split("## Paired tests with bootstrap confidence intervals")[1]
    assert "| n | mean ΔR² (a − b) | CI | CI over |" in sec and "best_lfp = the decoder the bundle ships" in sec and best in sec
    head = f"| {LABELS['distilled']} vs {LABELS['lfp_multi_unsup']} | unseen sessions, zero-shot |"
    line = next(x for x in sec.splitlines() if x.startswith(head))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "2" and cells[4] == f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]" and cells[5] == "time blocks within sessions"
