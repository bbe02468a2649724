"""Stage 2 (and the LFP-only baselines): train the LFP student.

One objective, three uses, chosen by the loss weights:
  distillation     align * (1 - cos(proj(student latent), teacher latent)) + recon * MSE(LFP)
  supervised       the same + behavior * MSE(head(latent), behaviour z-scored per session)
  LFP-only         align = 0: behaviour + reconstruction only, no teacher
Teacher latents are computed once per session (the teacher is frozen) and looked up per bin.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import rings_in_place
from ..models.heads import BehaviorHead
from ..models.student import LFPStudent
from .windows import SessionData, gather, plan_batch, rank_slice, sliding_windows, step_rng


class StudentObjective(nn.Module):
    def __init__(
        self,
        student: LFPStudent,
        sessions: list[SessionData],
        which: list[int],
        seq_bins: int,
        batch: int,
        seed: int,
        stage: str,
        *,
        align: float = 0.0,
        recon: float = 0.0,
        behavior: float = 0.0,
        head: BehaviorHead | None = None,
        targets: dict[int, np.ndarray] | None = None,  # data session -> teacher latents (n_bins, D_t)
        session_map: dict[int, int] | None = None,  # data session -> student embedding index
        part: str = "train",
        max_bins: int | None = None,
        mask_ratio: float = 0.0,  # > 0: masked autoencoding (hidden patch tokens reconstructed)
    ):
        super().__init__()
        if align and not targets:
            raise ValueError("alignment needs teacher latents")
        if behavior and head is None:
            raise ValueError("a behaviour loss needs a head")
        self.student, self.head = student, head
        self.sessions, self.which, self.seq, self.batch, self.seed, self.stage = sessions, which, seq_bins, batch, seed, stage
        self.w = {"align": align, "recon": recon, "behavior": behavior}
        self.targets = targets or {}
        self.session_map = session_map or {s: s for s in which}
        self.part, self.max_bins, self.mask_ratio = part, max_bins, mask_ratio

    def forward(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        rng = step_rng(self.seed, self.stage, step)
        b = plan_batch(rng, self.sessions, self.which, self.seq, self.batch, self.part, self.max_bins)
        sl = rank_slice(self.batch, rank, world)
        starts = b.starts[sl]
        sess = self.sessions[b.session]
        x = torch.from_numpy(gather(sess.features, starts, self.seq))  # (B, T, F)
        mask = None
        if self.mask_ratio:  # drawn for the whole batch, then sliced: the same under DDP
            p = self.student.n_patches
            m = rng.random((self.batch, self.seq, p)) < self.mask_ratio
            mask = torch.from_numpy(np.repeat(m[sl], self.student.per_patch, axis=2))  # (B, T, F)
        out = self.student(x.masked_fill(mask, 0.0) if mask is not None else x, self.session_map[b.session])
        loss = x.new_zeros(())
        if self.w["recon"]:
            if mask is None:
                loss = loss + self.w["recon"] * LFPStudent.recon_loss(out, x)
            else:  # only the hidden tokens: the visible ones would be copied through
                err = (out["recon"] - x) ** 2
                loss = loss + self.w["recon"] * (err * mask).sum() / mask.sum().clamp(min=1)
        if self.w["align"]:
            tgt = torch.from_numpy(gather(self.targets[b.session], starts, self.seq))  # (B, T, D_t)
            loss = loss + self.w["align"] * LFPStudent.cosine_loss(out, tgt)
        if self.w["behavior"]:
            y = torch.from_numpy(sess.z(gather(sess.behavior, starts, self.seq)))  # (B, T, n_out), z-scored per session
            loss = loss + self.w["behavior"] * F.mse_loss(self.head(out["latent"]), y)
        return loss


def validator(objective: nn.Module, batches: int):
    """A no-argument callable: the objective's mean loss over `batches` fixed batches of
    validation time (part "val", seeded by the stage's name + "/val": the same batches at every
    measurement), without gradients. For `ddp.run_stage(validate=...)` (early stopping)."""

    @torch.no_grad()
    def loss() -> float:
        part, stage, was = objective.part, objective.stage, objective.training
        objective.part, objective.stage = "val", f"{stage}/val"
        objective.eval()
        try:
            return float(np.mean([float(objective(k)) for k in range(batches)]))
        finally:
            objective.part, objective.stage = part, stage
            objective.train(was)

    return loss


@torch.no_grad()
def student_latents(student: LFPStudent, features: np.ndarray, session: int, window: int,
                    idx: np.ndarray | None = None, chunk: int = 256, streams: int = 64) -> np.ndarray:  # fmt: skip
    """Per-bin latents (len(idx), D) exactly as the deployed graph sees them.

    Window design (attn_window == 0): for every bin, the window of `window` bins ending there,
    zero-filled before the session start (as the runtime's ring), `chunk` windows per forward.
    Streaming design: the deployed graph's own step (`LFPStudent.step_ring`, ring of W bins),
    run on `streams` stretches of the session in lockstep (a batch): every stretch but the first
    starts `n_layers * (W - 1)` bins early (the receptive field) with an empty cache, so its
    kept bins are exact; the first starts at bin 0, as the runtime does. Cost per bin ~ W*P^2
    instead of the (T*P)^2 of a masked full-sequence forward.
    """
    student.eval()
    n = len(features)
    idx = np.arange(n) if idx is None else np.asarray(idx)
    d = student.cfg.dim
    if student.cfg.attn_window == 0:
        out = np.empty((len(idx), d), np.float32)
        for i in range(0, len(idx), chunk):
            x = torch.from_numpy(sliding_windows(features, idx[i : i + chunk], window))  # (b, W, F)
            out[i : i + chunk] = student(x, session)["latent"][:, -1].numpy()
        return out
    return streaming_latents(student, features, session, streams)[idx]


@torch.no_grad()
def streaming_latents(student: LFPStudent, features: np.ndarray, session: int, streams: int = 64,
                      with_tokens: bool = False, in_place: bool = True):  # fmt: skip
    """All n bins' latents (n, D) of a streaming student; see `student_latents`. With
    `with_tokens`, also the per-patch token outputs (n, P, D) whose mean the latent is.
    `in_place`: write each bin into this function's own rings (`rings_in_place`); False runs
    the exported graph's functional step (the same numbers, tests/offline/train/test_latents_and_targets.py)."""
    n, f = features.shape
    warm = student.cfg.n_layers * (student.cfg.attn_window - 1)
    k = max(1, min(streams, (n - warm) // max(1, 2 * warm) if n > warm else 1))  # stretches
    span = -(-max(n - warm, 1) // k)  # kept bins per stretch (stretch 0 keeps warm + span)
    steps = warm + span
    x = np.zeros((k, steps, f), np.float32)  # stretch j reads bins [j*span, j*span + steps)
    for j in range(k):
        seg = features[j * span : j * span + steps]
        x[j, : len(seg)] = seg  # zeros past the session end only feed discarded outputs
    state = student.ring_state(k)  # the deployed graph's ring step (1.8x the old step's speed here)
    n_l = student.cfg.n_layers
    kr, vr, seen, phase = state[:n_l], state[n_l : 2 * n_l], state[-2], state[-1]
    shape = (student.n_patches, student.cfg.dim) if with_tokens else (student.cfg.dim,)
    lat = np.empty((k, steps, *shape), np.float32)
    xt = torch.from_numpy(x)
    with rings_in_place() if in_place else contextlib.nullcontext():
        for t in range(steps):
            h, kr, vr, seen, phase = student.step_ring_tokens(xt[:, t : t + 1], session, kr, vr, seen, phase)  # (k, P, D)
            lat[:, t] = (h if with_tokens else h.mean(dim=1)).numpy()
    out = np.empty((n, *shape), np.float32)
    head = min(n, steps)
    out[:head] = lat[0, :head]
    for j in range(1, k):
        a, b = j * span + warm, min(n, (j + 1) * span + warm)
        if a < b:
            out[a:b] = lat[j, warm : warm + b - a]
    return (out.mean(1), out) if with_tokens else out


def standardize_targets(targets: dict[int, np.ndarray], sessions: list[SessionData], mode: str) -> dict[int, np.ndarray]:
    """Z-score the teacher's latents before the cosine loss, on training bins only.

    "session": per session (each session's own mean and SD). Teacher latents carry a large
      per-session offset (the session's read-in); with a global z-score a session's latents are
      still ~90 % one constant direction, so the cosine loss is met by a per-session constant
      (the patch embedding) and the behaviour-bearing variation is ignored. Per-session
      z-scoring removes it. "global": one mean/SD over all training sessions. "none": raw.
    """
    if mode == "none":
        return dict(targets)
    if mode == "global":
        allt = np.concatenate([targets[i][sessions[i].train] for i in targets])
        mu, sd = allt.mean(0), allt.std(0) + 1e-6
        return {i: ((v - mu) / sd).astype(np.float32) for i, v in targets.items()}
    if mode == "session":
        out = {}
        for i, v in targets.items():
            a = v[sessions[i].train]
            out[i] = ((v - a.mean(0)) / (a.std(0) + 1e-6)).astype(np.float32)
        return out
    raise ValueError(f"standardize_targets must be 'session', 'global' or 'none', got {mode!r}")


def fit_new_embedding(student: LFPStudent, session: SessionData, init_from: int, bins: int, steps: int,
                      seq_bins: int, batch: int, seed: int, lr: float = 3e-3) -> int:  # fmt: skip
    """A new patch embedding for an unseen session, fit with the autoencoding loss alone on its
    first `bins` training bins (no spikes, no behaviour needed); everything else frozen."""
    idx = student.add_session(init_from)
    obj = StudentObjective(student, [session], [0], seq_bins, batch, seed, f"new_emb_{session.session_id}",
                           recon=1.0, session_map={0: idx}, max_bins=bins)  # fmt: skip
    opt = torch.optim.Adam([student.patch_emb], lr=lr)
    student.train()
    for step in range(steps):
        loss = obj(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        student.patch_emb.grad[:idx] = 0  # only the new session's row moves
        opt.step()
    return idx
