"""Stage 4: LFP-only baselines of the student's size, trained on behaviour directly.

- multi-session: one student for all training sessions (per-session patch embeddings);
- single-session: one student per session, trained on that session alone (for an unseen
  session: on its own training time, which is what a lab without distillation would do).
Both use the supervised objective without the teacher (align = 0).
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
) -> tuple[LFPStudent, BehaviorHead, dict[int, int]]:
    """Returns the student, its head and the map data session -> embedding index."""
    torch.manual_seed(seed)
    student = LFPStudent(scfg, n_features, n_branches, n_sessions=len(which))
    head = BehaviorHead(scfg.dim, sessions[which[0]].behavior.shape[1])
    smap = {s: i for i, s in enumerate(which)}
    obj = StudentObjective(student, sessions, which, seq_bins, stage.batch_size, seed, name,
                           recon=recon, behavior=1.0, head=head, session_map=smap)  # fmt: skip
    done = ckpt.done(name) if ckpt else None
    if done is not None:
        obj.load_state_dict(done["model"])
        return student, head, smap
    student.train()
    losses = run_stage(name, obj, list(obj.parameters()), stage, ckpt, dd)
    if ckpt:
        ckpt.finish(name, {"model": obj.state_dict(), "losses": losses})
    return student, head, smap
