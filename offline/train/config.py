"""The `rtdecode distill` config: one frozen dataclass per TOML table.

    cfg = load_config("configs/distill_tiny.toml")   # unknown keys and wrong types are refused

Every number the run uses lives here (and goes into the bundle's provenance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rtdecode.config import ConfigError, from_dict, load_toml, to_dict

from ..data.nwb import NWBConfig, NWBMapping
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
    # source = "nwb": [data.nwb] (keys of offline.data.nwb.NWBMapping) applies to every file;
    # [data.nwb.files."<path or glob>"] tables override keys for the files they match
    nwb: NWBConfig = field(default_factory=NWBConfig)

    def __post_init__(self):
        if self.source not in ("simulate", "nwb"):
            raise ValueError(f"data.source must be 'simulate' or 'nwb', got {self.source!r}")
        if not 0.0 < self.test_fraction < 0.9:
            raise ValueError(f"data.test_fraction must be in (0, 0.9), got {self.test_fraction}")
        if self.source == "nwb":
            stray = self.nwb.unmatched(self.nwb_paths)
            if stray:
                raise ValueError(f'data.nwb.files."{stray[0]}" matches none of data.nwb_paths '
                                 f"({', '.join(self.nwb_paths) or 'none given'}): fix the path or glob, or delete the table")  # fmt: skip

    def mapping_for(self, path: str) -> NWBMapping:
        """The NWB mapping of one file: [data.nwb], then its matching per-file overrides."""
        return self.nwb.for_file(path)

    def load_nwb(self) -> list:
        """Every file of `nwb_paths` read with its mapping (`offline.data.nwb.read_session`),
        checked to give the same outputs (names; units where both files have them).
        Raises ConfigError naming the file, what is wrong and the fix."""
        from ..data.nwb import NWBMappingError, read_session

        if not self.nwb_paths:
            raise ConfigError("data.source = 'nwb' needs data.nwb_paths (one NWB file per session)")
        sessions = []
        for p in self.nwb_paths:
            if not Path(p).is_file():
                raise ConfigError(f"data.nwb_paths: {p} {'is a folder' if Path(p).is_dir() else 'does not exist'}; "
                                  "list one NWB file per session (paths relative to the working directory)")  # fmt: skip
            try:
                sessions.append(read_session(p, self.mapping_for(p)))
            except NWBMappingError as e:
                raise ConfigError(f"{e}\n(set it in [data.nwb], or for this file only in [data.nwb.files.\"{p}\"])") from None
            except OSError as e:
                raise ConfigError(f"data.nwb_paths: {p} is not a readable NWB (HDF5) file ({e})") from None
        s0, p0 = sessions[0], self.nwb_paths[0]
        for p, s in zip(self.nwb_paths[1:], sessions[1:]):
            if list(s.behavior_names) != list(s0.behavior_names):
                raise ConfigError(f"{p} gives outputs {list(s.behavior_names)}, {p0} gives {list(s0.behavior_names)}: one "
                                  f"bundle decodes one set of outputs; map them with [data.nwb] outputs (per file: "
                                  f"[data.nwb.files.\"{p}\"])")  # fmt: skip
            if s.behavior_units and s0.behavior_units and list(s.behavior_units) != list(s0.behavior_units):
                raise ConfigError(f"{p} has output units {list(s.behavior_units)}, {p0} has {list(s0.behavior_units)}: "
                                  "convert the files to the same units before training on them together")  # fmt: skip
        return sessions


@dataclass(frozen=True)
class ChainConfig:
    kind: str = "lfp"  # "lfp" or "lmp_bands" (rtdecode.dsp.design.design_chain)
    line_freq: float = 60.0  # 0 disables the notches
    n_harmonics: int = 3
    highpass_hz: float = 0.05  # 0 disables
    lowpass_hz: float = 50.0
    filter_order: int = 4
    car: bool = True
    # z-scoring of the features: "pooled" (one mean/std over every training session's training
    # time; the bundle carries it to a new day as it is) or "session" (each session on its own
    # training time, no behaviour used, unseen sessions included; the bundle holds its export
    # session's statistics, and a new day gets its own, label-free: `rtdecode calibrate
    # --label-free` or `rtdecode run --renormalize SECONDS`)
    normalize: str = "pooled"

    def __post_init__(self):
        if self.normalize not in ("pooled", "session"):
            raise ValueError(f"chain.normalize must be \"pooled\" or \"session\", got {self.normalize!r}")


@dataclass(frozen=True)
class StageConfig:
    steps: int = 500
    batch_size: int = 16  # global batch (split across DDP ranks)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    grad_clip: float = 1.0
    seq_bins: int = 0  # training sequence length in bins; 0: the model's window (teacher: window_bins)
    val_every: int = 50  # early stopping: the loss on validation time every k steps (0: never); the best weights are kept
    patience: int = 0  # stop after this many validation measurements without improvement (0: run every step)

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"steps >= 0, batch_size >= 1 and lr > 0 are required (got {self.steps}, {self.batch_size}, {self.lr})")
        if self.val_every < 0 or self.patience < 0:
            raise ValueError(f"val_every and patience must be >= 0 (got {self.val_every}, {self.patience})")


@dataclass(frozen=True)
class ValidationConfig:
    # a validation block at the end of every session's training time, with a guard gap
    # (data.guard_bins) on both sides: fit | guard | validation | guard | test. It serves early
    # stopping, the ridge penalties and the choice of the exported decoder; the test block never does
    fraction: float = 0.15  # of the training time
    batches: int = 4  # batches of the stage's size per validation measurement (fixed: seeded by the stage)

    def __post_init__(self):
        if not 0.0 < self.fraction < 0.5 or self.batches < 1:
            raise ValueError(f"validation.fraction must be in (0, 0.5) and batches >= 1, got {self.fraction}, {self.batches}")


@dataclass(frozen=True)
class LossConfig:
    align: float = 1.0  # cosine alignment to the frozen teacher's per-bin latents
    recon: float = 0.1  # LFP reconstruction: the same type and weight for the distilled student and the LFP-only models
    behavior: float = 1.0  # supervised stages only
    mask_ratio: float = 0.25  # the LFP-only model's pre-training: masked autoencoding, share of patch tokens hidden
    distill_mask_ratio: float = 0.0  # the distilled student's pre-training: 0 = plain autoencoding. Each student
    # gets the objective it did best with on `linear` (docs/distill.md, "Why distillation lost on `linear`"):
    # at 600 steps hiding a quarter of the input halved the distilled student's frozen readout there (at 1200
    # mixed: better plain on unseen sessions only), plain autoencoding the LFP-only one's; on the demo's data
    # the LFP-only model does better plain. Not used with choose_masking:
    choose_masking: bool = False  # True: BOTH students' pre-training runs twice, plain (0) and masked
    # (mask_ratio), and each keeps the one whose frozen latents a lagged ridge decodes better on the
    # validation block (mean R² of every output over the training sessions): the same rule for both
    # (pipeline._pretrain_choice); the report and the bundle's provenance name the choice and both scores
    finetune_from: str = "chosen"  # with choose_masking: which pre-trained candidate fine-tuning starts from, for
    # both students alike: "chosen" (the one kept for the frozen readout), "masked" or "plain". On `dynamics`
    # the masked start fine-tuned better in 4 of 4 pairs although plain won the frozen readout (docs/distill.md, session 12)
    standardize_targets: str = "session"  # z-score teacher latents (training bins) before the cosine: "session"
    # (per session: removes the per-session offset a cosine is otherwise met by), "global" or "none"

    def __post_init__(self):
        for k in ("mask_ratio", "distill_mask_ratio"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ValueError(f"loss.{k} must be in [0, 1), got {getattr(self, k)}")
        if self.choose_masking and not self.mask_ratio > 0.0:
            raise ValueError("loss.choose_masking = true compares plain and masked autoencoding: loss.mask_ratio "
                             f"must be > 0 (the masked candidate), got {self.mask_ratio}")
        if self.choose_masking and not self.recon > 0.0:
            raise ValueError(f"loss.choose_masking = true needs loss.recon > 0 (both candidates autoencode), got {self.recon}")
        if self.finetune_from not in ("chosen", "masked", "plain"):
            raise ValueError(f"loss.finetune_from must be 'chosen', 'masked' or 'plain', got {self.finetune_from!r}")
        if self.finetune_from != "chosen" and not self.choose_masking:
            raise ValueError(f"loss.finetune_from = {self.finetune_from!r} picks one of the two pre-trained candidates: it "
                             "needs loss.choose_masking = true (without it there is one pre-trained student; drop the key)")  # fmt: skip
        if self.standardize_targets not in ("session", "global", "none"):
            raise ValueError(f"loss.standardize_targets must be 'session', 'global' or 'none', got {self.standardize_targets!r}")


@dataclass(frozen=True)
class EvalConfig:
    # ridge penalty relative to the latent variance: a float, or a grid chosen per output on the
    # validation block (fits on the fit block; then refit on both; the test block only scores.
    # docs/distill.md: a fixed small penalty over-fits lagged LFP features)
    ridge_alpha: float | tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    fit_stride: int = 2  # every k-th training bin feeds the ridge fit (window design: cost)
    zero_shot_from: int = 0  # training session whose embedding unseen sessions reuse
    new_embedding_bins: int = 1000  # bins of an unseen session used to fit its new embedding
    new_embedding_steps: int = 100
    single_session: bool = True  # train one LFP-only model per session (costly)


@dataclass(frozen=True)
class ExportConfig:
    # which decoder goes into the bundle: "best" (the highest validation R² of the four below),
    # "distilled" (the distilled student, see `model`), "lfp_only" (the multi-session LFP-only
    # model, fine-tuned), "ridge" (the lagged ridge on the LFP features, of `session`) or
    # "ridge_pooled" (the lagged ridge on the LFP features of every training session at once)
    choose: str = "best"
    # the outputs "best" is scored on (names, e.g. ["vx", "vy", "grip"]): the ones the experiment uses;
    # empty: every output (a position that no decoder predicts can dominate the mean otherwise)
    choose_outputs: list[str] = field(default_factory=list)
    # what "best" compares: "own" (each candidate's validation R² with its readout fit on each
    # training session's own fit block: the bundle used on its export session's day) or
    # "transfer" (the candidate as shipped, the export session's readout and embedding with no
    # refit, on the OTHER training sessions' validation blocks: the bundle used on a new day,
    # flattering the multi-session students, which trained on those sessions) or "unseen" (the
    # candidate as shipped on the UNSEEN sessions' validation blocks, which no candidate trained
    # on; their test blocks still only score; needs data.held_out_sessions >= 1)
    choose_by: str = "own"
    model: str = "distilled_sup"  # which distilled student: "distilled_sup" or "distilled" (ridge on its latents)
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
    validation: ValidationConfig = field(default_factory=ValidationConfig)
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
        if self.export.choose_by not in ("own", "transfer", "unseen"):
            raise ValueError(f"export.choose_by must be 'own', 'transfer' or 'unseen', got {self.export.choose_by!r}")
        if self.export.choose not in ("best", "distilled", "lfp_only", "ridge", "ridge_pooled"):
            raise ValueError("export.choose must be 'best', 'distilled', 'lfp_only', 'ridge' or 'ridge_pooled', "
                             f"got {self.export.choose!r}")  # fmt: skip

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
