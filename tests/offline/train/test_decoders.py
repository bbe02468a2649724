"""Ridge decoders with a cross-validated penalty, and the masked-autoencoding objective of the
unsupervised LFP-only baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sessions import tiny_sessions  # noqa: E402

from offline.train.decode import fit_ridge, fit_ridge_cv, ridge_r2  # noqa: E402
from rtdecode.batch import r2_score  # noqa: E402


def _regression(n, d, noise, seed=0, n_out=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = np.zeros((d, n_out))
    w[:3] = rng.standard_normal((3, n_out))  # 3 informative dims out of d
    return x, x @ w + noise * rng.standard_normal((n, n_out))


def test_cv_picks_a_large_penalty_when_a_small_one_overfits():
    x, y = _regression(2300, 250, noise=3.0)
    x, y, xt, yt = x[:300], y[:300], x[300:], y[300:]  # almost as many dims as rows: a tiny penalty overfits
    grid = [1e-4, 1e-2, 1.0, 100.0]
    r_cv, best = fit_ridge_cv(x, y, grid)
    assert (best >= 1.0).all()
    fixed = r2_score(yt, fit_ridge(x, y, 1e-4).predict(xt)).mean()
    assert r2_score(yt, r_cv.predict(xt)).mean() > fixed + 0.1


def test_cv_picks_a_small_penalty_on_clean_data_and_matches_the_fixed_fit():
    x, y = _regression(2000, 10, noise=0.01)
    grid = [1e-4, 1.0, 100.0]
    r, best = fit_ridge_cv(x, y, grid)
    assert (best == 1e-4).all()
    np.testing.assert_allclose(r.w, fit_ridge(x, y, 1e-4).w, rtol=1e-5, atol=1e-6)


def test_cv_chooses_per_output():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 80))
    clean = x[:, :2] @ np.array([1.0, -1.0])  # output 0: exact, few dims
    noisy = x[:, 0] + 5 * rng.standard_normal(400)  # output 1: mostly noise
    _, best = fit_ridge_cv(x, np.stack([clean, noisy], 1), [1e-4, 1.0, 1000.0])
    assert best[0] < best[1]


def test_ridge_r2_takes_a_float_or_a_grid():
    x, y = _regression(500, 5, noise=0.5)
    a, _ = ridge_r2(x[:400], y[:400], x[400:], y[400:], 1e-3)
    b, _ = ridge_r2(x[:400], y[:400], x[400:], y[400:], [1e-3, 1e-2], guard=3)
    assert a.shape == b.shape == (2,) and np.isfinite(b).all() and b.mean() > 0.5


def _sessions_with_own_maps(n_sess=4, d=30, seed=5):
    """Sessions whose maps are a shared one plus as large a session-specific part (and small
    input offsets): the pooled rows reward a small penalty, a session left out a larger one."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, 2))
    out = []
    for j in range(n_sess):
        n = 200 + 60 * j
        x = rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)
        y = x @ (w + rng.standard_normal((d, 2))) + rng.standard_normal((n, 2))
        k = int(0.8 * n)
        out.append((x[:k], y[:k], x[k:], y[k:]))
    return out


def test_the_pooled_ridge_is_the_ridge_of_the_pooled_rows_and_leaves_each_session_out():
    """`fit_pooled_ridge` from per-session statistics: the same weights as `fit_ridge_alphas`
    on every session's rows concatenated, the penalty a brute-force search on the mean of the
    sessions' leave-one-session-out validation R² picks (a fit that never saw the session, the
    same as a direct fit on the other sessions' rows), and the in-session figures beside it."""
    from offline.train.decode import fit_pooled_ridge, fit_ridge_alphas

    blocks = _sessions_with_own_maps()
    grid = [1e-3, 1.0, 30.0, 1e3]
    pr = fit_pooled_ridge(lambda j: blocks[j], len(blocks), grid)
    xf = np.concatenate([b[0] for b in blocks])
    yf = np.concatenate([b[1] for b in blocks])

    def rest(j):
        o = [blocks[k] for k in range(len(blocks)) if k != j]
        return np.concatenate([np.concatenate(b[0::2]) for b in o]), np.concatenate([np.concatenate(b[1::2]) for b in o])

    # the penalty: each grid value fit on the other sessions' rows, scored on the left-out session's validation block
    left = np.array([[r2_score(b[3], fit_ridge(*rest(j), al).predict(b[2])) for j, b in enumerate(blocks)] for al in grid])
    best = left.mean(1).argmax(0)
    np.testing.assert_array_equal(pr.alphas, np.asarray(grid)[best])
    np.testing.assert_allclose(pr.loso_val_r2, left[best, :, [0, 1]].T, atol=1e-5)
    # the in-session figure: the pooled fit rows at the chosen penalty, on each session's validation block
    inside = np.array([[r2_score(b[3], fit_ridge(xf, yf, al).predict(b[2])) for b in blocks] for al in grid])
    np.testing.assert_allclose(pr.val_r2, inside[best, :, [0, 1]].T, atol=1e-5)
    # the in-session rule would pick another penalty for these sessions: the choice is the left-out one's
    assert not np.array_equal(inside.mean(1).argmax(0), best)
    every = fit_ridge_alphas(np.concatenate([np.concatenate(b[0::2]) for b in blocks]),
                             np.concatenate([np.concatenate(b[1::2]) for b in blocks]), pr.alphas)  # fmt: skip
    np.testing.assert_allclose(pr.ridge.w, every.w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pr.ridge.b, every.b, rtol=1e-4, atol=1e-5)
    # the session's own rows help it: its left-out figure is lower than the pooled fit's
    assert (pr.loso_val_r2.mean() < pr.val_r2.mean())


def test_masked_autoencoding_scores_only_hidden_tokens():
    """With mask_ratio > 0 the reconstruction loss is taken over hidden patches only: a model
    that copies its (masked) input through scores exactly the hidden features' mean square."""
    from offline.models.student import LFPStudent, StudentConfig
    from offline.train.distill import StudentObjective
    from offline.train.pipeline import prepare
    from offline.train.config import load_config

    torch.manual_seed(0)
    sessions = tiny_sessions(n_bins=400)
    cfg = load_config({"window_bins": 8, "data": {"held_out_sessions": 1, "guard_bins": 10},
                       "chain": {"line_freq": 0, "lowpass_hz": 40.0}})  # fmt: skip
    _, data, n_train = prepare(sessions, cfg)
    f = data[0].features.shape[1]
    st = LFPStudent(StudentConfig(dim=8, n_layers=1, n_heads=2, patch_channels=4), f, 1, n_train)
    seen = {}

    def spy(x, session):  # record what the student was given
        seen["x"] = x.clone()
        out = LFPStudent.forward(st, x, session)
        out["recon"] = x  # copy the input through
        return out

    st.forward = spy
    which = list(range(n_train))
    loss = float(StudentObjective(st, data, which, 8, 4, 0, "mae", recon=1.0, mask_ratio=0.5)(0))
    x_in = seen["x"]
    # the same step without masking draws the same windows: the true features
    assert float(StudentObjective(st, data, which, 8, 4, 0, "mae", recon=1.0)(0)) == 0.0  # a copy is perfect unmasked
    x = seen["x"]
    hidden = (x_in == 0) & (x != 0)
    assert 0.3 < hidden.float().mean() < 0.7  # about half the patch tokens are hidden
    visible = ~(x_in == 0)
    assert torch.equal(x_in[visible], x[visible])  # visible features reach the model untouched
    # copying the masked input scores exactly the hidden features' mean square, nothing else
    assert loss == pytest.approx(float((x[hidden] ** 2).mean()), rel=1e-5)
