"""Alignment of one model's latents to a reference (the teacher, or the true latents) on one
session: the numbers, their temporal scales, per-patch values and the shuffled controls.

All inputs are already z-scored per dim (with the session's training-bin statistics); `tr`
arrays are training bins (to fit linear maps), `te` arrays contiguous held-out bins (where
everything is measured).
"""

from __future__ import annotations

import numpy as np

from offline.train.decode import fit_ridge

from .controls import block_permute, circular_shift, summarize
from .metrics import cosine_per_bin, linear_cka, mapped_cosine, pool_bins, ridge_fraction


def pair_metrics(s_tr, t_tr, s_te, t_te, alpha: float) -> dict[str, float]:
    """CKA (standard and debiased) of held-out bins, and the mean per-bin cosine of the student
    mapped into the reference's space by a ridge map fit on the training bins."""
    return {"cka": linear_cka(s_te, t_te), "cka_debiased": linear_cka(s_te, t_te, debiased=True),
            "cos_mapped": float(mapped_cosine(s_tr, t_tr, s_te, t_te, alpha).mean())}  # fmt: skip


def with_controls(s_tr, t_tr, s_te, t_te, alpha: float, rng: np.random.Generator, n: int, min_shift: int,
                  block: int) -> dict:  # fmt: skip
    """pair_metrics, plus the same metrics with the student's bins circularly shifted or
    block-permuted (separately in the training and the held-out blocks)."""
    out = pair_metrics(s_tr, t_tr, s_te, t_te, alpha)
    out["controls"] = {}
    for kind in ("circular", "block"):
        vals = []
        for _ in range(n):
            sh_tr, sh_te = (_shuffle(x, kind, rng, min_shift, block) for x in (s_tr, s_te))
            vals.append(pair_metrics(sh_tr, t_tr, sh_te, t_te, alpha))
        out["controls"][kind] = {k: summarize([v[k] for v in vals]) for k in vals[0]}
    return out


def scale_curve(s_tr, t_tr, s_te, t_te, alpha: float, ks: list[int], rng: np.random.Generator, n: int,
                min_shift_s: float, bin_s: float) -> dict:  # fmt: skip
    """Debiased CKA and mapped cosine after pooling k bins (k * bin width seconds), with a
    circular-shift band at every scale (shift >= min_shift_s). The map is fit at bin scale."""
    pred = fit_ridge(s_tr, t_tr, alpha).predict(s_te)
    out = {"k": [], "cka_debiased": [], "cos_mapped": [], "control_cka_debiased": [], "control_cos_mapped": []}
    for k in ks:
        ps, pt, pp = pool_bins(s_te, k), pool_bins(t_te, k), pool_bins(pred, k)
        if len(ps) < 8:
            continue
        shift = max(1, int(round(min_shift_s / (k * bin_s))))
        out["k"].append(k)
        out["cka_debiased"].append(linear_cka(ps, pt, debiased=True))
        out["cos_mapped"].append(float(cosine_per_bin(pp, pt).mean()))
        ctl_c, ctl_m = [], []
        for _ in range(n):
            r = int(rng.integers(0, 1 << 31))
            ctl_c.append(linear_cka(circular_shift(ps, np.random.default_rng(r), shift), pt, debiased=True))
            ctl_m.append(float(cosine_per_bin(circular_shift(pp, np.random.default_rng(r), shift), pt).mean()))
        out["control_cka_debiased"].append(summarize(ctl_c))
        out["control_cos_mapped"].append(summarize(ctl_m))
    return out


def _shuffle(x, kind: str, rng, min_shift: int, block: int):
    return circular_shift(x, rng, min_shift) if kind == "circular" else block_permute(x, rng, block)


def patch_metrics(tok_tr, t_tr, tok_te, t_te, alpha: float) -> dict[str, list[float]]:
    """Per spatial patch p: the student's token outputs of patch p (n, D) against the
    reference's per-bin latents."""
    res = [pair_metrics(tok_tr[:, p], t_tr, tok_te[:, p], t_te, alpha) for p in range(tok_te.shape[1])]
    return {k: [r[k] for r in res] for k in ("cka", "cka_debiased", "cos_mapped")}


def decoder_subspace(t_tr: np.ndarray, beh_tr: np.ndarray, alpha: float) -> np.ndarray:
    """Orthonormal basis (D_t, k) of the teacher's behaviour-decoding directions: the columns of
    a ridge decoder from teacher latents to z-scored behaviour (k = outputs, fewer if degenerate)."""
    b = (beh_tr - beh_tr.mean(0)) / (beh_tr.std(0) + 1e-8)
    w = fit_ridge(t_tr, b, alpha).w.astype(np.float64)
    q, r = np.linalg.qr(w)
    keep = np.abs(np.diag(r)) > 1e-8 * np.abs(np.diag(r)).max()
    return q[:, keep]


def subspace_capture(s_tr, t_tr, s_te, t_te, basis: np.ndarray, alpha: float, rng: np.random.Generator, n: int,
                     min_shift: int) -> dict:  # fmt: skip
    """Fraction of the teacher's latents in its decoder subspace (t @ basis) that a linear map
    from the student explains on held-out bins; control: the student's bins shifted."""
    p_tr, p_te = t_tr @ basis, t_te @ basis
    val = ridge_fraction(s_tr, p_tr, s_te, p_te, alpha)
    ctl = [ridge_fraction(circular_shift(s_tr, rng, min_shift), p_tr, circular_shift(s_te, rng, min_shift), p_te, alpha)
           for _ in range(n)]  # fmt: skip
    return {"fraction": val, "control_circular": summarize(ctl), "k": int(basis.shape[1])}


def truth_recovery(s_tr, z_tr, s_te, z_te, alpha: float, rng: np.random.Generator, n: int, min_shift: int) -> dict:
    """How well the model's latents carry the simulator's true latents: CKA and held-out ridge R²."""
    out = {"cka": linear_cka(s_te, z_te), "cka_debiased": linear_cka(s_te, z_te, debiased=True),
           "r2": ridge_fraction(s_tr, z_tr, s_te, z_te, alpha)}  # fmt: skip
    ctl = [(linear_cka(x := circular_shift(s_te, rng, min_shift), z_te, debiased=True),
            ridge_fraction(circular_shift(s_tr, rng, min_shift), z_tr, x, z_te, alpha)) for _ in range(n)]  # fmt: skip
    out["control_circular"] = {"cka_debiased": summarize([c[0] for c in ctl]), "r2": summarize([c[1] for c in ctl])}
    return out
