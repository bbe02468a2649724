"""The signal-chain spec: every number the trainer and the runtime must agree on.

A `ChainSpec` is made once, offline (`rtdecode.dsp.design`, which uses scipy),
stored in the bundle's manifest, and run online by `rtdecode.dsp.chain.SignalChain`
(numba only). It holds coefficients, not design recipes, so the runtime never
needs scipy; the design parameters ride along in `design` for humans.

Chain, per sample then per bin::

    raw (n, n_channels) float32
      -> pre filter (SOS cascade, float64, all channels)   e.g. notch 60/120/180 Hz, 0.05 Hz HP, 50 Hz LP
      -> common-average reference (optional)
      -> for each branch b: SOS band filter -> rectify (none|square|abs) -> SOS smoother
      -> mean over `bin_samples` samples
      -> z-score with training statistics (optional until the bundle is made)
    features (n_bins, n_channels * n_branches) float32, laid out channel-major:
    feature index = channel * n_branches + branch
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

RECTIFY = ("none", "square", "abs")
INIT_MODES = ("zero", "steady")
NORM_SCOPES = ("pooled", "session")
NORM_FLOOR = 1e-6  # the least std a feature is z-scored by (a flat feature stays near 0)


class ChainSpecError(ValueError):
    """A chain spec that is inconsistent; the message names the field."""


def _sos(value: Any, where: str) -> np.ndarray:
    arr = np.asarray(value if value is not None else np.zeros((0, 6)), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ChainSpecError(f"{where}: SOS coefficients must have shape (n_sections, 6), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ChainSpecError(f"{where}: SOS coefficients contain NaN or Inf")
    if np.any(arr[:, 3] == 0):
        raise ChainSpecError(f"{where}: a section has a0 == 0 (column 3); coefficients are not normalised")
    return np.ascontiguousarray(arr / arr[:, 3:4])


@dataclass(frozen=True)
class BranchSpec:
    """One feature branch: band filter, rectifier, smoother."""

    name: str
    sos: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    rectify: str = "none"
    smooth_sos: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    def __post_init__(self) -> None:
        if self.rectify not in RECTIFY:
            raise ChainSpecError(f"branch {self.name!r}: rectify must be one of {RECTIFY}, got {self.rectify!r}")
        object.__setattr__(self, "sos", _sos(self.sos, f"branch {self.name!r} sos"))
        object.__setattr__(self, "smooth_sos", _sos(self.smooth_sos, f"branch {self.name!r} smooth_sos"))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sos": self.sos.tolist(),
            "rectify": self.rectify,
            "smooth_sos": self.smooth_sos.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BranchSpec":
        _check_keys(d, {"name", "sos", "rectify", "smooth_sos"}, "chain.branches[]")
        return cls(name=str(d["name"]), sos=d.get("sos"), rectify=d.get("rectify", "none"), smooth_sos=d.get("smooth_sos"))


@dataclass(frozen=True)
class ChainSpec:
    """Everything the online and offline signal chain computes, as numbers."""

    fs: float
    n_channels: int
    bin_samples: int
    pre_sos: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    car: bool = True
    branches: tuple[BranchSpec, ...] = (BranchSpec("lfp"),)
    norm_mean: np.ndarray | None = None
    norm_std: np.ndarray | None = None
    kind: str = "custom"
    design: dict = field(default_factory=dict)
    # filter state at a (re)start: "zero" (bundles written before this field existed were
    # trained that way, so it stays their default) or "steady" (every section starts in the
    # steady state of a step at the first sample: a DC offset leaves no transient)
    init: str = "zero"
    # where norm_mean/norm_std come from: "pooled" (every training session's training time: the
    # statistics travel to a new day as they are; older bundles) or "session" (one session's own
    # training time: the decoder was trained on features z-scored per session, so a new day needs
    # its own statistics, label-free: `rtdecode calibrate --label-free` or `rtdecode run --renormalize`)
    norm_scope: str = "pooled"

    def __post_init__(self) -> None:
        if self.init not in INIT_MODES:
            raise ChainSpecError(f"chain.init must be one of {INIT_MODES}, got {self.init!r}")
        if self.norm_scope not in NORM_SCOPES:
            raise ChainSpecError(f"chain.norm_scope must be one of {NORM_SCOPES}, got {self.norm_scope!r}")
        if not (self.fs > 0 and np.isfinite(self.fs)):
            raise ChainSpecError(f"chain.fs must be a positive sampling rate in Hz, got {self.fs}")
        if int(self.n_channels) < 1:
            raise ChainSpecError(f"chain.n_channels must be >= 1, got {self.n_channels}")
        if int(self.bin_samples) < 1:
            raise ChainSpecError(f"chain.bin_samples must be >= 1, got {self.bin_samples}")
        object.__setattr__(self, "n_channels", int(self.n_channels))
        object.__setattr__(self, "bin_samples", int(self.bin_samples))
        object.__setattr__(self, "fs", float(self.fs))
        object.__setattr__(self, "pre_sos", _sos(self.pre_sos, "chain.pre_sos"))
        if not self.branches:
            raise ChainSpecError("chain.branches is empty: at least one feature branch is needed")
        object.__setattr__(self, "branches", tuple(self.branches))
        names = [b.name for b in self.branches]
        if len(set(names)) != len(names):
            raise ChainSpecError(f"chain.branches: duplicate branch names {names}")
        if (self.norm_mean is None) != (self.norm_std is None):
            raise ChainSpecError("chain.norm_mean and chain.norm_std must be given together")
        if self.norm_mean is not None:
            mean = np.asarray(self.norm_mean, dtype=np.float64).reshape(-1)
            std = np.asarray(self.norm_std, dtype=np.float64).reshape(-1)
            for nm, arr in (("norm_mean", mean), ("norm_std", std)):
                if arr.shape != (self.n_features,):
                    raise ChainSpecError(
                        f"chain.{nm} has {arr.shape[0]} values, the chain makes {self.n_features} features "
                        f"({self.n_channels} channels x {len(self.branches)} branches)"
                    )
                if not np.all(np.isfinite(arr)):
                    raise ChainSpecError(f"chain.{nm} contains NaN or Inf")
            if np.any(std <= 0):
                raise ChainSpecError("chain.norm_std must be > 0 everywhere (a flat training channel? drop it or floor its std)")
            object.__setattr__(self, "norm_mean", mean)
            object.__setattr__(self, "norm_std", std)

    # -- derived -------------------------------------------------------------------
    @property
    def n_branches(self) -> int:
        return len(self.branches)

    @property
    def n_features(self) -> int:
        return self.n_channels * len(self.branches)

    @property
    def bin_width_s(self) -> float:
        return self.bin_samples / self.fs

    @property
    def bin_rate(self) -> float:
        return self.fs / self.bin_samples

    @property
    def normalized(self) -> bool:
        return self.norm_mean is not None

    def feature_names(self, channel_names: list[str] | None = None) -> list[str]:
        chs = channel_names or [f"ch{i}" for i in range(self.n_channels)]
        return [f"{c}:{b.name}" for c in chs for b in self.branches]

    def with_normalization(self, mean: np.ndarray, std: np.ndarray) -> "ChainSpec":
        return replace(self, norm_mean=np.asarray(mean, np.float64), norm_std=np.asarray(std, np.float64))

    def without_normalization(self) -> "ChainSpec":
        return replace(self, norm_mean=None, norm_std=None)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "fs": self.fs,
            "n_channels": self.n_channels,
            "bin_samples": self.bin_samples,
            "pre_sos": self.pre_sos.tolist(),
            "car": self.car,
            "branches": [b.to_dict() for b in self.branches],
            "norm_mean": None if self.norm_mean is None else self.norm_mean.tolist(),
            "norm_std": None if self.norm_std is None else self.norm_std.tolist(),
            "design": self.design,
            "init": self.init,
            "norm_scope": self.norm_scope,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ChainSpec":
        _check_keys(
            d,
            {"kind", "fs", "n_channels", "bin_samples", "pre_sos", "car", "branches", "norm_mean", "norm_std", "design",
             "init", "norm_scope"},
            "chain",
        )
        for req in ("fs", "n_channels", "bin_samples"):
            if req not in d:
                raise ChainSpecError(f"chain.{req} is missing")
        return cls(
            fs=d["fs"],
            n_channels=d["n_channels"],
            bin_samples=d["bin_samples"],
            pre_sos=d.get("pre_sos"),
            car=bool(d.get("car", True)),
            branches=tuple(BranchSpec.from_dict(b) for b in d.get("branches", [{"name": "lfp"}])),
            norm_mean=d.get("norm_mean"),
            norm_std=d.get("norm_std"),
            kind=str(d.get("kind", "custom")),
            design=dict(d.get("design") or {}),
            init=str(d.get("init", "zero")),  # absent in older manifests: they were trained from zero state
            norm_scope=str(d.get("norm_scope", "pooled")),  # absent in older manifests: pooled statistics
        )

    def __repr__(self) -> str:
        br = ", ".join(f"{b.name}[{len(b.sos)}s,{b.rectify},{len(b.smooth_sos)}s]" for b in self.branches)
        return (
            f"ChainSpec(kind={self.kind!r}, fs={self.fs:g} Hz, n_channels={self.n_channels}, "
            f"bin={self.bin_width_s * 1e3:g} ms ({self.bin_samples} samples), pre={len(self.pre_sos)} sections, "
            f"car={self.car}, branches=[{br}], normalized={self.normalized}, init={self.init!r}, norm_scope={self.norm_scope!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChainSpec) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ChainSpecError(f"{where} must be a mapping, got {type(d).__name__}")
    unknown = set(d) - allowed
    if unknown:
        raise ChainSpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
