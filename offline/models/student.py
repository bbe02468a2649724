"""The LFP student: a transformer on the signal chain's features, bin by bin.

Input is exactly `rtdecode.dsp.compute_features` output (B, T, F), F = channels x
branches, channel-major. Each bin's feature vector is cut into P spatial patches of
`patch_channels` channels; a shared MLP turns each patch into a D-dim token and a
learned per-session patch embedding is added (the session-specific tokenisation).
Attention is causal over bins (the decoded bin is the newest of the window) and,
when `attn_window` > 0, limited to the last `attn_window` bins: the streaming design,
which `step` reproduces one bin at a time with a key/value cache.

Outputs per bin: the pooled latent (B, T, D), the reconstruction of the input
(autoencoding head) and a projection to the teacher's dim (alignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import Encoder


@dataclass(frozen=True)
class StudentConfig:
    dim: int = 64
    n_layers: int = 6
    n_heads: int = 4
    patch_channels: int = 4  # channels per spatial patch
    mlp_ratio: float = 4.0
    attn_window: int = 0  # 0: causal over the whole input window; W > 0: sliding window of W bins (streaming)


class LFPStudent(nn.Module):
    def __init__(self, cfg: StudentConfig, n_features: int, n_branches: int, n_sessions: int, teacher_dim: int | None = None):
        super().__init__()
        self.cfg = cfg
        per_patch = cfg.patch_channels * n_branches
        if n_features % per_patch:
            raise ValueError(
                f"{n_features} features ({n_features // n_branches} channels x {n_branches} branches) do not split into "
                f"patches of {cfg.patch_channels} channels: pick a student.patch_channels that divides the channel count"
            )
        self.n_features, self.per_patch, self.n_patches = n_features, per_patch, n_features // per_patch
        d, p = cfg.dim, self.n_patches
        self.tokenizer = nn.Sequential(nn.Linear(per_patch, d), nn.SiLU(), nn.Linear(d, d))
        self.patch_emb = nn.Parameter(torch.randn(n_sessions, p, d) * 0.02)
        self.encoder = Encoder(d, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, causal=True, window=cfg.attn_window)
        self.recon = nn.Linear(d, per_patch)  # autoencoding head, per token
        self.align = nn.Linear(d, teacher_dim) if teacher_dim else None

    @property
    def n_sessions(self) -> int:
        return self.patch_emb.shape[0]

    def add_session(self, init_from: int = 0) -> int:
        """A new patch embedding (copied from `init_from`) for an unseen session; returns its index."""
        self.patch_emb = nn.Parameter(torch.cat([self.patch_emb.data, self.patch_emb.data[init_from : init_from + 1]]))
        return self.n_sessions - 1

    def tokens(self, x: torch.Tensor, session: torch.Tensor | int) -> torch.Tensor:
        b, t, f = x.shape  # (B, T, F)
        tok = self.tokenizer(x.view(b, t, self.n_patches, self.per_patch))  # (B, T, P, D)
        emb = self.patch_emb[session]  # (P, D) or (B, P, D)
        return tok + (emb if emb.dim() == 2 else emb[:, None])

    def forward(self, x: torch.Tensor, session: torch.Tensor | int) -> dict[str, torch.Tensor]:
        b, t, f = x.shape  # (B, T, F) normalised chain features
        h = self.encoder(self.tokens(x, session))  # (B, T, P, D)
        latent = h.mean(dim=2)  # (B, T, D) per-bin embedding
        out = {"latent": latent, "recon": self.recon(h).reshape(b, t, f)}  # recon (B, T, F)
        if self.align is not None:
            out["proj"] = self.align(latent)  # (B, T, D_teacher)
        return out

    def step_tokens(self, x: torch.Tensor, session: int, k_cache, v_cache, n_seen):
        """Streaming: x (B, 1, F) newest bin -> (per-patch outputs (B, P, D), caches, n_seen)."""
        return self.encoder.step(self.tokens(x, session)[:, 0], k_cache, v_cache, n_seen)

    def step(self, x: torch.Tensor, session: int, k_cache, v_cache, n_seen):
        """Streaming: x (B, 1, F) newest bin -> (latent (B, D), caches, n_seen)."""
        h, k_cache, v_cache, n_seen = self.step_tokens(x, session, k_cache, v_cache, n_seen)
        return h.mean(dim=1), k_cache, v_cache, n_seen  # (B, D)

    def step_ring_tokens(self, x: torch.Tensor, session: int, k_rings, v_rings, n, phase):
        """Streaming on a ring cache (`Encoder.step_ring`): x (B, 1, F) newest bin ->
        (per-patch outputs (B, P, D), new k rings, new v rings, new n, new phase)."""
        return self.encoder.step_ring(self.tokens(x, session)[:, 0], k_rings, v_rings, n, phase)

    def step_ring(self, x: torch.Tensor, session: int, k_rings, v_rings, n, phase):
        """Streaming on a ring cache: x (B, 1, F) newest bin -> (latent (B, D), rings, n,
        phase); the same latents as `step`. Zero state: `ring_state`."""
        h, k_rings, v_rings, n, phase = self.step_ring_tokens(x, session, k_rings, v_rings, n, phase)
        return h.mean(dim=1), k_rings, v_rings, n, phase

    def ring_state(self, batch: int = 1) -> list[torch.Tensor]:
        """Zero state of `step_ring`: k rings, v rings (L each, `ring_shape`), n (1,), phase (hd/2,)."""
        n_l = self.cfg.n_layers
        rings = [torch.zeros(self.ring_shape(batch, keys=True)) for _ in range(n_l)]
        rings += [torch.zeros(self.ring_shape(batch)) for _ in range(n_l)]
        return rings + [torch.zeros(1), torch.zeros(self.cfg.dim // self.cfg.n_heads // 2)]

    def ring_shape(self, batch: int = 1, keys: bool = False) -> tuple[int, ...]:
        """One layer's ring of the last W bins: values (B, H, W, P, hd); keys, stored
        transposed, (B, H, hd, W, P)."""
        w = self.cfg.attn_window
        if w < 2:
            raise ValueError("a streaming student needs student.attn_window >= 2")
        h, p, hd = self.cfg.n_heads, self.n_patches, self.cfg.dim // self.cfg.n_heads
        return (batch, h, hd, w, p) if keys else (batch, h, w, p, hd)

    def cache_shape(self, batch: int = 1) -> tuple[int, ...]:
        """(L, B, W-1, P, D): keys (or values) of the W-1 previous bins for every layer."""
        w = self.cfg.attn_window
        if w < 2:
            raise ValueError("a streaming student needs student.attn_window >= 2")
        return (self.cfg.n_layers, batch, w - 1, self.n_patches, self.cfg.dim)

    @staticmethod
    def recon_loss(out: dict, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out["recon"], x)

    @staticmethod
    def cosine_loss(out: dict, target: torch.Tensor) -> torch.Tensor:
        """1 - cos(student projection, teacher latent), averaged over bins."""
        return (1.0 - F.cosine_similarity(out["proj"], target, dim=-1)).mean()
