"""Shapes, masking, causality, streaming equivalence and ONNX parity of the offline models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from offline.models.common import bin_mask
from offline.models.heads import BehaviorHead
from offline.models.student import LFPStudent, StudentConfig
from offline.models.teacher import SpikeTeacher, TeacherConfig

torch.set_num_threads(1)
CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("distill_*.toml"))


def small_student(window=0, teacher_dim=24, n_sessions=2):
    torch.manual_seed(0)
    cfg = StudentConfig(dim=32, n_layers=2, n_heads=2, patch_channels=4, attn_window=window)
    return LFPStudent(cfg, n_features=16, n_branches=1, n_sessions=n_sessions, teacher_dim=teacher_dim)


def test_student_shapes():
    s = small_student()
    out = s(torch.randn(3, 10, 16), 1)
    assert out["latent"].shape == (3, 10, 32)
    assert out["recon"].shape == (3, 10, 16)
    assert out["proj"].shape == (3, 10, 24)
    assert s.n_patches == 4


def test_student_refuses_patches_that_do_not_fit():
    with pytest.raises(ValueError, match="patch_channels"):
        LFPStudent(StudentConfig(dim=32, n_layers=1, n_heads=2, patch_channels=3), 16, 1, 1)


def test_teacher_shapes_per_session_units():
    torch.manual_seed(0)
    t = SpikeTeacher(TeacherConfig(dim=32, n_layers=2, n_heads=2, n_patches=3), [5, 9])
    for s, n in ((0, 5), (1, 9)):
        out = t(torch.poisson(torch.ones(2, 7, n)), s)
        assert out["latent"].shape == (2, 7, 32)
        assert out["log_rates"].shape == (2, 7, n)


def test_masks():
    m = bin_mask(3, 2, causal=True)
    assert m.shape == (6, 6)
    assert torch.isinf(m[0, 2]) and m[2, 0] == 0 and m[0, 1] == 0  # future bin hidden, same bin visible
    w = bin_mask(4, 1, causal=True, window=2)
    assert torch.isinf(w[3, 1]) and w[3, 2] == 0
    assert bin_mask(3, 2, causal=False) is None


def test_student_is_causal():
    s = small_student().eval()
    x = torch.randn(1, 10, 16)
    y = x.clone()
    y[:, 6:] += 5.0  # change the future of bin 5
    with torch.no_grad():
        a, b = s(x, 0)["latent"], s(y, 0)["latent"]
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3)


def test_masked_bin_does_not_see_its_own_counts():
    torch.manual_seed(0)
    t = SpikeTeacher(TeacherConfig(dim=32, n_layers=2, n_heads=2, n_patches=2, causal=False), [6]).eval()
    counts = torch.poisson(torch.full((1, 8, 6), 2.0))
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 3] = True
    other = counts.clone()
    other[0, 3] += 3
    with torch.no_grad():
        a = t(counts, 0, mask)["log_rates"][0, 3]
        b = t(other, 0, mask)["log_rates"][0, 3]
        c = t(other, 0, None)["log_rates"][0, 3]
    assert torch.allclose(a, b)  # the masked bin's prediction ignores its counts...
    assert not torch.allclose(a, c)  # ...which it would use if unmasked
    # and the loss scores masked bins only: changing the target of an unmasked bin is free
    loss_a = t.masked_loss(counts, 0, mask)
    tgt = counts.clone()
    tgt[0, 5] += 4
    mask2 = mask.clone()
    assert torch.isfinite(loss_a)
    with torch.no_grad():
        out = t(counts, 0, mask)
        nll = torch.nn.functional.poisson_nll_loss(out["log_rates"], tgt, log_input=True, full=False, reduction="none")
        manual = nll.mean(-1)[mask2].mean()
        assert torch.allclose(manual, t.masked_loss(counts, 0, mask))


def test_streaming_step_equals_sliding_window_forward():
    s = small_student(window=5).eval()
    x = torch.randn(1, 14, 16)
    with torch.no_grad():
        full = s(x, 1)["latent"]
        kc, vc, n = torch.zeros(s.cache_shape()), torch.zeros(s.cache_shape()), torch.zeros(1)
        steps = []
        for t in range(14):
            z, kc, vc, n = s.step(x[:, t : t + 1], 1, kc, vc, n)
            steps.append(z)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    assert float(n) == 4.0  # saturates at W - 1


def test_cosine_alignment_improves_with_training():
    s = small_student(teacher_dim=8)
    torch.manual_seed(1)
    x = torch.randn(8, 6, 16)
    target = torch.tanh(x[..., :8] * 2) + 0.1  # a target the student can reach from its input
    opt = torch.optim.Adam(s.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = LFPStudent.cosine_loss(s(x, 0), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
@pytest.mark.parametrize("design", ["window", "streaming"])
def test_onnx_parity_for_config_sizes(config, design, tmp_path):
    from offline.export import export_onnx, parity
    from offline.train.config import load_config

    cfg = load_config(config)
    n_ch = int(cfg.data.sim.get("n_channels", 32))
    scfg = cfg.student_cfg if cfg.design == design else cfg.student_cfg.__class__(
        **{**cfg.student_cfg.__dict__, "attn_window": cfg.window_bins if design == "streaming" else 0})
    torch.manual_seed(0)
    student = LFPStudent(scfg, n_ch, 1, n_sessions=2, teacher_dim=cfg.teacher.dim).eval()
    head = BehaviorHead(scfg.dim, 2)
    spec = export_onnx(student, head, 1, cfg.window_bins, tmp_path / "m.onnx")
    par = parity(student, head, 1, spec, tmp_path / "m.onnx", n_trials=3, seed=1)
    assert spec.kind == design
    assert par["max_rel_error"] < 1e-4, par
