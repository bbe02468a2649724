"""How decodable one session of a generative family is, by lagged ridge decoders (docs/families.md).

    python -m offline.analysis.decodability --family hga --minutes 2 --channels 96

One session (index 0, seed 0); fit on the first 60 % of its bins, penalty chosen on 65-75 %,
R² on the last 20 %; ridge on 10 lagged bins (and 1 bin) of the square-root spike counts, of
the true latents, and of the `lfp` and `lmp_bands` chains' features. Prints R² per output.
"""

from __future__ import annotations

import argparse

import numpy as np


def decodability(family: str, minutes: float = 2.0, channels: int = 96) -> dict[str, list[float]]:
    from offline.data.families import FamilyConfig
    from offline.data.families import family as get
    from offline.train.decode import fit_ridge_val, lagged_features
    from rtdecode.batch import r2_score
    from rtdecode.dsp import compute_features
    from rtdecode.dsp.design import design_chain, fit_normalization

    s = get(family).simulate(FamilyConfig(duration_s=60.0 * minutes, n_channels=channels), 0, 0)
    n = s.n_bins
    fi, vi, ti = np.arange(10, int(0.6 * n)), np.arange(int(0.65 * n), int(0.75 * n)), np.arange(int(0.8 * n), n)

    def score(x: np.ndarray, lags: int = 10) -> list[float]:
        f = {k: lagged_features(x, i, lags) for k, i in (("f", fi), ("v", vi), ("t", ti))}
        r, _, _ = fit_ridge_val(f["f"], s.behavior[fi], f["v"], s.behavior[vi], [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0])
        return r2_score(s.behavior[ti], r.predict(f["t"])).round(3).tolist()

    spikes = np.sqrt(s.spikes).astype(np.float32)
    out = {"outputs": list(s.behavior_names), "spikes": score(spikes), "spikes_1bin": score(spikes, 1),
           "latents": score(s.latents), "latents_1bin": score(s.latents, 1)}  # fmt: skip
    for kind in ("lfp", "lmp_bands"):
        ch = design_chain(kind, fs=s.lfp_rate, n_channels=channels, bin_width_s=s.bin_width, line_freq=60.0)
        feats = compute_features(ch, s.lfp)
        m, sd = fit_normalization(feats[fi])
        out[kind] = score(((feats - m) / sd).astype(np.float32))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="append")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--channels", type=int, default=96)
    a = ap.parse_args(argv)
    from offline.data.families import FAMILIES

    for fam in a.family or list(FAMILIES):
        for k, v in decodability(fam, a.minutes, a.channels).items():
            print(f"{fam:9s} {k:13s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
