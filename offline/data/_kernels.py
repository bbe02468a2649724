"""numba kernel of the simulator's LFP: one pass per block over (samples, channels).

The scipy route (sosfilt on channel-major copies, then a transpose into the output) took
about 3x longer; this fused loop filters, mixes, applies gains and the channel order, and
writes straight into the session's (n_samples, n_channels) array.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _sos_step(sos, zi, v):
    """One sample of every channel through the biquad cascade `sos` (S, 6), in place in v (C,);
    zi (S, 2, C) float64 is the state (transposed direct form II, as scipy's sosfilt)."""
    for s in range(sos.shape[0]):
        b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
        for c in range(v.shape[0]):
            x = v[c]
            y = b0 * x + zi[s, 0, c]
            zi[s, 0, c] = b1 * x - a1 * y + zi[s, 1, c]
            zi[s, 1, c] = b2 * x - a2 * y
            v[c] = y


@njit(cache=True, nogil=True)
def lfp_block(w, shared, bg_in, bg_sos, bg_zi, hg_sos, hg_zi, env, k, hg_scale, noise, gain, low, perm, out):
    """w (ns, C) white noise; shared (ns, C) mixed shared background sources; the background
    is IIR(bg_in * w + shared) (sections bg_sos, state bg_zi (S, 2, C) float64), the
    high-gamma carrier IIR(w) (hg_sos, hg_zi) times env[i // k] * hg_scale; plus noise * w,
    times gain, plus low (ns, C) already gained. out[i, j] = value of physical channel perm[j]."""
    ns, n_ch = w.shape
    acc = np.empty(n_ch, np.float64)
    val = np.empty(n_ch, np.float64)
    for i in range(ns):
        b = i // k
        for c in range(n_ch):
            acc[c] = bg_in * w[i, c] + shared[i, c]
        _sos_step(bg_sos, bg_zi, acc)
        for c in range(n_ch):
            val[c] = w[i, c]
        _sos_step(hg_sos, hg_zi, val)
        for c in range(n_ch):
            val[c] = gain[c] * (acc[c] + noise * w[i, c] + hg_scale * env[b, c] * val[c])
        for j in range(n_ch):
            out[i, j] = val[perm[j]] + low[i, j]
