"""Behaviour heads, and the deployable graphs the runtime feeds.

`WindowDecoder`: features (1, W, F) -> behaviour of the newest bin (1, n_out).
`StreamingDecoder`: features (1, 1, F) + key/value caches + bin counter -> behaviour
(1, n_out) + new caches + counter; the caches hold the last W-1 bins, shifted every step
(state layout "shift_v0", bundles before the ring).
`RingStreamingDecoder`: the same behaviour from per-layer rings of the last W bins, one
slot written per step (state layout "ring_v1"; `Encoder.step_ring`).
Both fix the session embedding (a deployed decoder serves one session).
"""

from __future__ import annotations

import torch
from torch import nn

from .student import LFPStudent


class BehaviorHead(nn.Module):
    """Linear read-out of per-bin latents: (..., D) -> (..., n_out)."""

    def __init__(self, dim: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_out)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.linear(latent)

    @classmethod
    def from_ridge(cls, w, b) -> "BehaviorHead":
        """From numpy ridge weights w (D, n_out), intercept b (n_out,)."""
        head = cls(w.shape[0], w.shape[1])
        with torch.no_grad():
            head.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32).T)
            head.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return head


class WindowDecoder(nn.Module):
    def __init__(self, student: LFPStudent, head: BehaviorHead, session: int):
        super().__init__()
        self.student, self.head, self.session = student, head, int(session)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        latent = self.student(features, self.session)["latent"]  # (1, W, D)
        return self.head(latent[:, -1])  # (1, n_out): the newest bin


class StreamingDecoder(nn.Module):
    def __init__(self, student: LFPStudent, head: BehaviorHead, session: int):
        super().__init__()
        self.student, self.head, self.session = student, head, int(session)

    def forward(self, features, k_cache, v_cache, n_seen):
        latent, k_cache, v_cache, n_seen = self.student.step(features, self.session, k_cache, v_cache, n_seen)
        return self.head(latent), k_cache, v_cache, n_seen  # (1, n_out), states


class RingStreamingDecoder(nn.Module):
    """forward(features, k_ring_0 .. k_ring_{L-1}, v_ring_0 .. v_ring_{L-1}, n_seen, phase) ->
    (behaviour (1, n_out), new k rings, new v rings, new n_seen, new phase), flat for ONNX."""

    def __init__(self, student: LFPStudent, head: BehaviorHead, session: int):
        super().__init__()
        self.student, self.head, self.session = student, head, int(session)
        self.n_layers = student.cfg.n_layers

    def forward(self, features, *state):
        n_l = self.n_layers
        ks, vs, n, phase = list(state[:n_l]), list(state[n_l : 2 * n_l]), state[2 * n_l], state[2 * n_l + 1]
        latent, ks, vs, n, phase = self.student.step_ring(features, self.session, ks, vs, n, phase)
        return (self.head(latent), *ks, *vs, n, phase)
