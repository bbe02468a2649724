"""Alignment analysis: how the LFP student's representations relate to the spike teacher's
(and to the simulator's true latents). `analyze_run` is the entry; `metrics` and `controls`
are usable on any pair of latent arrays."""

from .controls import block_permute, circular_shift
from .metrics import cosine_per_bin, linear_cka, mapped_cosine, pool_bins

__all__ = ["analyze_run", "linear_cka", "cosine_per_bin", "mapped_cosine", "pool_bins", "circular_shift", "block_permute"]


def analyze_run(*args, **kwargs):
    from .run import analyze_run as _a

    return _a(*args, **kwargs)
