"""Stage 1: pre-train the spike teacher with masked reconstruction across sessions."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.teacher import SpikeTeacher
from .windows import SessionData, gather, plan_batch, rank_slice, step_rng


class TeacherObjective(nn.Module):
    """Masked Poisson reconstruction (the teacher config's objective) on one session's windows per step."""

    def __init__(self, teacher: SpikeTeacher, sessions: list[SessionData], which: list[int], seq_bins: int,
                 batch: int, seed: int, stage: str = "teacher", part: str = "train", max_bins: int | None = None):  # fmt: skip
        super().__init__()
        self.teacher = teacher
        self.sessions, self.which, self.seq, self.batch, self.seed, self.stage = sessions, which, seq_bins, batch, seed, stage
        self.part, self.max_bins = part, max_bins
        self.session_map = {s: s for s in which}  # data session -> teacher session index

    def forward(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        rng = step_rng(self.seed, self.stage, step)
        b = plan_batch(rng, self.sessions, self.which, self.seq, self.batch, self.part, self.max_bins)
        counts = gather(self.sessions[b.session].spikes, b.starts, self.seq)  # (B, T, N)
        mask = rng.random((self.batch, self.seq)) < self.teacher.cfg.mask_ratio
        mask[np.arange(self.batch), rng.integers(0, self.seq, self.batch)] = True  # at least one bin per window
        sl = rank_slice(self.batch, rank, world)
        return self.teacher.loss(torch.from_numpy(counts[sl]), self.session_map[b.session], torch.from_numpy(mask[sl]))


@torch.no_grad()
def teacher_latents(teacher: SpikeTeacher, spikes: np.ndarray, session: int, seq_bins: int) -> np.ndarray:
    """Per-bin latents (n_bins, D) of a whole session, from windows of `seq_bins` (the context
    the teacher was trained with) that overlap by three quarters: every bin is read from the
    last quarter of a window, so that it has at least seq_bins - seq_bins // 4 bins of past
    context (but the first bins of the session), causal and bidirectional teacher alike.
    Activity leads behaviour by up to ~150 ms, so a bin's latent is worth most with the longest
    past: on the default config's teacher (6 sessions of `linear`), reading from the last
    quarter instead of the middle half raised the single-bin ridge's velocity/grip R² from
    0.459 to 0.513 (lagged spike ridge 0.586), the first quarter's few future bins
    notwithstanding (docs/distill.md, Fourth round). (Consecutive, non-overlapping windows leave
    the bins at a window's start with almost no context: their latents decode behaviour far
    worse, a periodic artefact the student cannot know about.)"""
    teacher.eval()
    n = len(spikes)
    out = np.empty((n, teacher.cfg.dim), np.float32)
    seq = min(seq_bins, n)
    q = max(1, seq // 4)
    b = np.arange(n)
    # bin b >= seq - q sits at position [seq - q, seq) of its window; earlier bins in the first
    start = np.where(b < seq - q, 0, np.minimum((b - (seq - q)) // q * q, n - seq))
    starts = np.unique(start)
    for i in range(0, len(starts), 64):
        st = starts[i : i + 64]
        lat = teacher(torch.from_numpy(gather(spikes, st, seq)), session)["latent"].numpy()
        for j, s in enumerate(st):
            sel = b[start == s]
            out[sel] = lat[j, sel - s]
    return out
