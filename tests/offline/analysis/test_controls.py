"""Shuffled controls: they break the pairing and nothing else, and land near chance."""

from __future__ import annotations

import numpy as np
import pytest

from offline.analysis.compare import decoder_subspace, subspace_capture, truth_recovery, with_controls
from offline.analysis.controls import (block_permute, circular_shift, control_distribution, shuffled_session_pairs,
                                       summarize, truncate_pair)  # fmt: skip
from offline.analysis.metrics import linear_cka


def _ar(rng, n, d, tau):
    """Slowly varying latents, like per-bin neural states (AR(1), time constant tau bins)."""
    a = np.exp(-1.0 / tau)
    x = np.zeros((n, d))
    e = rng.standard_normal((n, d)) * np.sqrt(1 - a * a)
    for i in range(1, n):
        x[i] = a * x[i - 1] + e[i]
    return x


def test_circular_shift_and_block_permutation_reorder_rows_without_changing_them():
    rng = np.random.default_rng(0)
    x = np.arange(1000, dtype=float)[:, None] * np.ones((1, 3))
    s = circular_shift(x, rng, min_shift=100)
    k = int(s[0, 0])
    assert 100 <= (1000 - k) % 1000 <= 900  # rolled by at least min_shift either way
    np.testing.assert_array_equal(np.sort(s[:, 0]), x[:, 0])
    np.testing.assert_array_equal(np.diff(s[:, 0]) % 1000, np.full(999, 1.0))  # one roll, order kept
    b = block_permute(x, rng, block=50)
    np.testing.assert_array_equal(np.sort(b[:, 0]), x[:, 0])
    assert not np.array_equal(b, x)
    starts = b[::50, 0]
    assert np.all(starts % 50 == 0)  # whole blocks move
    np.testing.assert_array_equal(b[:, 0].reshape(20, 50) - starts[:, None], np.tile(np.arange(50.0), (20, 1)))
    with pytest.raises(ValueError, match="circular"):
        control_distribution(lambda v: 0.0, x, "shuffle", rng)


def test_controls_are_near_chance_on_related_data_and_far_below_the_real_value():
    rng = np.random.default_rng(1)
    n, tr = 6000, 4000
    z = _ar(rng, n, 4, tau=5.0)
    s = z @ rng.standard_normal((4, 16)) + 0.5 * rng.standard_normal((n, 16))  # "student"
    t = z @ rng.standard_normal((4, 24)) + 0.5 * rng.standard_normal((n, 24))  # "teacher"
    r = with_controls(s[:tr], t[:tr], s[tr:], t[tr:], 1e-3, rng, n=10, min_shift=100, block=50)
    assert r["cka_debiased"] > 0.5 and r["cos_mapped"] > 0.5
    for kind in ("circular", "block"):
        c = r["controls"][kind]
        assert abs(c["cka_debiased"]["mean"]) < 0.05, (kind, c)
        assert abs(c["cos_mapped"]["mean"]) < 0.05, (kind, c)
        assert c["cka_debiased"]["hi"] < r["cka_debiased"]
    # shuffled session: another recording of the same kind of process, truncated to equal length
    z2 = _ar(rng, n - 500, 4, tau=5.0)
    s2 = z2 @ rng.standard_normal((4, 16))
    a, b = truncate_pair(s2, t[tr:])
    assert len(a) == len(b) == 2000
    assert abs(linear_cka(a, b, debiased=True)) < 0.05
    assert shuffled_session_pairs([0, 1, 2]) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_subspace_capture_and_truth_recovery_separate_informative_from_unrelated_latents():
    rng = np.random.default_rng(2)
    n, tr = 5000, 3500
    z = _ar(rng, n, 3, tau=4.0)
    beh = z[:, :2]
    t = np.concatenate([z, rng.standard_normal((n, 13))], 1) @ np.linalg.qr(rng.standard_normal((16, 16)))[0]
    good = z @ rng.standard_normal((3, 8)) + 0.2 * rng.standard_normal((n, 8))
    bad = rng.standard_normal((n, 8))
    basis = decoder_subspace(t[:tr], beh[:tr], 1e-3)
    assert basis.shape == (16, 2)
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-10)
    g = subspace_capture(good[:tr], t[:tr], good[tr:], t[tr:], basis, 1e-3, rng, 5, 100)
    b = subspace_capture(bad[:tr], t[:tr], bad[tr:], t[tr:], basis, 1e-3, rng, 5, 100)
    assert g["fraction"] > 0.8 and abs(b["fraction"]) < 0.05
    assert abs(g["control_circular"]["mean"]) < 0.05
    tg = truth_recovery(good[:tr], z[:tr], good[tr:], z[tr:], 1e-3, rng, 5, 100)
    tb = truth_recovery(bad[:tr], z[:tr], bad[tr:], z[tr:], 1e-3, rng, 5, 100)
    assert tg["r2"] > 0.8 and tb["r2"] < 0.02 and tg["cka_debiased"] > 0.5 > tb["cka_debiased"] + 0.45


def test_summarize_gives_mean_and_central_95_percent():
    s = summarize(np.arange(1001.0))
    assert s["mean"] == 500.0 and s["lo"] == pytest.approx(25.0) and s["hi"] == pytest.approx(975.0) and s["n"] == 1001
    assert summarize([np.nan])["n"] == 0
