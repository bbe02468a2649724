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


def ridge_r2(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
             alpha: float) -> tuple[np.ndarray, Ridge]:  # fmt: skip
    """R² per output on the test latents of a ridge fit on the training latents."""
    r = fit_ridge(z_train, y_train, alpha)
    return r2_score(y_test, r.predict(z_test)), r


def lagged_features(features: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray:
    """Raw-feature baseline input: the last `window` bins' features, flattened (len(idx), W*F)."""
    from .windows import sliding_windows

    return sliding_windows(features, idx, window).reshape(len(idx), -1)
