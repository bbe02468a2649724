"""The similarity metrics on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from offline.analysis.metrics import (cosine_per_bin, explained_fraction, linear_cka, mapped_cosine, pool_bins,
                                      ridge_fraction)  # fmt: skip


def _rng(k=0):
    return np.random.default_rng(k)


def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _cka_gram_debiased(x, y):
    """Reference: unbiased HSIC through the n x n Gram matrices (Song et al. 2012)."""
    def hsic(k, l):
        n = len(k)
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))  # fmt: skip

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_set_with_itself_is_one_and_invariant_to_rotation_scale_and_shift(debiased):
    rng = _rng()
    x = rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12))
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-10)
    y = np.tanh(x[:, :8]) + 0.5 * rng.standard_normal((500, 8))  # a related set of another width
    base = linear_cka(x, y, debiased)
    assert 0.2 < base < 0.99
    q = _orthogonal(rng, 12)
    assert linear_cka(x @ q, y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x + 5.0, y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, -0.01 * y @ _orthogonal(rng, 8), debiased) == pytest.approx(base, abs=1e-10)
    # but not invariant to an anisotropic rescaling of the dims
    assert abs(linear_cka(x * np.geomspace(0.01, 10, 12), y, debiased) - base) > 0.01


def test_debiased_cka_matches_the_gram_matrix_formula():
    rng = _rng(1)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 9))
    y[:, :3] += x[:, :3]
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert linear_cka(x, y, debiased=True) == pytest.approx(_cka_gram_debiased(xc, yc), rel=1e-9)


def test_cka_of_independent_data_is_near_zero_and_the_debiased_one_stays_so_with_few_samples():
    rng = _rng(2)
    big = [linear_cka(rng.standard_normal((5000, 10)), rng.standard_normal((5000, 10))) for _ in range(3)]
    assert max(big) < 0.02
    small = [linear_cka(rng.standard_normal((40, 20)), rng.standard_normal((40, 20))) for _ in range(30)]
    small_d = [linear_cka(rng.standard_normal((40, 20)), rng.standard_normal((40, 20)), debiased=True) for _ in range(30)]
    assert np.mean(small) > 0.3  # the standard estimator's small-sample bias
    assert abs(np.mean(small_d)) < 0.03


def test_cka_refuses_mismatched_bins():
    with pytest.raises(ValueError, match="same bins"):
        linear_cka(np.zeros((10, 3)), np.zeros((11, 3)))


def test_cosine_per_bin_properties():
    rng = _rng(3)
    a = rng.standard_normal((200, 16))
    np.testing.assert_allclose(cosine_per_bin(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(cosine_per_bin(a, -a), -1.0, atol=1e-12)
    np.testing.assert_allclose(cosine_per_bin(a, a * rng.uniform(0.1, 10, (200, 1))), 1.0, atol=1e-12)  # per-bin scale
    e = np.eye(4)
    np.testing.assert_allclose(cosine_per_bin(e, np.roll(e, 1, axis=1)), 0.0, atol=1e-12)
    q = _orthogonal(rng, 16)
    b = rng.standard_normal((200, 16))
    np.testing.assert_allclose(cosine_per_bin(a @ q, b @ q), cosine_per_bin(a, b), atol=1e-12)  # same rotation of both
    far = cosine_per_bin(rng.standard_normal((4000, 64)), rng.standard_normal((4000, 64)))
    assert abs(far.mean()) < 0.01 and far.std() < 0.2
    with pytest.raises(ValueError, match="one space"):
        cosine_per_bin(a, a[:, :8])


def test_mapped_cosine_brings_another_width_into_the_target_space():
    rng = _rng(4)
    x = rng.standard_normal((3000, 8))
    y = x @ rng.standard_normal((8, 20)) + 0.1 * rng.standard_normal((3000, 20))
    c = mapped_cosine(x[:2000], y[:2000], x[2000:], y[2000:], 1e-3)
    assert c.shape == (1000,) and c.mean() > 0.95
    u = rng.standard_normal((3000, 8))
    assert abs(mapped_cosine(u[:2000], y[:2000], u[2000:], y[2000:], 1e-3).mean()) < 0.05
    assert ridge_fraction(x[:2000], y[:2000], x[2000:], y[2000:], 1e-3) > 0.95
    assert ridge_fraction(u[:2000], y[:2000], u[2000:], y[2000:], 1e-3) < 0.02
    assert explained_fraction(y, y) == 1.0


def test_pool_bins_averages_non_overlapping_runs():
    x = np.arange(10, dtype=float)[:, None] * np.array([[1.0, -1.0]])
    p = pool_bins(x, 3)
    np.testing.assert_allclose(p, [[1, -1], [4, -4], [7, -7]])
    assert pool_bins(x, 1).shape == (10, 2)
    assert pool_bins(np.zeros((10, 3, 4)), 5).shape == (2, 3, 4)
    with pytest.raises(ValueError):
        pool_bins(x, 0)
