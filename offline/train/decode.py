"""Stage 3: behaviour decoders. Ridge on frozen per-bin latents (unsupervised setting) and
the helpers the supervised setting shares (a head initialised from the ridge fit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtdecode.batch import r2_score


@dataclass
class Ridge:
    w: np.ndarray  # (D, n_out)
    b: np.ndarray  # (n_out,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.w + self.b).astype(np.float32)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Ridge:
    """Closed-form ridge; `alpha` is relative to the mean latent variance (scale-free)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    gram = xc.T @ xc
    lam = alpha * np.trace(gram) / gram.shape[0]
    w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)
    return Ridge(w.astype(np.float32), (ym - xm @ w).astype(np.float32))


def fit_ridge_cv(x: np.ndarray, y: np.ndarray, alphas, folds: int = 5, guard: int = 0) -> tuple[Ridge, np.ndarray]:
    """Ridge with its penalty chosen per output by blocked cross-validation on (x, y).

    The rows are cut into `folds` contiguous blocks (time order: neighbouring bins are
    correlated, so shuffled folds would pick too small a penalty); each block is predicted
    from the others, leaving out the `guard` rows next to it on either side (rows built from
    overlapping windows). Each output gets the alpha (relative, as in `fit_ridge`) with the
    best mean validation R², and the final fit uses all rows. Returns (ridge, chosen alphas).
    One eigendecomposition per fold serves the whole grid.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    alphas = np.asarray(alphas, np.float64).ravel()
    n, d = x.shape
    score = np.zeros((len(alphas), y.shape[1]))
    edges = np.linspace(0, n, folds + 1).astype(int)
    for k in range(folds):
        a, b = edges[k], edges[k + 1]
        tr = np.r_[0 : max(0, a - guard), min(n, b + guard) : n]
        if len(tr) <= 1 or b <= a:
            continue
        xm, ym = x[tr].mean(0), y[tr].mean(0)
        xc = x[tr] - xm
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        proj = evecs.T @ (xc.T @ (y[tr] - ym))  # (d, n_out)
        xv = (x[a:b] - xm) @ evecs  # validation rows in the eigenbasis
        yv = y[a:b] - ym
        base = ((y[a:b] - y[a:b].mean(0)) ** 2).sum(0) + 1e-12
        for j, al in enumerate(alphas):
            lam = al * evals.sum() / d
            pred = xv @ (proj / (evals + lam)[:, None])
            score[j] += 1.0 - ((yv - pred) ** 2).sum(0) / base
    best = alphas[score.argmax(0)]  # (n_out,)
    w = np.zeros((d, y.shape[1]), np.float32)
    b = np.zeros(y.shape[1], np.float32)
    for al in np.unique(best):
        cols = best == al
        r = fit_ridge(x, y[:, cols], float(al))
        w[:, cols], b[cols] = r.w, r.b
    return Ridge(w, b), best


def fit_ridge_val(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  alphas) -> tuple[Ridge, np.ndarray, np.ndarray]:  # fmt: skip
    """Ridge with its penalty chosen per output on a validation block (never the test block).

    Every alpha of the grid (relative, as in `fit_ridge`) is fit on the fit rows and scored by
    R² on the validation rows; each output takes the best. Returns (the ridge fit on the fit
    rows with the chosen alphas, the chosen alphas, its validation R² per output). One
    eigendecomposition serves the whole grid."""
    x = np.asarray(x_fit, np.float64)
    y = np.asarray(y_fit, np.float64)
    alphas = np.asarray(alphas, np.float64).ravel()
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    evals = np.clip(evals, 0.0, None)
    proj = evecs.T @ (xc.T @ (y - ym))
    xv = (np.asarray(x_val, np.float64) - xm) @ evecs
    yv = np.asarray(y_val, np.float64)
    base = ((yv - yv.mean(0)) ** 2).sum(0) + 1e-12
    d = x.shape[1]
    score = np.empty((len(alphas), y.shape[1]))
    coefs = []
    for j, al in enumerate(alphas):
        lam = al * evals.sum() / d + 1e-12
        c = proj / (evals + lam)[:, None]  # (d, n_out) in the eigenbasis
        coefs.append(c)
        score[j] = 1.0 - ((yv - ym - xv @ c) ** 2).sum(0) / base
    best = score.argmax(0)
    c = np.stack([coefs[best[k]][:, k] for k in range(y.shape[1])], 1)
    w = evecs @ c
    r = Ridge(w.astype(np.float32), (ym - xm @ w).astype(np.float32))
    return r, alphas[best], score[best, np.arange(y.shape[1])]


def fit_ridge_alphas(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> Ridge:
    """`fit_ridge` with one (relative) alpha per output."""
    alphas = np.broadcast_to(np.asarray(alphas, np.float64), (y.shape[1],))
    w = np.zeros((x.shape[1], y.shape[1]), np.float32)
    b = np.zeros(y.shape[1], np.float32)
    for al in np.unique(alphas):
        cols = alphas == al
        r = fit_ridge(x, y[:, cols], float(al))
        w[:, cols], b[cols] = r.w, r.b
    return Ridge(w, b)


def ridge_r2(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
             alpha, guard: int = 0) -> tuple[np.ndarray, Ridge]:  # fmt: skip
    """R² per output on the test latents of a ridge fit on the training latents. `alpha` is a
    float (fixed penalty) or a sequence (a grid, chosen per output by `fit_ridge_cv`)."""
    r = fit_decoder(z_train, y_train, alpha, guard)
    return r2_score(y_test, r.predict(z_test)), r


def fit_decoder(x: np.ndarray, y: np.ndarray, alpha, guard: int = 0) -> Ridge:
    """`fit_ridge` for a float alpha, `fit_ridge_cv` for a grid."""
    if np.ndim(alpha):
        return fit_ridge_cv(x, y, alpha, guard=guard)[0]
    return fit_ridge(x, y, float(alpha))


def lagged_features(features: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray:
    """Raw-feature baseline input: the last `window` bins' features, flattened (len(idx), W*F)."""
    from .windows import sliding_windows

    return sliding_windows(features, idx, window).reshape(len(idx), -1)
