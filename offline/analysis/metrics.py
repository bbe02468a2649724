"""Similarity between two sets of per-bin latents, X (n, d_x) and Y (n, d_y), row i = bin i.

    linear_cka(X, Y)                 # 1 = same representation up to rotation and scale
    linear_cka(X, Y, debiased=True)  # unbiased HSIC: ~0 for unrelated data even when n ~ d
    cosine_per_bin(A, B)             # (n,) cosine of row i of A with row i of B (same space)
    mapped_cosine(Xtr, Ytr, Xte, Yte, alpha)  # X mapped into Y's space by ridge, then cosine
    pool_bins(X, k)                  # non-overlapping means of k bins (temporal scale)

Everything runs in float64 and in feature space (O(n d²)), so n can be tens of thousands.
"""

from __future__ import annotations

import numpy as np

from offline.train.decode import fit_ridge


def _centered(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"latents must be 2-D (bins, dims), got shape {x.shape}")
    return x - x.mean(0)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise ValueError(f"the two latent sets must cover the same bins: {len(x)} != {len(y)} rows")


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019).

    Standard: ||Yc' Xc||_F² / (||Xc' Xc||_F ||Yc' Yc||_F), in [0, 1]; biased upwards when the
    number of bins is not much larger than the dims. `debiased=True` uses the unbiased HSIC
    estimator (Song et al. 2012), computed without the n x n Gram matrices; it can be slightly
    negative for unrelated data and needs n >= 4."""
    _check_pair(x, y)
    xc, yc = _centered(x), _centered(y)
    if not debiased:
        num = np.linalg.norm(yc.T @ xc) ** 2
        den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
        return float(num / den) if den > 0 else float("nan")
    hxy, hxx, hyy = _hsic_u(xc, yc), _hsic_u(xc, xc), _hsic_u(yc, yc)
    den = np.sqrt(hxx * hyy) if hxx > 0 and hyy > 0 else 0.0
    return float(hxy / den) if den > 0 else float("nan")


def _hsic_u(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC with linear kernels K = XX', L = YY' (diagonals removed), feature space."""
    n = len(x)
    if n < 4:
        raise ValueError(f"the debiased CKA needs at least 4 bins, got {n}")
    kd, ld = (x * x).sum(1), (y * y).sum(1)  # diag K, diag L
    tr_kl = np.linalg.norm(x.T @ y) ** 2 - (kd * ld).sum()  # sum_{i != j} K_ij L_ij
    k1 = x @ x.sum(0) - kd  # (K~ 1)_i
    l1 = y @ y.sum(0) - ld
    s_k, s_l = k1.sum(), l1.sum()
    return float((tr_kl + s_k * s_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3)))


def cosine_per_bin(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(n,) cosine similarity of row i of `a` with row i of `b`; both in the same space."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine needs both latent sets in one space, got shapes {a.shape} and {b.shape}: "
                         "map one into the other's space first (mapped_cosine)")  # fmt: skip
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), eps)


def mapped_cosine(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, alpha: float) -> np.ndarray:
    """Per-bin cosine between Y and a ridge map of X into Y's space, fit on (x_tr, y_tr) and
    evaluated on held-out bins: how a student of another width points the teacher's way."""
    _check_pair(x_tr, y_tr)
    _check_pair(x_te, y_te)
    return cosine_per_bin(fit_ridge(x_tr, y_tr, alpha).predict(x_te), y_te)


def explained_fraction(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Variance-weighted R² over all columns: 1 - total SSE / total SS (one number per set)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    sst = ((y_true - y_true.mean(0)) ** 2).sum()
    return float(1.0 - ((y_true - y_pred) ** 2).sum() / max(sst, 1e-12))


def ridge_fraction(x_tr, y_tr, x_te, y_te, alpha: float) -> float:
    """Held-out explained fraction of Y by a ridge map from X."""
    _check_pair(x_tr, y_tr)
    _check_pair(x_te, y_te)
    return explained_fraction(y_te, fit_ridge(x_tr, y_tr, alpha).predict(x_te))


def pool_bins(x: np.ndarray, k: int) -> np.ndarray:
    """Means over non-overlapping runs of `k` bins (a trailing partial run is dropped)."""
    x = np.asarray(x)
    if k < 1:
        raise ValueError(f"pool size must be >= 1 bin, got {k}")
    m = len(x) // k
    return x[: m * k].reshape(m, k, *x.shape[1:]).mean(1)


def zscore_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    return x.mean(0), x.std(0) + 1e-8
