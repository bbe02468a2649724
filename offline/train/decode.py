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


@dataclass
class PooledRidge:
    """A ridge fit on every training session at once (`fit_pooled_ridge`)."""

    ridge: Ridge  # refit on every session's fit + validation rows with `alphas`
    alphas: np.ndarray  # (n_out,) relative penalties, chosen on the sessions' validation blocks
    val_r2: np.ndarray  # (n_sessions, n_out): each session's validation block, from the fit-block ridge
    loso_val_r2: np.ndarray  # (n_sessions, n_out): each session's validation block, from a ridge fit on
    #                          the OTHER sessions' fit + validation rows (leave one session out)


class _Stats:
    """Sufficient statistics of a ridge fit (float64): row count, sums, cross-products."""

    def __init__(self, d: int, n_out: int):
        self.n, self.sx, self.sy = 0, np.zeros(d), np.zeros(n_out)
        self.xx, self.xy = np.zeros((d, d)), np.zeros((d, n_out))

    def add(self, x: np.ndarray, y: np.ndarray) -> "_Stats":
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        return self

    def __iadd__(self, o: "_Stats") -> "_Stats":
        self.n += o.n
        self.sx += o.sx
        self.sy += o.sy
        self.xx += o.xx
        self.xy += o.xy
        return self

    def __sub__(self, o: "_Stats") -> "_Stats":
        out = _Stats(len(self.sx), len(self.sy))
        out.n, out.sx, out.sy, out.xx, out.xy = self.n - o.n, self.sx - o.sx, self.sy - o.sy, self.xx - o.xx, self.xy - o.xy
        return out

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(gram, cross, x mean, y mean) of the rows about their means."""
        xm, ym = self.sx / self.n, self.sy / self.n
        return self.xx - self.n * np.outer(xm, xm), self.xy - self.n * np.outer(xm, ym), xm, ym

    def solve(self, alphas: np.ndarray) -> Ridge:
        """`fit_ridge_alphas` of the rows these statistics hold (the same penalty scaling)."""
        gram, cross, xm, ym = self.centred()
        d = gram.shape[0]
        lam0 = np.trace(gram) / d
        w = np.zeros((d, len(ym)))
        for al in np.unique(alphas):
            cols = alphas == al
            w[:, cols] = np.linalg.solve(gram + al * lam0 * np.eye(d), cross[:, cols])
        return Ridge(w.astype(np.float32), (ym - xm @ w).astype(np.float32))


def fit_pooled_ridge(blocks, n_sessions: int, alphas) -> PooledRidge:
    """One ridge for every session, shipped to days it never saw, so its penalty is chosen per
    output for that: by the mean over the sessions of their leave-one-session-out validation R²
    (session j's validation block scored by the ridge fit on every other session's fit +
    validation rows; never a test block). It is then refit on every session's fit + validation
    rows. `blocks(j)` returns session j's (x_fit, y_fit, x_val, y_val), built once each (one
    session's rows at a time are in memory, with every session's validation rows).
    `loso_val_r2` holds those left-out figures at the chosen penalty: what the pooled ridge does
    on a session it never saw, with one choice among the grid made on them. `val_r2` is the
    in-session figure beside it: the ridge fit on the pooled fit blocks, at the same penalty, on
    each session's validation block. With one session the penalty is chosen on that (there is
    no session to leave out). The weights equal `fit_ridge_alphas` on the concatenated rows.
    (Session 16: chosen on in-session validation, the penalty on the reference config's
    velocity was 0.001, and the ridge lost 5 R² on a session left out; see docs/distill.md.)"""
    grid = np.asarray(alphas, np.float64).ravel()
    fit = both = None
    per: list[_Stats] = []
    val: list[tuple[np.ndarray, np.ndarray]] = []
    for j in range(n_sessions):
        xf, yf, xv, yv = blocks(j)
        if fit is None:
            fit, both = _Stats(xf.shape[1], yf.shape[1]), _Stats(xf.shape[1], yf.shape[1])
        f = _Stats(xf.shape[1], yf.shape[1]).add(xf, yf)
        fit += f
        s = f.add(xv, yv)  # this session's fit + validation rows
        both += s
        per.append(s)
        val.append((np.asarray(xv, np.float32), np.asarray(yv, np.float64)))

    def scores(st: _Stats, xv, yv) -> np.ndarray:
        """(A, O) validation R² of the ridge on `st`'s rows at every penalty of the grid."""
        gram, cross, xm, ym = st.centred()
        evals, evecs = np.linalg.eigh(gram)
        evals = np.clip(evals, 0.0, None)
        proj = evecs.T @ cross
        z = (xv.astype(np.float64) - xm) @ evecs
        base = ((yv - yv.mean(0)) ** 2).sum(0) + 1e-12
        out = np.zeros((len(grid), len(ym)))
        for a, al in enumerate(grid):
            pred = z @ (proj / (evals + al * evals.sum() / len(evals) + 1e-12)[:, None]) + ym
            out[a] = 1.0 - ((yv - pred) ** 2).sum(0) / base
        return out

    inside = np.stack([scores(fit, xv, yv) for xv, yv in val], 1)  # (A, S, O)
    n_out = inside.shape[2]
    loso = np.full((n_sessions, n_out), np.nan)
    if n_sessions > 1:
        left = np.stack([scores(both - per[j], xv, yv) for j, (xv, yv) in enumerate(val)], 1)
        best = left.mean(1).argmax(0)  # (n_out,)
        loso = left[best, :, np.arange(n_out)].T  # (n_sessions, n_out)
    else:
        best = inside.mean(1).argmax(0)
    chosen = grid[best]
    val_r2 = inside[best, :, np.arange(n_out)].T
    return PooledRidge(both.solve(chosen), chosen, val_r2, loso)
