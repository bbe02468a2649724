"""Checkpoints: atomic writes (tmp file, then os.replace) and resume.

A run folder holds `checkpoints/<stage>.pt` for finished stages and
`checkpoints/<stage>.partial.pt` (model, optimiser, scheduler, step) while a stage runs.
A killed run restarts from the last partial checkpoint; because every batch is a
function of (seed, stage, step), the resumed run computes the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: Any, path: str | Path) -> None:
    from rtdecode._fs import atomic_path

    with atomic_path(path) as tmp:  # a unique temporary file with the umask's permissions
        torch.save(obj, tmp)


class Checkpoints:
    """Stage results and partial training states under `root` (None: keep nothing)."""

    def __init__(self, root: str | Path | None, resume: bool = True, every: int = 100, rank: int = 0, clear: bool = True):
        """`resume` False: finished and partial stages are ignored and, with `clear` (the
        run's own start), deleted; a second process of the same run passes clear=False."""
        self.root = Path(root) if root is not None else None
        self.resume, self.every, self.rank = resume, max(1, int(every)), rank
        if self.root is not None and not resume and clear and rank == 0:
            for p in self.root.glob("*.pt"):
                p.unlink()

    def _p(self, name: str) -> Path | None:
        return None if self.root is None else self.root / f"{name}.pt"

    def done(self, stage: str) -> Any | None:
        p = self._p(stage)
        if p is None or not self.resume or not p.exists():
            return None
        return torch.load(p, map_location="cpu", weights_only=False)

    def has(self, stage: str) -> bool:
        """A finished `stage` that `done` would load."""
        p = self._p(stage)
        return p is not None and self.resume and p.exists()

    def finish(self, stage: str, obj: Any) -> None:
        p = self._p(stage)
        if p is not None and self.rank == 0:
            atomic_save(obj, p)
            partial = self._p(stage + ".partial")
            if partial.exists():
                partial.unlink()

    def partial(self, stage: str) -> dict | None:
        p = self._p(stage + ".partial")
        if p is None or not self.resume or not p.exists():
            return None
        return torch.load(p, map_location="cpu", weights_only=False)

    def save_partial(self, stage: str, state: dict) -> None:
        p = self._p(stage + ".partial")
        if p is not None and self.rank == 0:
            atomic_save(state, p)
