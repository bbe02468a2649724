"""The spike teacher: a multi-session transformer on binned spike counts.

Session-specific tokenisation (units differ across sessions): a per-session linear read-in maps
that session's N_s units to P tokens of D dims per bin, and a learned per-session patch
embedding is added. With `spatial_patches` each token reads only its own contiguous group of
units (patch p: units [p N/P, (p+1) N/P)), the spike analogue of the paper's spatial patches;
otherwise every token reads all units. Pre-training is masked reconstruction (NDT): random whole
bins are replaced by a learned mask token and their counts predicted with a Poisson loss through
a per-session read-out of the per-bin pooled latent (mean over the bin's P tokens).

Two objectives (`TeacherConfig.objective`):

- "masked" (the first design; the dataclass default, so that stored configs and checkpoints of
  earlier runs load as they were trained): a masked bin's counts from its own latent only; the
  loss covers the masked bins (mask_ratio of them).
- "state" (issue 13, item 2; the configs' default): EVERY position's latent z_t predicts the
  counts of each masked bin t + o among its neighbours, o = -past_bins .. +future_bins, through a
  per-offset linear map M_o then the session read-out: log rate(t + o) = R_s(M_o z_t). Every
  bin's latent carries a loss (with mask_ratio 0.5 and 13 offsets, about 6 targets each), the
  targets are counts the latent's own input never showed (copying the input cannot help), and
  one D-dim latent has to explain ~(past + future + 1) x N counts: a bottleneck that only a
  denoised state, holding the recent trajectory (the ~100 ms by which activity leads
  behaviour), passes. Read linearly (M_o), so a ridge from one bin reaches that history.
  With `causal = false` (bidirectional attention; the teacher runs offline only) the state is a
  smoother's: it also sees the bins after t. The student stays causal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import Encoder

OBJECTIVES = ("masked", "state")


@dataclass(frozen=True)
class TeacherConfig:
    dim: int = 128
    n_layers: int = 10
    n_heads: int = 4
    n_patches: int = 8  # tokens per bin
    mlp_ratio: float = 4.0
    causal: bool = True  # False: bidirectional attention (offline only; latents read mid-window)
    mask_ratio: float = 0.25  # fraction of bins masked in pre-training
    max_count: int = 8  # counts are clamped before the read-in (as the paper's tokenizer)
    objective: str = "masked"  # "masked" (a masked bin from its own latent) or "state" (module doc)
    past_bins: int = 0  # "state": every latent also predicts the masked bins up to this many before it
    future_bins: int = 0  # ... and after it
    spatial_patches: bool = False  # token p reads only its contiguous group of units (else all units)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"teacher.objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {self.objective!r}")
        if self.past_bins < 0 or self.future_bins < 0:
            raise ValueError(f"teacher.past_bins and future_bins must be >= 0, got {self.past_bins}, {self.future_bins}")
        if self.objective == "masked" and (self.past_bins or self.future_bins):
            raise ValueError('teacher.past_bins / future_bins need objective = "state" (the "masked" objective '
                             "predicts a bin from its own latent only): set objective or drop them")  # fmt: skip
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"teacher.mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @property
    def offsets(self) -> list[int]:
        """Bin offsets o each latent predicts (t + o): [0] for "masked"."""
        return list(range(-self.past_bins, self.future_bins + 1))


@functools.lru_cache(maxsize=64)
def _patch_mask(n_units: int, n_patches: int, dim: int) -> torch.Tensor:
    """(P*D, N) 0/1: output row block p of the read-in sees units [p N/P, (p+1) N/P) only
    (every patch at least one unit; with N < P units are shared)."""
    grp = torch.div(torch.arange(n_units) * n_patches, n_units, rounding_mode="floor")  # (N,) patch of unit
    m = (grp[None, :] == torch.arange(n_patches)[:, None]).float()  # (P, N)
    for p in range(n_patches):  # fewer units than patches: patch p reads unit p * N // P
        if not m[p].any():
            m[p, p * n_units // n_patches] = 1.0
    return m.repeat_interleave(dim, dim=0)


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
        if cfg.objective == "state":  # M_o, one D x D map per offset, shared by all sessions; starts near identity
            k = len(cfg.offsets)
            self.offset_maps = nn.Parameter(torch.eye(d).repeat(k, 1, 1) + 0.02 * torch.randn(k, d, d))

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

    def _tokens(self, x: torch.Tensor, session: int) -> torch.Tensor:
        lin = self.read_in[session]
        if not self.cfg.spatial_patches:
            return lin(x)
        m = _patch_mask(lin.in_features, self.cfg.n_patches, self.cfg.dim).to(lin.weight.device)
        return F.linear(x, lin.weight * m, lin.bias)

    def forward(self, counts: torch.Tensor, session: int, bin_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        b, t, n = counts.shape  # (B, T, N_s) spike counts of one session
        d, p = self.cfg.dim, self.cfg.n_patches
        x = torch.log1p(counts.clamp(max=self.cfg.max_count).float())
        tok = self._tokens(x, session).view(b, t, p, d)  # (B, T, P, D)
        if bin_mask is not None:  # (B, T) bool: True = masked bin
            tok = torch.where(bin_mask[:, :, None, None], self.mask_token.expand(b, t, p, d), tok)
        tok = tok + self.patch_emb[session]  # per-session patch embedding
        h = self.encoder(tok)  # (B, T, P, D)
        latent = h.mean(dim=2)  # (B, T, D) per-bin embedding
        if self.cfg.objective == "state":
            z0 = latent @ self.offset_maps[self.cfg.offsets.index(0)].T
            return {"latent": latent, "log_rates": self.read_out[session](z0)}
        return {"latent": latent, "log_rates": self.read_out[session](latent)}  # (B, T, N_s)

    def offset_log_rates(self, latent: torch.Tensor, session: int) -> torch.Tensor:
        """(B, T, K, N_s): log rates of bin t + o predicted from latent t, o in cfg.offsets."""
        z = torch.einsum("btd,ked->btke", latent, self.offset_maps)  # (B, T, K, D)
        return self.read_out[session](z)

    def loss(self, counts: torch.Tensor, session: int, mask: torch.Tensor) -> torch.Tensor:
        """The configured objective's loss; mask (B, T) bool, >= 1 True per row."""
        if self.cfg.objective == "state":
            return self.state_loss(counts, session, mask)
        return self.masked_loss(counts, session, mask)

    def masked_loss(self, counts: torch.Tensor, session: int, mask: torch.Tensor) -> torch.Tensor:
        """Poisson NLL of the counts of masked bins; mask (B, T) bool, >= 1 True per row.
        A mean per window, then over windows (so equal DDP slices average to the whole)."""
        out = self(counts, session, mask)
        nll = F.poisson_nll_loss(out["log_rates"], counts.float(), log_input=True, full=False, reduction="none")
        per_bin = nll.mean(-1) * mask  # (B, T)
        return (per_bin.sum(1) / mask.sum(1)).mean()

    def state_loss(self, counts: torch.Tensor, session: int, mask: torch.Tensor) -> torch.Tensor:
        """Every position t predicts each masked bin t + o (o in cfg.offsets, inside the window):
        Poisson NLL averaged over those (t, o) pairs per window, then over windows."""
        t = counts.shape[1]
        out = self(counts, session, mask)
        lr = self.offset_log_rates(out["latent"], session)  # (B, T, K, N)
        off = torch.tensor(self.cfg.offsets, device=counts.device)
        tgt = torch.arange(t, device=counts.device)[:, None] + off[None, :]  # (T, K) target bin
        inside = (tgt >= 0) & (tgt < t)
        tgt = tgt.clamp(0, t - 1)
        y = counts.float()[:, tgt]  # (B, T, K, N)
        w = mask[:, tgt] & inside[None]  # (B, T, K): the target bin was hidden from the input
        nll = F.poisson_nll_loss(lr, y, log_input=True, full=False, reduction="none").mean(-1)  # (B, T, K)
        w = w.float()
        return ((nll * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1.0)).mean()
