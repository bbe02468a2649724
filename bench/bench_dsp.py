"""Signal chain speed: the numba chain against scipy.signal.sosfilt on the same chunks.

96 channels at 1 kHz in 10-sample (10 ms) chunks, the paper's chain (notch x3, HP, LP,
CAR, bin mean, z-score). The baseline does the same filtering with sosfilt and carried
zi per chunk, which is what a hand-written loop does.
"""

import numpy as np
import pytest
from scipy import signal

from rtdecode.dsp import SignalChain
from rtdecode.dsp.design import design_chain

FS, C, CHUNK = 1000.0, 96, 10


def _spec(kind, c=C):
    s = design_chain(kind, fs=FS, n_channels=c)
    return s.with_normalization(np.zeros(s.n_features), np.ones(s.n_features))


@pytest.fixture(scope="module")
def chunk():
    return np.random.default_rng(0).standard_normal((CHUNK, C)).astype(np.float32) * 50


@pytest.mark.parametrize("kind", ["lfp", "lmp_bands"])
def test_chain_numba(benchmark, chunk, kind):
    chain = SignalChain(_spec(kind))
    chain.process(chunk)
    benchmark.group = f"chain-{kind}-{C}ch-{CHUNK}"
    benchmark.name = f"numba chain ({kind})"
    benchmark(chain.process, chunk)
    rtf = benchmark.stats.stats.median / (CHUNK / FS)
    print(f"\n{kind}: {rtf * 100:.3f}% of real time on one core")


@pytest.mark.parametrize("kind", ["lfp", "lmp_bands"])
def test_chain_scipy_baseline(benchmark, chunk, kind):
    spec = _spec(kind)
    zi_pre = np.zeros((len(spec.pre_sos), 2, C))
    zis = [(np.zeros((len(b.sos), 2, C)), np.zeros((len(b.smooth_sos), 2, C))) for b in spec.branches]

    def step(x):
        nonlocal zi_pre
        y, zi_pre = signal.sosfilt(spec.pre_sos, x.astype(np.float64), axis=0, zi=zi_pre)
        y = y - y.mean(axis=1, keepdims=True)
        outs = []
        for i, b in enumerate(spec.branches):
            w = y
            if len(b.sos):
                w, zb = signal.sosfilt(b.sos, w, axis=0, zi=zis[i][0])
                zis[i] = (zb, zis[i][1])
            w = w * w if b.rectify == "square" else w
            if len(b.smooth_sos):
                w, zs = signal.sosfilt(b.smooth_sos, w, axis=0, zi=zis[i][1])
                zis[i] = (zis[i][0], zs)
            outs.append(w.mean(axis=0))
        return ((np.stack(outs, -1).reshape(-1) - spec.norm_mean) / spec.norm_std).astype(np.float32)

    benchmark.group = f"chain-{kind}-{C}ch-{CHUNK}"
    benchmark.name = f"scipy sosfilt baseline ({kind})"
    benchmark(step, chunk)


@pytest.mark.parametrize("c", [96, 1024])
def test_chain_channels_2khz(benchmark, c):
    """Scaling: 2 kHz, 20-sample chunks (10 ms), paper chain."""
    s = design_chain("lfp", fs=2000.0, n_channels=c)
    chain = SignalChain(s.with_normalization(np.zeros(c), np.ones(c)))
    x = np.random.default_rng(0).standard_normal((20, c)).astype(np.float32)
    benchmark.group = "chain-2kHz-scaling"
    benchmark.name = f"numba {c}ch 2kHz"
    benchmark(chain.process, x)
    print(f"\n{c} ch @ 2 kHz: {benchmark.stats.stats.median / 0.01 * 100:.2f}% of real time")
