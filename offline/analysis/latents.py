"""A finished `rtdecode distill` run, loaded back: config, sessions, features, models, and
every model's per-bin latents (and the student's per-patch tokens).

    run = load_run("runs/tiny")                 # models from <run>/checkpoints
    lat = model_latents(run, "distilled", i, idx)  # {"latent": (n, D), "tokens": (n, P, D), "proj": ...}

Models: teacher (spikes), distilled, distilled_sup, lfp_multi, lfp_multi_unsup (masked-autoencoding
LFP-only; runs from before it existed have none), lfp_single (one per session),
initial (the distilled student before training: the same seed and init as the distill
stage) and features (the chain's normalised LFP features: no model at all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from offline.models.student import LFPStudent
from offline.models.teacher import SpikeTeacher
from offline.train.config import DistillRunConfig, load_config
from offline.train.distill import streaming_latents
from offline.train.teacher import teacher_latents
from offline.train.windows import SessionData, sliding_windows
from rtdecode.config import ConfigError

STUDENTS = ("distilled", "distilled_sup", "lfp_multi", "lfp_multi_unsup", "lfp_single", "initial")


class AnalysisError(ConfigError):
    """A run folder that cannot be analysed; the message names the file and what to do (a
    ConfigError, so that the CLI prints it as one line)."""


@dataclass
class LoadedRun:
    root: Path
    cfg: DistillRunConfig
    sessions: list  # offline.data Session objects (true latents in .latents when simulated)
    data: list[SessionData]
    n_train: int
    teacher: SpikeTeacher
    students: dict = field(default_factory=dict)  # name -> LFPStudent (lfp_single: dict session -> LFPStudent)
    _teacher_cache: dict = field(default_factory=dict)

    @property
    def train_sessions(self) -> list[int]:
        return list(range(self.n_train))


def find_run(path: str | Path) -> Path:
    """The run folder, given it or its bundle folder."""
    p = Path(path)
    if (p / "checkpoints").is_dir():
        return p
    if (p / "manifest.json").is_file() and (p.parent / "checkpoints").is_dir():
        return p.parent
    raise AnalysisError(f"{p}: no checkpoints/ folder here or beside it; pass the folder given to "
                        "`rtdecode distill --out` (it holds checkpoints/ and bundle/)")  # fmt: skip


def run_config(root: Path) -> DistillRunConfig:
    m = root / "bundle" / "manifest.json"
    if not m.is_file():
        raise AnalysisError(f"{m} is missing: the run did not finish (rerun `rtdecode distill --resume`)")
    prov = json.loads(m.read_text()).get("provenance") or {}
    if "config" not in prov:
        raise AnalysisError(f"{m}: provenance has no 'config': this bundle was not written by `rtdecode distill`")
    return load_config(prov["config"], legacy=True)  # a run of an earlier version may hold removed keys


def _ckpt(root: Path, name: str) -> dict:
    p = root / "checkpoints" / f"{name}.pt"
    if not p.is_file():
        raise AnalysisError(f"{p} is missing: the stage {name!r} did not finish (rerun `rtdecode distill --resume`)")
    return torch.load(p, map_location="cpu", weights_only=False)["model"]


def _student_state(state: dict) -> dict:
    """The student's weights out of a StudentObjective state dict (keys 'student.*')."""
    return {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}


def load_run(path: str | Path, sessions: list | None = None) -> LoadedRun:
    """Config from the bundle's provenance, sessions from its data source (or `sessions`),
    features exactly as the run computed them, and every trained model."""
    from offline.train.pipeline import load_sessions, prepare

    root = find_run(path)
    cfg = run_config(root)
    torch.set_num_threads(max(1, cfg.threads))
    sessions = list(sessions) if sessions is not None else load_sessions(cfg)
    prov = json.loads((root / "bundle" / "manifest.json").read_text())["provenance"]
    want = [(s["id"], s["n_bins"], s["n_units"]) for s in prov.get("sessions", [])]
    got = [(str(s.session_id), int(s.spikes.shape[0]), int(s.spikes.shape[1])) for s in sessions]
    if want and want != got:
        raise AnalysisError(f"{root}: the run was trained on sessions {want} (id, bins, units), the data source gives "
                            f"{got}: pass the same sessions (a simulator changed since the run gives other data)")  # fmt: skip
    chain, data, n_train = prepare(sessions, cfg)
    f, nb, train = data[0].features.shape[1], chain.n_branches, list(range(n_train))
    teacher = SpikeTeacher(cfg.teacher, [data[i].spikes.shape[1] for i in train])
    teacher.load_state_dict(_ckpt(root, "teacher"))
    run = LoadedRun(root, cfg, sessions, data, n_train, teacher.eval())
    for name, stage, has_align in (("distilled", "distill", True), ("distilled_sup", "distill_sup", True),
                                   ("lfp_multi", "lfp_multi", False)):  # fmt: skip
        st = LFPStudent(cfg.student_cfg, f, nb, len(train), cfg.teacher.dim if has_align else None)
        st.load_state_dict(_student_state(_ckpt(root, stage)))
        run.students[name] = st.eval()
    if (root / "checkpoints" / "lfp_multi_unsup.pt").is_file():  # runs of earlier versions may lack it
        st = LFPStudent(cfg.student_cfg, f, nb, len(train))
        st.load_state_dict(_student_state(_ckpt(root, "lfp_multi_unsup")))
        run.students["lfp_multi_unsup"] = st.eval()
    torch.manual_seed(cfg.seed + 2)  # exactly the distill stage's initialisation (pipeline._train_student)
    run.students["initial"] = LFPStudent(cfg.student_cfg, f, nb, len(train), cfg.teacher.dim).eval()
    if cfg.eval.single_session:
        singles = {}
        for i in range(len(data)):
            st = LFPStudent(cfg.student_cfg, f, nb, 1)
            st.load_state_dict(_student_state(_ckpt(root, f"lfp_single_{i}")))
            singles[i] = st.eval()
        run.students["lfp_single"] = singles
    return run


@torch.no_grad()
def student_outputs(student: LFPStudent, features: np.ndarray, session: int, window: int, idx: np.ndarray,
                    chunk: int = 256) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-bin latent (n, D), per-patch tokens (n, P, D) and, with an alignment head, the
    projection to the teacher's dim (n, D_t): the same passes as
    offline.train.distill.student_latents (whose latent is the tokens' mean)."""
    student.eval()
    idx = np.asarray(idx)
    if student.cfg.attn_window == 0:
        toks = np.empty((len(idx), student.n_patches, student.cfg.dim), np.float32)
        for i in range(0, len(idx), chunk):
            x = torch.from_numpy(sliding_windows(features, idx[i : i + chunk], window))  # (b, W, F)
            toks[i : i + chunk] = student.encoder(student.tokens(x, session))[:, -1].numpy()  # (b, P, D)
    else:  # the deployed graph's own step, many stretches in lockstep (exact; see streaming_latents)
        toks = streaming_latents(student, features, session, with_tokens=True)[1][idx]
    lat = toks.mean(1)
    out = {"latent": lat, "tokens": toks}
    if student.align is not None:
        out["proj"] = student.align(torch.from_numpy(lat)).numpy()
    return out


def model_latents(run: LoadedRun, model: str, i: int, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Latents of `model` on session i at bins idx. Unseen sessions (i >= n_train) use the
    zero-shot embedding (cfg.eval.zero_shot_from), as the pipeline's evaluation does."""
    d, cfg = run.data[i], run.cfg
    if model == "features":
        return {"latent": d.features[idx]}
    if model == "teacher":
        if i >= run.n_train:
            raise AnalysisError(f"the teacher has no read-in for held-out session {d.session_id}")
        if i not in run._teacher_cache:
            run._teacher_cache[i] = teacher_latents(run.teacher, d.spikes, i, cfg.seq_bins(cfg.teacher_train))
        return {"latent": run._teacher_cache[i][idx]}
    if model == "lfp_single":
        return student_outputs(run.students["lfp_single"][i], d.features, 0, cfg.window_bins, idx)
    emb = i if i < run.n_train else cfg.eval.zero_shot_from
    return student_outputs(run.students[model], d.features, emb, cfg.window_bins, idx)
