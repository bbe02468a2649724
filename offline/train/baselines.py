"""Stage 4: LFP-only baselines of the student's size, without the teacher (align = 0).

- multi-session, supervised: one student for all training sessions (per-session patch
  embeddings), trained on behaviour directly (+ autoencoding);
- multi-session, unsupervised: the same student trained by masked autoencoding of the LFP
  alone, decoded by ridge on its frozen latents: the counterpart of the unsupervised
  distilled student (the paper's unsupervised comparison);
- single-session: one supervised student per session, trained on that session alone (for an
  unseen session: on its own training time, which is what a lab without distillation would do).
"""

from __future__ import annotations

import torch

from ..models.heads import BehaviorHead
from ..models.student import LFPStudent, StudentConfig
from .checkpoint import Checkpoints
from .config import StageConfig
from .ddp import Dist, run_stage
from .distill import StudentObjective
from .windows import SessionData


def train_lfp_only(
    name: str,
    scfg: StudentConfig,
    sessions: list[SessionData],
    which: list[int],
    n_features: int,
    n_branches: int,
    stage: StageConfig,
    seq_bins: int,
    seed: int,
    recon: float,
    ckpt: Checkpoints | None = None,
    dd: Dist = Dist(),
    *,
    supervised: bool = True,
    mask_ratio: float = 0.0,
) -> tuple[LFPStudent, BehaviorHead | None, dict[int, int]]:
    """Returns the student, its head (None when unsupervised) and the map data session ->
    embedding index."""
    if not supervised and not (recon and mask_ratio):
        raise ValueError("an unsupervised LFP-only model needs masked autoencoding (recon > 0 and mask_ratio > 0)")
    torch.manual_seed(seed)
    student = LFPStudent(scfg, n_features, n_branches, n_sessions=len(which))
    head = BehaviorHead(scfg.dim, sessions[which[0]].behavior.shape[1]) if supervised else None
    smap = {s: i for i, s in enumerate(which)}
    obj = StudentObjective(student, sessions, which, seq_bins, stage.batch_size, seed, name, recon=recon,
                           behavior=1.0 if supervised else 0.0, head=head, session_map=smap, mask_ratio=mask_ratio)  # fmt: skip
    done = ckpt.done(name) if ckpt else None
    if done is not None:
        obj.load_state_dict(done["model"])
        return student, head, smap
    student.train()
    losses = run_stage(name, obj, list(obj.parameters()), stage, ckpt, dd)
    if ckpt:
        ckpt.finish(name, {"model": obj.state_dict(), "losses": losses})
    return student, head, smap
