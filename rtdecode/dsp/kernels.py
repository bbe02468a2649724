"""numba kernels of the signal chain: pure functions over preallocated arrays.

All arithmetic is float64 (DESIGN.md: a float32 0.05 Hz high-pass drifts); features
leave as float32. Loop order is sections outermost, channels innermost, so the
inner loop runs over contiguous memory and vectorises.

`chain_process` does one whole chunk in one call (no Python between stages):
pre filter -> CAR -> per branch (band filter, rectify, smoother, bin mean) -> z-score.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RECT_NONE, RECT_SQUARE, RECT_ABS = 0, 1, 2


@njit(cache=True, nogil=True, fastmath=False)
def sosfilt_inplace(sos, zi, x, n):
    """Filter x[:n] in place along axis 0 through SOS sections, carrying zi.

    sos (n_sections, 6) float64, normalised (a0 == 1); zi (n_sections, 2, n_channels)
    float64, the same layout as scipy.signal.sosfilt's zi for x of shape (n, n_channels)
    filtered along axis 0; x (>= n, n_channels) float64.
    """
    n_sec = sos.shape[0]
    n_ch = x.shape[1]
    for s in range(n_sec):
        b0 = sos[s, 0]
        b1 = sos[s, 1]
        b2 = sos[s, 2]
        a1 = sos[s, 4]
        a2 = sos[s, 5]
        z0 = zi[s, 0]
        z1 = zi[s, 1]
        for i in range(n):
            row = x[i]
            for c in range(n_ch):
                xi = row[c]
                y = b0 * xi + z0[c]
                z0[c] = b1 * xi - a1 * y + z1[c]
                z1[c] = b2 * xi - a2 * y
                row[c] = y


@njit(cache=True, nogil=True)
def car_inplace(x, n):
    """Common-average reference: subtract the mean over channels from every sample."""
    n_ch = x.shape[1]
    inv = 1.0 / n_ch
    for i in range(n):
        row = x[i]
        m = 0.0
        for c in range(n_ch):
            m += row[c]
        m *= inv
        for c in range(n_ch):
            row[c] -= m


@njit(cache=True, nogil=True)
def chain_process(
    x_in,  # (n, C) float32 or float64: raw samples
    n,  # samples to use from x_in
    base,  # (cap, C) float64 work: pre-filtered, referenced signal
    work,  # (cap, C) float64 work: one branch at a time
    pre_sos,  # (S, 6)
    pre_zi,  # (S, 2, C)
    car,  # bool
    br_sos,  # (sum S_b, 6) all branch band filters stacked
    br_zi,  # (sum S_b, 2, C)
    br_off,  # (B + 1,) int64 offsets into br_sos
    sm_sos,  # (sum S_b', 6) all smoothers stacked
    sm_zi,  # (sum S_b', 2, C)
    sm_off,  # (B + 1,) int64
    rect,  # (B,) int64 rectifier codes
    acc,  # (C * B,) float64 running bin sums, carried
    count,  # (1,) int64 samples in the current bin, carried
    bin_samples,
    use_norm,  # bool
    mean,  # (C * B,) float64
    inv_std,  # (C * B,) float64
    out,  # (max_bins, C * B) float32
    ends,  # (max_bins,) int64: index in the chunk of each completed bin's last sample
):
    """Run one chunk through the whole chain; return the number of bins completed."""
    n_ch = base.shape[1]
    n_br = rect.shape[0]
    for i in range(n):
        for c in range(n_ch):
            base[i, c] = x_in[i, c]
    sosfilt_inplace(pre_sos, pre_zi, base, n)
    if car:
        car_inplace(base, n)

    c0 = count[0]
    k = 0
    for b in range(n_br):
        if n_br == 1 and br_off[1] == br_off[0] and sm_off[1] == sm_off[0] and rect[0] == RECT_NONE:
            src = base  # identity branch: no copy
        else:
            for i in range(n):
                for c in range(n_ch):
                    work[i, c] = base[i, c]
            sosfilt_inplace(br_sos[br_off[b] : br_off[b + 1]], br_zi[br_off[b] : br_off[b + 1]], work, n)
            r = rect[b]
            if r == RECT_SQUARE:
                for i in range(n):
                    for c in range(n_ch):
                        work[i, c] = work[i, c] * work[i, c]
            elif r == RECT_ABS:
                for i in range(n):
                    for c in range(n_ch):
                        work[i, c] = abs(work[i, c])
            sosfilt_inplace(sm_sos[sm_off[b] : sm_off[b + 1]], sm_zi[sm_off[b] : sm_off[b + 1]], work, n)
            src = work
        # bin means (the bin boundaries are the same for every branch)
        cnt = c0
        k = 0
        for i in range(n):
            row = src[i]
            for c in range(n_ch):
                acc[c * n_br + b] += row[c]
            cnt += 1
            if cnt == bin_samples:
                for c in range(n_ch):
                    j = c * n_br + b
                    v = acc[j] / bin_samples
                    if use_norm:
                        v = (v - mean[j]) * inv_std[j]
                    out[k, j] = v
                    acc[j] = 0.0
                ends[k] = i
                cnt = 0
                k += 1
    count[0] = (c0 + n) % bin_samples
    return k


@njit(cache=True, nogil=True)
def has_nonfinite(x, n):
    """True if x[:n] holds NaN or Inf (one pass, no allocation)."""
    n_ch = x.shape[1]
    for i in range(n):
        for c in range(n_ch):
            v = x[i, c]
            if not np.isfinite(v):
                return True
    return False


@njit(cache=True, nogil=True)
def hold_nonfinite(x, n, last):
    """In place: every NaN/Inf of x[:n] becomes its channel's last finite value before it
    (`last` carries it in from the previous block; it is not updated). Returns how many values
    were replaced. The one repair of the runtime and of the offline pass (compute_features)."""
    n_ch = x.shape[1]
    k = 0
    for c in range(n_ch):
        prev = last[c]
        for i in range(n):
            v = x[i, c]
            if np.isfinite(v):
                prev = v
            else:
                x[i, c] = prev
                k += 1
    return k


@njit(cache=True, nogil=True)
def count_changes(x, n, last, changes):
    """Per channel, count samples of x[:n] that differ from the one before (carried in
    `last`). A channel whose count stays 0 over a status period is flat: disconnected,
    or railed at the amplifier's limit (saturated). In place, no allocation."""
    n_ch = x.shape[1]
    for i in range(n):
        for c in range(n_ch):
            v = x[i, c]
            if v != last[c]:
                changes[c] += 1
                last[c] = v
