"""`analyze_run` end to end on a tiny distill run, and the latents it reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from test_distill_pipeline import tiny_cfg  # noqa: E402
from tiny_sessions import tiny_sessions  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("design", ["window", "streaming"])
def test_student_outputs_are_the_pipelines_latents_with_their_patch_tokens(design):
    from offline.analysis.latents import student_outputs
    from offline.models.student import LFPStudent, StudentConfig
    from offline.train.distill import student_latents

    torch.manual_seed(0)
    st = LFPStudent(StudentConfig(dim=16, n_layers=2, n_heads=2, patch_channels=2, attn_window=6 if design == "streaming" else 0),
                    8, 1, 2, teacher_dim=12).eval()  # fmt: skip
    feats = np.random.default_rng(0).standard_normal((700, 8)).astype(np.float32)
    idx = np.r_[3:40:3, 300:700]
    out = student_outputs(st, feats, 1, 6, idx)
    assert out["tokens"].shape == (len(idx), 4, 16) and out["proj"].shape == (len(idx), 12)
    np.testing.assert_allclose(out["latent"], student_latents(st, feats, 1, 6, idx), rtol=1e-5, atol=1e-5)
    assert np.abs(out["tokens"] - out["latent"][:, None]).max() > 1e-3  # patches differ from their mean


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from offline.train.pipeline import run_distill

    sessions = tiny_sessions(n_bins=900)
    out = tmp_path_factory.mktemp("an") / "run"
    run_distill(tiny_cfg("window", eval={"new_embedding_bins": 200, "new_embedding_steps": 1, "fit_stride": 3}), out,
                sessions=sessions)  # fmt: skip
    return out, sessions


def test_analyze_run_writes_report_json_and_figures(tiny_run):
    from offline.analysis.run import AnalysisConfig, analyze_run

    run, sessions = tiny_run
    said: list[str] = []
    res = analyze_run(run / "bundle", sessions=sessions, acfg=AnalysisConfig(n_shuffles=4), log=said.append)  # the bundle folder works too
    stages = [m for m in said if m.startswith("[analyze] session ")]  # one progress line per session (a probe saw none)
    assert [m.split()[2] for m in stages] == ["tiny0", "tiny1", "tiny2"] and "unseen session" in stages[2], said
    assert said[0].startswith("[analyze] loading") and said[-1].startswith("[analyze] writing"), said
    out = run / "analysis"
    assert Path(res["paths"]["markdown"]) == out / "report.md"
    md = (out / "report.md").read_text()
    for heading in ("Alignment to the spike teacher", "Controls", "Temporal scales", "Per channel patch",
                    "true latents", "Expected ordering"):  # fmt: skip
        assert heading in md
    for png in ("cka_scales.png", "per_session.png", "patches.png", "cosine_trace.png"):
        assert (out / png).stat().st_size > 5000
    js = json.loads((out / "analysis.json").read_text())
    models = js["meta"]["models"]
    assert models == ["distilled", "distilled_sup", "lfp_multi", "lfp_multi_unsup", "lfp_single", "initial", "features"]
    assert js["meta"]["train_sessions"] == ["tiny0", "tiny1"]
    for m in models:
        for sid in ("tiny0", "tiny1"):
            r = js["teacher"][m][sid]
            assert 0.0 < r["cka"] <= 1.0 and -1.0 <= r["cos_mapped"] <= 1.0
            assert r["scales"]["k"][:3] == [1, 2, 5] and len(r["scales"]["cka_debiased"]) == len(r["scales"]["k"])
            assert r["controls"]["circular"]["cka"]["n"] == 4
            if m != "features":
                assert len(r["patches"]["cka"]) == 2  # 8 channels / 4 per patch
        assert js["truth"][m]["tiny2"]["split"] == "held_out_session"  # unseen session, zero-shot
    assert "cos_proj" in js["teacher"]["distilled"]["tiny0"] and "cos_proj" not in js["teacher"]["lfp_multi"]["tiny0"]
    assert set(js["truth"]["teacher"]) == {"tiny0", "tiny1"}
    # the chain features are not the teacher: the metrics are not saturated
    assert js["summary"]["teacher"]["features"]["cka"] < 0.9
    assert js["summary"]["checks"]  # the ordering checks are computed (their outcome is data, not asserted here)


def test_analysis_of_the_true_latents_recovers_them(tiny_run):
    """A model whose latents are the simulator's own (here: the 'features' slot given the true
    latents) must score ~1 on truth recovery, and its controls stay far below."""
    from offline.analysis.compare import truth_recovery

    _, sessions = tiny_run
    z = sessions[0].latents.astype(np.float64)
    r = truth_recovery(z[:600] * 2.0, z[:600], z[700:] * 2.0, z[700:], 1e-3, np.random.default_rng(0), 5, 50)
    assert r["r2"] > 0.99 and r["cka"] > 0.99
    assert r["control_circular"]["cka_debiased"]["hi"] < 0.8


def test_wrong_sessions_and_unfinished_runs_are_refused(tiny_run, tmp_path):
    from offline.analysis.latents import AnalysisError
    from offline.analysis.run import analyze_run
    from rtdecode.cli import main

    run, _ = tiny_run
    with pytest.raises(AnalysisError, match="pass the same sessions"):
        analyze_run(run, sessions=tiny_sessions(n_bins=800))
    with pytest.raises(AnalysisError, match="units"):  # same ids and length, other units: another simulator version
        analyze_run(run, sessions=tiny_sessions(n_bins=900, base_units=10))
    with pytest.raises(AnalysisError, match="no checkpoints"):
        analyze_run(tmp_path)
    assert main(["analyze", str(tmp_path)]) == 2
