"""Two DDP processes (gloo, CPU) give the same model as one process with the same global batch."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))


def _train(rank: int, world: int, port: int, out: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_sessions import tiny_sessions

    from offline.models.student import LFPStudent, StudentConfig
    from offline.models.teacher import SpikeTeacher, TeacherConfig
    from offline.train.config import StageConfig
    from offline.train.ddp import Dist, init_distributed, run_stage
    from offline.train.distill import StudentObjective
    from offline.train.teacher import TeacherObjective
    from offline.train.windows import SessionData

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
        dd = init_distributed()
    else:
        dd = Dist()
    data = []
    for s in tiny_sessions(n_sessions=2, n_bins=300):
        feats = s.lfp.reshape(300, 2, -1).mean(1)  # stand-in features: 8 per bin
        data.append(SessionData(s.session_id, feats, s.spikes.astype("float32"), s.behavior, slice(0, 250), slice(260, 300)))
    stage = StageConfig(steps=6, batch_size=4, lr=3e-3, warmup=1)
    torch.manual_seed(0)
    teacher = SpikeTeacher(TeacherConfig(dim=16, n_layers=1, n_heads=2, n_patches=2), [d.spikes.shape[1] for d in data])
    run_stage("teacher", TeacherObjective(teacher, data, [0, 1], 8, stage.batch_size, seed=0), list(teacher.parameters()), stage, None, dd)
    torch.manual_seed(1)
    student = LFPStudent(StudentConfig(dim=16, n_layers=1, n_heads=2, patch_channels=4), 8, 1, 2, teacher_dim=16)
    targets = {i: torch.randn(300, 16, generator=torch.Generator().manual_seed(i)).numpy() for i in (0, 1)}
    obj = StudentObjective(student, data, [0, 1], 8, stage.batch_size, 0, "distill", align=1.0, recon=0.5, targets=targets)
    run_stage("distill", obj, list(student.parameters()), stage, None, dd)
    if dd.rank == 0:
        torch.save({"teacher": teacher.state_dict(), "student": student.state_dict()}, out)
    if world > 1:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process(tmp_path):
    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    _train(0, 1, 0, one)
    mp.spawn(_train, args=(2, _free_port(), two), nprocs=2, join=True)
    a, b = torch.load(one), torch.load(two)
    for part in ("teacher", "student"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
    # and training moved the weights (the comparison is not trivially true)
    torch.manual_seed(0)
    from offline.models.teacher import SpikeTeacher, TeacherConfig

    init = SpikeTeacher(TeacherConfig(dim=16, n_layers=1, n_heads=2, n_patches=2), [12, 15]).state_dict()
    assert not torch.allclose(init["encoder.blocks.0.qkv.weight"], a["teacher"]["encoder.blocks.0.qkv.weight"])
