"""Small real students exported into real bundles (window and streaming designs); used by
tests/export and the GPU tests in tests/backends."""

from __future__ import annotations

import numpy as np
import pytest

N_CH = 8


def student_bundle(path, design: str, dim: int = 16, n_layers: int = 2, window_bins: int = 8, seed: int = 0,
                   layout: str = "ring_v1"):  # fmt: skip
    """(bundle, student, head): an untrained student + head exported with offline.export
    (streaming: in state layout `layout`, "ring_v1" or the older "shift_v0")."""
    torch = pytest.importorskip("torch")
    from offline.export import export_bundle
    from offline.models.heads import BehaviorHead
    from offline.models.student import LFPStudent, StudentConfig
    from rtdecode.dsp.design import design_chain

    torch.manual_seed(seed)
    cfg = StudentConfig(dim=dim, n_layers=n_layers, n_heads=2, patch_channels=4,
                        attn_window=window_bins if design == "streaming" else 0)  # fmt: skip
    student = LFPStudent(cfg, N_CH, 1, n_sessions=2).eval()
    head = BehaviorHead(dim, 2)
    chain = design_chain("lfp", fs=1000.0, n_channels=N_CH, line_freq=None)
    chain = chain.with_normalization(np.zeros(chain.n_features), np.ones(chain.n_features))
    real = np.random.default_rng(seed + 1).standard_normal((200, N_CH)).astype(np.float32).cumsum(0) * 0.1
    b = export_bundle(path, student, head, 1, chain, window_bins, ["vel_x", "vel_y"], real_features=real, layout=layout)
    return b, student, head


