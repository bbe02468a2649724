"""The signal chain: scipy parity, chunk invariance, spec round trip, no allocation growth."""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from rtdecode.dsp import ChainSpec, ChainSpecError, SignalChain, WindowRing, compute_features
from rtdecode.dsp.design import design_chain, fit_normalization
from rtdecode.dsp.kernels import car_inplace, sosfilt_inplace


def _rec(n=4000, c=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)).cumsum(0) * 2 + rng.standard_normal((n, c)) * 20
    x += 30 * np.sin(2 * np.pi * 60 * np.arange(n) / 1000.0)[:, None]
    return x.astype(np.float32)


def _sosfilt(sos, x, steady: bool):
    """scipy's sosfilt along time, from zero state or from sosfilt_zi scaled by the first sample."""
    if not len(sos):
        return x
    if not steady:
        return signal.sosfilt(sos, x, axis=0)
    zi = signal.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]
    return signal.sosfilt(sos, x, axis=0, zi=zi)[0]


def _scipy_reference(spec: ChainSpec, x: np.ndarray) -> np.ndarray:
    """The chain written the obvious way with scipy, whole-recording. In "steady" mode every
    stage starts in the steady state of its own first input value, which is what the
    chain's closed-form start state amounts to (for a steady input, each stage's first
    output equals its steady-state output)."""
    st = spec.init == "steady"
    y = _sosfilt(spec.pre_sos, x.astype(np.float64), st)
    if spec.car:
        y = y - y.mean(axis=1, keepdims=True)
    feats = []
    for b in spec.branches:
        w = _sosfilt(b.sos, y, st)
        w = {"none": w, "square": w * w, "abs": np.abs(w)}[b.rectify]
        w = _sosfilt(b.smooth_sos, w, st)
        nb = len(w) // spec.bin_samples
        feats.append(w[: nb * spec.bin_samples].reshape(nb, spec.bin_samples, -1).mean(axis=1))
    out = np.stack(feats, axis=-1).reshape(nb, -1)  # channel-major: ch * n_branches + branch
    if spec.normalized:
        out = (out - spec.norm_mean) / spec.norm_std
    return out


def test_sosfilt_kernel_matches_scipy_with_carried_zi():
    sos = signal.butter(4, [5, 40], "bandpass", fs=1000, output="sos")
    x = np.random.default_rng(1).standard_normal((777, 5))
    ref, zf_ref = signal.sosfilt(sos, x, axis=0, zi=np.zeros((len(sos), 2, 5)))
    y = x.copy()
    zi = np.zeros((len(sos), 2, 5))
    for a, b in [(0, 100), (100, 101), (101, 500), (500, 777)]:
        seg = np.ascontiguousarray(y[a:b])
        sosfilt_inplace(sos, zi, seg, b - a)
        y[a:b] = seg
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(zi, zf_ref, rtol=1e-12, atol=1e-12)


def test_car_kernel():
    x = np.random.default_rng(2).standard_normal((50, 7))
    y = x.copy()
    car_inplace(y, 50)
    np.testing.assert_allclose(y, x - x.mean(1, keepdims=True), atol=1e-14)


@pytest.mark.parametrize("kind", ["lfp", "lmp_bands"])
def test_chain_matches_scipy_reference(kind):
    x = _rec()
    spec = design_chain(kind, fs=1000.0, n_channels=x.shape[1])
    raw = compute_features(spec, x)
    ref = _scipy_reference(spec, x)
    assert raw.shape == (len(x) // 10, spec.n_features)
    np.testing.assert_allclose(raw, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    mean, std = fit_normalization(raw)
    nspec = spec.with_normalization(mean, std)
    z = compute_features(nspec, x)
    np.testing.assert_allclose(z, _scipy_reference(nspec, x), rtol=1e-4, atol=1e-4)
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-3


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 97), min_size=1, max_size=60),
    kind=st.sampled_from(["lfp", "lmp_bands"]),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_gives_the_whole_recording_bins(sizes, kind, seed):
    x = _rec(n=sum(sizes), c=3, seed=seed)
    spec = design_chain(kind, fs=1000.0, n_channels=3)
    spec = spec.with_normalization(np.zeros(spec.n_features), np.full(spec.n_features, 3.0))
    whole = compute_features(spec, x)
    chain = SignalChain(spec, max_chunk=32)  # smaller than some chunks: buffers grow once
    got, ends_ok = [], True
    pos = 0
    for n in sizes:
        before = chain.samples_in_bin
        bins = chain.process(np.ascontiguousarray(x[pos : pos + n]))
        # each bin's last sample index within the chunk follows from the bin in progress
        expect = [spec.bin_samples - before - 1 + j * spec.bin_samples for j in range(len(bins))]
        ends_ok &= list(chain.ends[: len(bins)]) == expect
        got.append(bins.copy())
        pos += n
    got = np.concatenate(got) if got else np.zeros((0, spec.n_features), np.float32)
    assert ends_ok
    np.testing.assert_array_equal(got, whole)  # bit-identical: same operations in the same order


def test_chunk_buffers_do_not_grow_once_sized():
    spec = design_chain("lfp", fs=1000.0, n_channels=4)
    chain = SignalChain(spec, max_chunk=64)
    x = _rec(n=64, c=4)
    chain.process(x)
    out_id = id(chain._out)
    for _ in range(10):
        chain.process(x[:10])
    assert id(chain._out) == out_id


def test_spec_round_trip_through_json_and_validation():
    spec = design_chain("lmp_bands", fs=2000.0, n_channels=3)
    spec = spec.with_normalization(np.arange(spec.n_features) * 0.1, np.ones(spec.n_features))
    back = ChainSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    np.testing.assert_array_equal(back.pre_sos, spec.pre_sos)
    d = spec.to_dict()
    d["norm_std"] = d["norm_std"][:-1]
    with pytest.raises(ChainSpecError, match="norm_std has 8 values, the chain makes 9 features"):
        ChainSpec.from_dict(d)
    with pytest.raises(ChainSpecError, match="unknown key"):
        ChainSpec.from_dict({**spec.to_dict(), "bin_sampels": 3})
    with pytest.raises(ChainSpecError, match="not a whole number of samples"):
        design_chain("lfp", fs=1000.0, n_channels=2, bin_width_s=0.0125 / 10)
    with pytest.raises(ChainSpecError, match="Nyquist"):
        design_chain("lmp_bands", fs=300.0, n_channels=2)


def test_float64_filters_keep_the_slow_highpass_accurate():
    """The 0.05 Hz high-pass is where float32 arithmetic would drift (DESIGN.md)."""
    spec = design_chain("lfp", fs=1000.0, n_channels=2, line_freq=None, lowpass_hz=50.0)
    t = np.arange(60_000) / 1000.0
    x = np.stack([np.sin(2 * np.pi * 1.0 * t) * 100 + 500, np.zeros_like(t)], 1).astype(np.float32)
    x[:, 1] = -x[:, 0]  # CAR keeps the signal: mean over 2 channels is 0
    z = compute_features(spec, x)
    ref = _scipy_reference(spec, x)
    assert np.abs(z - ref).max() < 1e-4 * np.abs(ref).max()
    assert abs(z[-1000:, 0].mean()) < 2.0  # DC offset of 500 removed by the high-pass


def test_window_ring_is_contiguous_time_ordered_view():
    ring = WindowRing(4, 2)
    for i in range(11):
        ring.push(np.array([i, -i], np.float32))
        w = ring.window()
        assert w.flags["C_CONTIGUOUS"] and w.shape == (1, 4, 2)
        k = min(i + 1, 4)
        np.testing.assert_array_equal(w[0, -k:, 0], np.arange(i - k + 1, i + 1))
    assert ring.full


def _offset_lfp(n: int, c: int = 4, seed: int = 0) -> np.ndarray:
    """LFP-like signal on large per-channel DC offsets (electrode offsets of up to 2 mV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 1000.0
    x = 40 * np.sin(2 * np.pi * 8 * t)[:, None] * rng.uniform(0.5, 1.5, c) + rng.standard_normal((n, c)) * 10
    return (x + rng.uniform(-2000, 2000, c)).astype(np.float32)


def test_steady_start_matches_a_long_run_within_the_stated_bound():
    """The first second after a start against a pass that has run 40 s: every bin within the
    chain's own start-up bound, 2 x tail(n) x D (D: largest deviation of the signal before the
    start from the first sample; tail(n): L1 norm of the pre filter's impulse response after
    n samples; 2: CAR), and far below what a zero-state start leaves."""
    from rtdecode.dsp.chain import SETTLE_TOL

    x = _offset_lfp(60_000)
    s0 = 40_000
    spec = design_chain("lfp", fs=1000.0, n_channels=4)
    spec = spec.with_normalization(np.zeros(spec.n_features), np.full(spec.n_features, 10.0))
    assert spec.init == "steady"
    long_run = compute_features(spec, x)[s0 // 10 :]
    start = compute_features(spec, x[s0:])
    zero = compute_features(replace(spec, init="zero"), x[s0:])
    # the bound, per sample, from the coefficients
    h = np.zeros((60_000, 1))
    h[0, 0] = 1.0
    sosfilt_inplace(spec.pre_sos, np.zeros((len(spec.pre_sos), 2, 1)), h, len(h))
    tail = np.cumsum(np.abs(h[::-1, 0]))[::-1]  # tail[m] = sum_{j >= m} |h[j]|
    dev = float(np.abs(x[:s0].astype(np.float64) - x[s0].astype(np.float64)).max())
    first_s = slice(0, 100)  # the first second: 100 bins
    err = np.abs(start[first_s] - long_run[first_s]).max(axis=1)
    bound = 2 * tail[np.arange(100) * 10 + 1] * dev / 10.0  # bin b holds samples 10b .. 10b + 9
    assert np.all(err <= bound + 1e-4), (err / bound).max()
    zero_err = np.abs(zero[first_s] - long_run[first_s]).max(axis=1)
    assert np.median(zero_err / np.maximum(err, 1e-9)) > 5  # the DC offsets' transient is gone
    # settled: from settle_bins on, within the stated tolerance of the same bound
    chain = SignalChain(spec)
    b = chain.settle_bins
    assert 0 < b < len(start)
    late = np.abs(start[b:] - long_run[b : len(start)]).max()
    assert late <= 2 * SETTLE_TOL * dev / 10.0 + 1e-4


def test_old_manifests_keep_the_zero_start_they_were_trained_with():
    spec = design_chain("lfp", fs=1000.0, n_channels=3)
    d = spec.to_dict()
    assert d["init"] == "steady"
    del d["init"]  # a manifest written before the field existed
    old = ChainSpec.from_dict(d)
    assert old.init == "zero"
    x = _offset_lfp(3000, c=3)
    np.testing.assert_allclose(compute_features(old, x), _scipy_reference(old, x), rtol=1e-5, atol=1e-3)
    with pytest.raises(ChainSpecError, match="chain.init must be one of"):
        ChainSpec.from_dict({**spec.to_dict(), "init": "warm"})


def test_steady_start_is_the_same_after_a_reset_and_for_any_first_chunk():
    spec = design_chain("lmp_bands", fs=1000.0, n_channels=3)
    x = _offset_lfp(2000, c=3)
    whole = compute_features(spec, x)
    chain = SignalChain(spec, max_chunk=64)
    chain.process(_offset_lfp(500, c=3, seed=9))  # some other signal, then a reset (a reconnect)
    chain.reset()
    got = [chain.process(np.ascontiguousarray(x[i : i + 7])).copy() for i in range(0, 2000, 7)]
    np.testing.assert_array_equal(np.concatenate(got), whole)
