"""The offline pass of a bundle over a whole recording: what the runtime would publish.

Same chain (`compute_features`), same window ring, same backend class: used to check
that online decoding equals offline decoding, and to score a replay against truth.
"""

from __future__ import annotations

import numpy as np

from .bundle import Bundle
from .dsp import WindowRing, compute_features


def decode_recording(bundle: Bundle, signal: np.ndarray, backend=None) -> np.ndarray:
    """(n_samples, n_channels) raw -> (n_bins, n_outputs) decoded, one row per bin."""
    from .backends.onnxruntime import OnnxRuntimeBackend

    be = backend or OnnxRuntimeBackend(bundle)
    try:
        feats = compute_features(bundle.chain, signal)
        out = np.empty((len(feats), bundle.n_outputs), dtype=np.float32)
        be.reset_state()
        if bundle.model.kind == "streaming":
            for i in range(len(feats)):
                out[i] = be.infer(feats[None, i : i + 1])
        else:
            ring = WindowRing(bundle.model.window_bins, bundle.n_features)
            for i in range(len(feats)):
                ring.push(feats[i])
                out[i] = be.infer(ring.window())
        return out
    finally:
        if backend is None:
            be.close()


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per output column."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.maximum(ss_tot, 1e-12)
