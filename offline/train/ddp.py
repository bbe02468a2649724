"""The training loop, in one process or under `torchrun` with PyTorch DDP.

    torchrun --nproc_per_node 2 -m offline.train.pipeline --config configs/distill_tiny.toml --out runs/x

Every stage hands `run_stage` an objective module whose forward(step, rank, world)
returns the loss of this rank's slice of the step's global batch (a per-sample mean,
so the DDP average over equal slices equals the single-process loss). Under DDP the
objective is wrapped in `DistributedDataParallel` (gloo on CPU, nccl on GPU), which
averages gradients across ranks; one process and N processes follow the same path.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import Checkpoints
from .config import StageConfig


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """From torchrun's environment (WORLD_SIZE, RANK, MASTER_ADDR/PORT); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def lr_lambda(cfg: StageConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


BARS = {"on": True}  # a stage worker process (pipeline, jobs > 1) turns its bars off


def progress(iterable, desc: str, total: int, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True,
                disable=not (enabled and BARS["on"] and sys.stderr.isatty()))  # fmt: skip


def run_stage(
    name: str,
    objective: nn.Module,
    params: list[nn.Parameter],
    cfg: StageConfig,
    ckpt: Checkpoints | None = None,
    dd: Dist = Dist(),
    validate=None,
    log: dict | None = None,
) -> list[float]:
    """Train `params` for cfg.steps with AdamW and a warm-up + cosine schedule; returns the
    loss of every step (this rank's). Resumes from `ckpt`'s partial state of `name`.

    Early stopping: with `validate` (a no-argument callable returning the validation loss,
    computed on validation time only) and cfg.val_every > 0, the loss is measured every
    val_every steps and after the last one; the objective ends with the weights of the best
    measurement, and cfg.patience > 0 stops after that many measurements without improvement.
    `log` (a dict) receives {"val": [[step, loss], ...], "best_step", "stopped_at"}."""
    module: nn.Module = objective
    if dd.world > 1:
        module = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    start, losses = 0, []
    state = ckpt.partial(name) if ckpt else None
    if state is not None:
        objective.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, losses = state["step"], list(state["losses"])
    early = validate is not None and cfg.val_every > 0
    es = {"val": [], "best": None, "best_step": None, "best_state": None, "bad": 0}
    if state is not None and "early" in state:
        es = state["early"]
    stopped = None
    bar = progress(range(start, cfg.steps), name, cfg.steps - start, enabled=dd.main)
    for step in bar:
        loss = module(step, dd.rank, dd.world)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if early and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
            v = float(validate())
            es["val"].append([step + 1, v])
            if es["best"] is None or v < es["best"]:
                es.update(best=v, best_step=step + 1, bad=0,
                          best_state={k: t.detach().clone() for k, t in objective.state_dict().items()})  # fmt: skip
            else:
                es["bad"] += 1
            if cfg.patience and es["bad"] >= cfg.patience:
                stopped = step + 1
                break
        if ckpt and (step + 1) % ckpt.every == 0 and step + 1 < cfg.steps:
            ckpt.save_partial(name, {"model": objective.state_dict(), "opt": opt.state_dict(),
                                     "sched": sched.state_dict(), "step": step + 1, "losses": losses,
                                     **({"early": es} if early else {})})  # fmt: skip
    if early and es["best_state"] is not None:
        objective.load_state_dict(es["best_state"])  # the best-on-validation weights
    if log is not None and early:
        log.update(val=es["val"], best_step=es["best_step"], stopped_at=stopped or cfg.steps)
    return losses
