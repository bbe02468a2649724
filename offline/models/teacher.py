"""The spike teacher: a multi-session transformer on binned spike counts.

Session-specific tokenisation (units differ across sessions): a per-session linear
read-in maps that session's N_s units to P spatial tokens of D dims, and a learned
per-session patch embedding is added. Pre-training is masked reconstruction (NDT):
random whole bins are replaced by a learned mask token and their counts predicted
through a per-session read-out of the per-bin pooled latent, with a Poisson loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import Encoder


@dataclass(frozen=True)
class TeacherConfig:
    dim: int = 128
    n_layers: int = 10
    n_heads: int = 4
    n_patches: int = 8  # spatial tokens per bin
    mlp_ratio: float = 4.0
    causal: bool = True  # per-bin latents that only use the past (the student is causal too)
    mask_ratio: float = 0.25  # fraction of bins masked in pre-training
    max_count: int = 8  # counts are clamped before the read-in (as the paper's tokenizer)


class SpikeTeacher(nn.Module):
    def __init__(self, cfg: TeacherConfig, units_per_session: list[int]):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.n_patches
        self.read_in = nn.ModuleList(nn.Linear(n, p * d) for n in units_per_session)
        self.read_out = nn.ModuleList(nn.Linear(d, n) for n in units_per_session)  # log rates
        self.patch_emb = nn.Parameter(torch.randn(len(units_per_session), p, d) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(p, d))
        self.encoder = Encoder(d, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, causal=cfg.causal)

    @property
    def n_sessions(self) -> int:
        return len(self.read_in)

    def add_session(self, n_units: int, init_from: int = 0) -> int:
        """New read-in/read-out for an unseen session; patch embedding copied from `init_from`."""
        d, p = self.cfg.dim, self.cfg.n_patches
        dev = self.patch_emb.device
        self.read_in.append(nn.Linear(n_units, p * d).to(dev))
        self.read_out.append(nn.Linear(d, n_units).to(dev))
        self.patch_emb = nn.Parameter(torch.cat([self.patch_emb.data, self.patch_emb.data[init_from : init_from + 1]]))
        return self.n_sessions - 1

    def session_parameters(self, s: int) -> list[nn.Parameter]:
        return [*self.read_in[s].parameters(), *self.read_out[s].parameters()]

    def forward(self, counts: torch.Tensor, session: int, bin_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        b, t, n = counts.shape  # (B, T, N_s) spike counts of one session
        d, p = self.cfg.dim, self.cfg.n_patches
        x = torch.log1p(counts.clamp(max=self.cfg.max_count).float())
        tok = self.read_in[session](x).view(b, t, p, d)  # (B, T, P, D)
        if bin_mask is not None:  # (B, T) bool: True = masked bin
            tok = torch.where(bin_mask[:, :, None, None], self.mask_token.expand(b, t, p, d), tok)
        tok = tok + self.patch_emb[session]  # per-session patch embedding
        h = self.encoder(tok)  # (B, T, P, D)
        latent = h.mean(dim=2)  # (B, T, D) per-bin embedding
        return {"latent": latent, "log_rates": self.read_out[session](latent)}  # (B, T, N_s)

    def masked_loss(self, counts: torch.Tensor, session: int, mask: torch.Tensor) -> torch.Tensor:
        """Poisson NLL of the counts of masked bins; mask (B, T) bool, >= 1 True per row.
        A mean per window, then over windows (so equal DDP slices average to the whole)."""
        out = self(counts, session, mask)
        nll = F.poisson_nll_loss(out["log_rates"], counts.float(), log_input=True, full=False, reduction="none")
        per_bin = nll.mean(-1) * mask  # (B, T)
        return (per_bin.sum(1) / mask.sum(1)).mean()
