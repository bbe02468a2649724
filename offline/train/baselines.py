"""Stage 4: LFP-only baselines of the student's size, without the teacher (align = 0).

The multi-session baselines go through the distilled students' own schedule with the
teacher taken out, so that the teacher is the only difference:
- multi-session, unsupervised: one student for all training sessions (per-session patch
  embeddings) trained by masked autoencoding of the LFP alone for the `distill` stage's
  steps, with the distilled student's reconstruction loss (type and weight: loss.recon,
  loss.mask_ratio), decoded by ridge on its frozen latents: the counterpart of the unsupervised
  distilled student (the paper's unsupervised comparison);
- multi-session, supervised: that student fine-tuned on behaviour (+ autoencoding) for the
  `supervised` stage's settings, as the distilled student is (docs/distill.md: pre-trained this
  way it beats the same student trained on behaviour from scratch for as many steps). The
  schedule and the reconstruction objective are the same; alignment to the teacher is the
  only difference in the objective (the seeds differ too);
- single-session: one supervised student per session, trained on that session alone (for an
  unseen session: on its own training time, which is what a lab without distillation would do).
"""

from __future__ import annotations

import copy

import torch

from ..models.heads import BehaviorHead
from ..models.student import LFPStudent, StudentConfig
from .checkpoint import Checkpoints
from .config import StageConfig
from .ddp import Dist, run_stage
from .distill import StudentObjective, validator
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
    init: LFPStudent | None = None,
    behavior: float = 1.0,
    val_batches: int = 0,
) -> tuple[LFPStudent, BehaviorHead | None, dict[int, int]]:
    """Returns the student (a copy of `init`, fine-tuned, when given), its head (None when
    unsupervised) and the map data session -> embedding index. `val_batches` > 0: early
    stopping on the sessions' validation blocks (stage.val_every, stage.patience)."""
    if not supervised and not recon:
        raise ValueError("an unsupervised LFP-only model needs an autoencoding loss (recon > 0)")
    torch.manual_seed(seed)
    if init is not None and init.n_sessions != len(which):
        raise ValueError(f"init has {init.n_sessions} session embeddings, {len(which)} sessions are trained")
    student = copy.deepcopy(init) if init is not None else LFPStudent(scfg, n_features, n_branches, n_sessions=len(which))
    head = BehaviorHead(scfg.dim, sessions[which[0]].behavior.shape[1]) if supervised else None
    smap = {s: i for i, s in enumerate(which)}
    obj = StudentObjective(student, sessions, which, seq_bins, stage.batch_size, seed, name, recon=recon,
                           behavior=behavior if supervised else 0.0, head=head, session_map=smap, mask_ratio=mask_ratio)  # fmt: skip
    done = ckpt.done(name) if ckpt else None
    if done is not None:
        obj.load_state_dict(done["model"])
        return student, head, smap
    student.train()
    log: dict = {}
    losses = run_stage(name, obj, list(obj.parameters()), stage, ckpt, dd,
                       validate=validator(obj, val_batches) if val_batches else None, log=log)  # fmt: skip
    if ckpt:
        ckpt.finish(name, {"model": obj.state_dict(), "losses": losses, "early_stopping": log})
    return student, head, smap
