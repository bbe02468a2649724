"""The `rtdecode distill` config: one frozen dataclass per TOML table.

    cfg = load_config("configs/distill_tiny.toml")   # unknown keys and wrong types are refused

Every number the run uses lives here (and goes into the bundle's provenance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rtdecode.config import ConfigError, from_dict, load_toml, to_dict

from ..models.student import StudentConfig
from ..models.teacher import TeacherConfig


@dataclass(frozen=True)
class DataConfig:
    source: str = "simulate"  # "simulate" or "nwb"
    nwb_paths: tuple[str, ...] = ()  # source = "nwb": one file per session
    n_sessions: int = 6  # source = "simulate"
    held_out_sessions: int = 2  # the last k sessions are never used to train teacher or student
    sim: dict = field(default_factory=dict)  # keys of offline.data.simulate.SimConfig
    test_fraction: float = 0.2  # held-out time: the last part of every session
    guard_bins: int = 100  # gap between train and test time

    def __post_init__(self):
        if self.source not in ("simulate", "nwb"):
            raise ValueError(f"data.source must be 'simulate' or 'nwb', got {self.source!r}")
        if not 0.0 < self.test_fraction < 0.9:
            raise ValueError(f"data.test_fraction must be in (0, 0.9), got {self.test_fraction}")


@dataclass(frozen=True)
class ChainConfig:
    kind: str = "lfp"  # "lfp" or "lmp_bands" (rtdecode.dsp.design.design_chain)
    line_freq: float = 60.0  # 0 disables the notches
    n_harmonics: int = 3
    highpass_hz: float = 0.05  # 0 disables
    lowpass_hz: float = 50.0
    filter_order: int = 4
    car: bool = True


@dataclass(frozen=True)
class StageConfig:
    steps: int = 500
    batch_size: int = 16  # global batch (split across DDP ranks)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    grad_clip: float = 1.0
    seq_bins: int = 0  # training sequence length in bins; 0: the model's window (teacher: window_bins)

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"steps >= 0, batch_size >= 1 and lr > 0 are required (got {self.steps}, {self.batch_size}, {self.lr})")


@dataclass(frozen=True)
class LossConfig:
    align: float = 1.0  # cosine alignment to the frozen teacher's per-bin latents
    recon: float = 0.1  # LFP autoencoding
    behavior: float = 1.0  # supervised stages only
    mask_ratio: float = 0.25  # masked autoencoding of the unsupervised LFP-only baseline (share of patch tokens hidden)
    standardize_targets: str = "session"  # z-score teacher latents (training bins) before the cosine: "session"
    # (per session: removes the per-session offset a cosine is otherwise met by), "global" or "none"

    def __post_init__(self):
        if self.standardize_targets not in ("session", "global", "none"):
            raise ValueError(f"loss.standardize_targets must be 'session', 'global' or 'none', got {self.standardize_targets!r}")


@dataclass(frozen=True)
class EvalConfig:
    # ridge penalty relative to the latent variance: a float, or a grid chosen per output by
    # 5-fold blocked cross-validation on the training time (docs/distill.md: a fixed small
    # penalty over-fits lagged LFP features and under-rates every decoder fit on them)
    ridge_alpha: float | tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    fit_stride: int = 2  # every k-th training bin feeds the ridge fit (window design: cost)
    zero_shot_from: int = 0  # training session whose embedding unseen sessions reuse
    new_embedding_bins: int = 1000  # bins of an unseen session used to fit its new embedding
    new_embedding_steps: int = 100
    single_session: bool = True  # train one LFP-only model per session (costly)


@dataclass(frozen=True)
class ExportConfig:
    model: str = "distilled_sup"  # which student goes into the bundle: "distilled_sup" or "distilled"
    session: int = 0  # its session embedding is frozen into the graph
    opset: int = 17
    parity_tol: float = 1e-4  # max relative error ORT vs torch


@dataclass(frozen=True)
class DistillRunConfig:
    seed: int = 0
    threads: int = 2
    jobs: int = 1  # processes for independent stages (teacher chain | LFP-only baselines; evaluation)
    window_bins: int = 32  # W: the student's context (window design) or KV cache (streaming)
    design: str = "window"  # "window" or "streaming"
    checkpoint_every: int = 100
    data: DataConfig = field(default_factory=DataConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher_train: StageConfig = field(default_factory=StageConfig)
    distill: StageConfig = field(default_factory=StageConfig)
    supervised: StageConfig = field(default_factory=lambda: StageConfig(steps=200))
    single: StageConfig = field(default_factory=lambda: StageConfig(steps=200))
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self):
        if self.design not in ("window", "streaming"):
            raise ValueError(f"design must be 'window' or 'streaming', got {self.design!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1 (processes for independent stages), got {self.jobs}")
        if self.window_bins < 2:
            raise ValueError(f"window_bins must be >= 2, got {self.window_bins}")
        if self.export.model not in ("distilled_sup", "distilled"):
            raise ValueError(f"export.model must be 'distilled_sup' or 'distilled', got {self.export.model!r}")

    @property
    def student_cfg(self) -> StudentConfig:
        """The student config with its attention window set by the design."""
        from dataclasses import replace

        return replace(self.student, attn_window=self.window_bins if self.design == "streaming" else 0)

    def seq_bins(self, stage: StageConfig) -> int:
        if stage.seq_bins:
            return stage.seq_bins
        return 2 * self.window_bins if self.design == "streaming" else self.window_bins

    def to_dict(self) -> dict:
        return to_dict(self)


# keys earlier versions took: (table, key) -> why they went (a config naming one is refused with this)
REMOVED = {
    (None, "baseline"): "the multi-session LFP-only models now follow the distilled students' schedule "
    "([distill] steps of masked autoencoding, then [supervised] steps of fine-tuning): delete the [baseline] table",
    ("eval", "unsupervised_baseline"): "the unsupervised LFP-only model is always trained (the supervised one is "
    "fine-tuned from it): delete the key",
}


def _drop_removed(d: dict, where: str, refuse: bool) -> dict:
    d = dict(d)
    for (table, key), why in REMOVED.items():
        holder = d if table is None else d.get(table)
        if isinstance(holder, dict) and key in holder:
            if refuse:
                name = f"[{key}]" if table is None else f"[{table}] {key}"
                raise ConfigError(f"{where}: {name} is no longer a setting: {why}")
            if table is None:
                del d[key]
            else:
                d[table] = {k: v for k, v in holder.items() if k != key}
    return d


def load_config(src: str | Path | dict, *, legacy: bool = False) -> DistillRunConfig:
    """A path to a TOML file, or an already parsed mapping. `legacy`: drop the keys of
    `REMOVED` (a finished run's stored config) instead of refusing them."""
    if isinstance(src, dict):
        return from_dict(DistillRunConfig, _drop_removed(src, "distill config", not legacy), where="distill config")
    d = load_toml(src)
    return from_dict(DistillRunConfig, _drop_removed(d, str(src), not legacy), where=str(src))


__all__ = ["ConfigError", "DistillRunConfig", "load_config"]
