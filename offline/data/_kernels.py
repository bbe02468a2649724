"""numba kernel of the simulator's LFP: one pass per block over (samples, channels).

The scipy route (sosfilt on channel-major copies, then a transpose into the output) took
about 3x longer; this fused loop filters, mixes, applies gains and the channel order, and
writes straight into the session's (n_samples, n_channels) array.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
        for s in range(bg_sos.shape[0]):
            b0, b1, b2, a1, a2 = bg_sos[s, 0], bg_sos[s, 1], bg_sos[s, 2], bg_sos[s, 4], bg_sos[s, 5]
            for c in range(n_ch):
                x = acc[c]
                y = b0 * x + bg_zi[s, 0, c]
                bg_zi[s, 0, c] = b1 * x - a1 * y + bg_zi[s, 1, c]
                bg_zi[s, 1, c] = b2 * x - a2 * y
                acc[c] = y
        for c in range(n_ch):
            val[c] = w[i, c]
        for s in range(hg_sos.shape[0]):
            b0, b1, b2, a1, a2 = hg_sos[s, 0], hg_sos[s, 1], hg_sos[s, 2], hg_sos[s, 4], hg_sos[s, 5]
            for c in range(n_ch):
                x = val[c]
                y = b0 * x + hg_zi[s, 0, c]
                hg_zi[s, 0, c] = b1 * x - a1 * y + hg_zi[s, 1, c]
                hg_zi[s, 1, c] = b2 * x - a2 * y
                val[c] = y
        for c in range(n_ch):
            val[c] = gain[c] * (acc[c] + noise * w[i, c] + hg_scale * env[b, c] * val[c])
        for j in range(n_ch):
            out[i, j] = val[perm[j]] + low[i, j]
