"""The one signal chain, shared by the trainer and the runtime (no scipy, no torch here)."""

from .chain import SignalChain, compute_features
from .spec import BranchSpec, ChainSpec, ChainSpecError
from .window import WindowRing

__all__ = ["BranchSpec", "ChainSpec", "ChainSpecError", "SignalChain", "WindowRing", "compute_features"]
