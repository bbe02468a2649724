"""Evaluation latents (batched streaming equals the per-bin deployed path), teacher latents
with full context, per-session target standardisation, channel alignment across sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.models.student import LFPStudent, StudentConfig
from offline.models.teacher import SpikeTeacher, TeacherConfig
from offline.models.common import rings_in_place
from offline.train.distill import standardize_targets, streaming_latents, student_latents
from offline.train.teacher import teacher_latents
from offline.train.windows import SessionData, sliding_windows

torch.set_num_threads(1)


def student(window: int, n_layers: int = 2) -> LFPStudent:
    torch.manual_seed(0)
    cfg = StudentConfig(dim=16, n_layers=n_layers, n_heads=2, patch_channels=4, attn_window=window)
    return LFPStudent(cfg, n_features=12, n_branches=1, n_sessions=2).eval()


@pytest.mark.parametrize("n", [5, 37, 400])
def test_batched_streaming_latents_equal_step_by_step(n):
    st = student(window=4, n_layers=3)
    feats = np.random.default_rng(n).standard_normal((n, 12)).astype(np.float32)
    fast = student_latents(st, feats, 1, 4, streams=16)
    # the deployed path: one stream from bin 0, one bin at a time, KV cache of W-1 bins
    kc = torch.zeros(st.cache_shape(1))
    vc, seen, ref = torch.zeros_like(kc), torch.zeros(1), []
    with torch.no_grad():
        for t in range(n):
            z, kc, vc, seen = st.step(torch.from_numpy(feats[t : t + 1])[None], 1, kc, vc, seen)
            ref.append(z[0].numpy())
    np.testing.assert_allclose(fast, np.stack(ref), rtol=1e-4, atol=1e-5)
    # and the masked full-sequence forward (what training sees)
    with torch.no_grad():
        full = st(torch.from_numpy(feats)[None], 1)["latent"][0].numpy()
    np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-5)
    idx = np.array([0, n // 2, n - 1])
    np.testing.assert_allclose(student_latents(st, feats, 1, 4, idx, streams=16), fast[idx])
    # the in-place ring writes (offline evaluation) give exactly the exported graph's functional step
    np.testing.assert_array_equal(fast, streaming_latents(st, feats, 1, 16, in_place=False))


def test_functional_ring_step_leaves_its_input_rings_alone():
    """Outside `rings_in_place` (export, and every caller that shares its state) a step returns
    new rings and the ones passed in keep their values; inside it, it writes into them."""
    st = student(window=4, n_layers=2)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 1, 12)).astype(np.float32))
    state = st.ring_state(2)
    n_l = st.cfg.n_layers
    before = [t.clone() for t in state]
    with torch.no_grad():
        _, ks, vs, *_ = st.step_ring(x, 1, state[:n_l], state[n_l : 2 * n_l], state[-2], state[-1])
        assert all(torch.equal(a, b) for a, b in zip(state, before))
        assert any(not torch.equal(k, b) for k, b in zip(ks, before[:n_l]))  # the newest bin is in the new rings
        with rings_in_place():
            _, ks2, vs2, *_ = st.step_ring(x, 1, state[:n_l], state[n_l : 2 * n_l], state[-2], state[-1])
    assert all(a is b for a, b in zip(ks2, state[:n_l]))  # written where they were
    assert all(torch.equal(a, b) for a, b in zip(ks2 + vs2, ks + vs))


def test_window_latents_are_the_newest_bin_of_each_window():
    st = student(window=0)
    feats = np.random.default_rng(1).standard_normal((50, 12)).astype(np.float32)
    idx = np.array([0, 3, 20, 49])
    got = student_latents(st, feats, 0, 6, idx, chunk=3)
    with torch.no_grad():
        ref = [st(torch.from_numpy(sliding_windows(feats, np.array([i]), 6)), 0)["latent"][0, -1].numpy() for i in idx]
    np.testing.assert_allclose(got, np.stack(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq", [15, 16])
def test_teacher_latents_are_read_with_three_quarters_of_a_window_of_past(seq, causal):
    """Every bin (but the session's first) is read from the last quarter of some window: at
    least seq - seq // 4 bins of past context, causal and bidirectional teacher alike."""
    torch.manual_seed(0)
    t = SpikeTeacher(TeacherConfig(dim=16, n_layers=2, n_heads=2, n_patches=2, causal=causal), [7]).eval()
    n = 103
    spikes = np.random.default_rng(0).poisson(1.0, (n, 7)).astype(np.float32)
    lat = teacher_latents(t, spikes, 0, seq)
    past = seq - seq // 4
    with torch.no_grad():
        for b in range(n):
            ok = False  # some window in which b has >= past bins before it (or the first window) gives lat[b]
            for start in range(max(0, b - seq + 1), min(b, n - seq) + 1):
                if b - start >= past or start == 0:
                    ref = t(torch.from_numpy(spikes[start : start + seq])[None], 0)["latent"][0, b - start].numpy()
                    ok = ok or np.allclose(lat[b], ref, rtol=1e-4, atol=1e-5)
            assert ok, b
    # and a bin read mid-window instead would differ (the test can fail): the bidirectional
    # teacher's latent depends on the bins after it, the causal one's on the past it sees
    b = 60
    with torch.no_grad():
        mid = t(torch.from_numpy(spikes[b - seq // 2 : b - seq // 2 + seq])[None], 0)["latent"][0, seq // 2].numpy()
    assert not np.allclose(lat[b], mid, rtol=1e-4, atol=1e-5)


def test_per_session_standardisation_removes_session_offsets():
    rng = np.random.default_rng(0)
    n, d = 400, 8
    sessions, targets = [], {}
    for i in range(3):
        sig = rng.standard_normal((n, d)) * 0.3
        targets[i] = (sig + 5.0 * rng.standard_normal(d)).astype(np.float32)  # a big per-session offset
        sessions.append(SessionData(f"s{i}", np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32),
                                    np.zeros((n, 1), np.float32), slice(0, 300), slice(320, n)))  # fmt: skip

    def constant_cos(z):  # cosine of the best per-session constant predictor
        out = []
        for v in z.values():
            u = v / np.linalg.norm(v, axis=1, keepdims=True)
            m = u.mean(0) / np.linalg.norm(u.mean(0))
            out.append(float((u @ m).mean()))
        return np.mean(out)

    assert constant_cos(standardize_targets(targets, sessions, "global")) > 0.8  # the failure mode
    z = standardize_targets(targets, sessions, "session")
    assert constant_cos(z) < 0.3
    for i, v in z.items():
        np.testing.assert_allclose(v[:300].mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(v[:300].std(0), 1, atol=1e-3)
    with pytest.raises(ValueError):
        standardize_targets(targets, sessions, "bogus")


def test_prepare_puts_every_session_in_the_reference_channel_order():
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_sessions import tiny_sessions

    from offline.train.config import load_config
    from offline.train.pipeline import channel_orders, prepare

    cfg = load_config({"window_bins": 8, "data": {"held_out_sessions": 1, "guard_bins": 10},
                       "chain": {"line_freq": 0, "lowpass_hz": 40.0}})  # fmt: skip
    sessions = tiny_sessions(n_bins=300)
    _, ref, _ = prepare(sessions, cfg)
    perm = np.array([3, 0, 1, 2, 4, 5, 7, 6])  # the same electrodes recorded in another column order
    moved = [sessions[0], replace(sessions[1], lfp=sessions[1].lfp[:, perm], channel_ids=sessions[1].channel_ids[perm]),
             sessions[2]]  # fmt: skip
    orders = channel_orders(moved)
    assert orders[0] is None and orders[2] is None and np.array_equal(moved[1].channel_ids[orders[1]], np.arange(8))
    _, got, _ = prepare(moved, cfg)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)
    # without channel ids nothing can be matched: columns are taken as they come
    assert channel_orders([replace(s, channel_ids=None) for s in moved]) == [None] * 3


def test_config_names_the_standardisation_mode():
    from offline.train.config import ConfigError, load_config

    assert load_config({}).loss.standardize_targets == "session"
    assert load_config({"loss": {"standardize_targets": "global"}}).loss.standardize_targets == "global"
    for bad in ("bogus", True):
        with pytest.raises(ConfigError, match="standardize_targets"):
            load_config({"loss": {"standardize_targets": bad}})


def test_config_checks_both_students_input_masking():
    from offline.train.config import ConfigError, load_config

    lc = load_config({}).loss
    assert (lc.mask_ratio, lc.distill_mask_ratio) == (0.25, 0.0)  # masked LFP-only, plain distilled (docs/distill.md)
    assert load_config({"loss": {"distill_mask_ratio": 0.25}}).loss.distill_mask_ratio == 0.25
    for key in ("mask_ratio", "distill_mask_ratio"):
        for bad in (-0.1, 1.0):
            with pytest.raises(ConfigError, match=f"loss.{key}"):
                load_config({"loss": {key: bad}})
