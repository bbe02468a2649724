"""The signal chain: scipy parity, chunk invariance, spec round trip, no allocation growth."""

import json

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


def _scipy_reference(spec: ChainSpec, x: np.ndarray) -> np.ndarray:
    """The chain written the obvious way with scipy, whole-recording."""
    y = signal.sosfilt(spec.pre_sos, x.astype(np.float64), axis=0) if len(spec.pre_sos) else x.astype(np.float64)
    if spec.car:
        y = y - y.mean(axis=1, keepdims=True)
    feats = []
    for b in spec.branches:
        w = signal.sosfilt(b.sos, y, axis=0) if len(b.sos) else y
        w = {"none": w, "square": w * w, "abs": np.abs(w)}[b.rectify]
        w = signal.sosfilt(b.smooth_sos, w, axis=0) if len(b.smooth_sos) else w
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
