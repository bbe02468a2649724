"""`rtdecode compile` without a GPU: refusals, calibration data, reference outputs and
tolerances (the engine build itself is in tests/backends/test_tensorrt_gpu.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
from rtdecode.backends.tensorrt import probe_host
from rtdecode.compile import (
    PARITY_TOL,
    CompileError,
    calibration_feeds,
    check_inputs,
    compile_bundle,
    load_feature_windows,
    parity_tolerance,
    precision_of,
    rel_error,
    run_backend,
)


def _no_gpu():
    if probe_host()[0] is not None:
        pytest.skip("TensorRT and a GPU are present: compile would run")


def test_compile_refuses_without_tensorrt_naming_the_gpu_extra(window_bundle):
    _no_gpu()
    b = window_bundle[0]
    before = (b.path / "manifest.json").read_text()
    with pytest.raises(CompileError, match=r"needs TensorRT and pycuda .*rtdecode\[gpu\]"):
        compile_bundle(b.path)
    assert (b.path / "manifest.json").read_text() == before  # nothing written


def test_cli_compile_refuses_in_one_line(window_bundle):
    _no_gpu()
    r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "compile", str(window_bundle[0].path), "--fp16"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "rtdecode compile: error:" in r.stderr and "rtdecode[gpu]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_argument_errors_come_before_the_gpu_check(window_bundle, tmp_path):
    b = window_bundle[0]
    with pytest.raises(CompileError, match="--int8 needs --calib"):
        compile_bundle(b.path, int8=True)
    with pytest.raises(CompileError, match="does not exist"):
        compile_bundle(b.path, int8=True, calib=tmp_path / "nope.npz")
    with pytest.raises(CompileError, match="too small"):
        compile_bundle(b.path, workspace_mb=1)


def test_precision_and_tolerance():
    assert precision_of(False, False) == "fp32" and precision_of(True, False) == "fp16"
    assert precision_of(True, True) == "int8" and precision_of(False, True) == "int8"
    assert parity_tolerance("fp32") == 1e-3 and parity_tolerance("fp16") == 2e-2
    assert PARITY_TOL["fp32"] < PARITY_TOL["fp16"] < PARITY_TOL["int8"]
    with pytest.raises(CompileError, match="unknown precision"):
        parity_tolerance("fp8")


def test_rel_error_metric():
    ref = np.array([[1.0, -2.0], [0.5, 4.0]])
    assert rel_error(ref, ref) == (0.0, 0.0)
    a, r = rel_error(ref + np.array([[0.0, 0.0], [0.0, 0.04]]), ref)
    assert a == pytest.approx(0.04) and r == pytest.approx(0.04 / (4.0 + 4e-3))
    # a value near zero is judged against 1e-3 of the largest output, not blown up
    a, r = rel_error(np.array([1e-6, 10.0]), np.array([0.0, 10.0]))
    assert r == pytest.approx(1e-6 / 1e-2)


def test_load_feature_windows_shapes_and_refusals(window_bundle, streaming_bundle, tmp_path):
    wb, sb = window_bundle[0], streaming_bundle[0]
    w, f = wb.model.window_bins, wb.n_features
    rows = np.random.default_rng(0).standard_normal((50, f)).astype(np.float32)
    np.savez(tmp_path / "rows.npz", features=rows)
    x = load_feature_windows(wb, tmp_path / "rows.npz")
    assert x.shape == (len(range(0, 50 - w + 1, w // 2)), w, f)
    np.testing.assert_array_equal(x[1], rows[w // 2 : w // 2 + w])
    x = load_feature_windows(sb, tmp_path / "rows.npz")
    assert x.shape == (50, 1, f)
    np.savez(tmp_path / "win.npz", np.zeros((3, w, f), np.float32))  # a single unnamed array
    assert load_feature_windows(wb, tmp_path / "win.npz").shape == (3, w, f)
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, w, f + 1)))
    with pytest.raises(CompileError, match=rf"expected \(N, {w}, {f}\)"):
        load_feature_windows(wb, tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", features=np.zeros((3, w + 1, f)))
    with pytest.raises(CompileError, match=f"takes {w}"):
        load_feature_windows(wb, tmp_path / "short.npz")
    nan = rows.copy()
    nan[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", features=nan)
    with pytest.raises(CompileError, match="NaN"):
        load_feature_windows(wb, tmp_path / "nan.npz")
    np.savez(tmp_path / "two.npz", a=rows, b=rows)
    with pytest.raises(CompileError, match="no 'features' array"):
        load_feature_windows(wb, tmp_path / "two.npz")


def test_check_inputs_recorded_first_then_random(window_bundle):
    b = window_bundle[0]
    calib = np.ones((5, b.model.window_bins, b.n_features), np.float32)
    x = check_inputs(b, calib, n_random=7)
    assert x.shape == (12, b.model.window_bins, b.n_features) and x.dtype == np.float32
    assert (x[:5] == 1).all() and abs(x[5:].std() - 1) < 0.2
    np.testing.assert_array_equal(check_inputs(b, None, n_random=7), x[5:])  # seeded


def test_calibration_feeds_carry_real_streaming_state(streaming_bundle):
    """INT8 calibration of a streaming model feeds the states ONNX Runtime produced along
    the sequence; they must be what the runtime's backend carries."""
    b = streaming_bundle[0]
    rows = np.random.default_rng(3).standard_normal((6, 1, b.n_features)).astype(np.float32)
    feeds = calibration_feeds(b, rows)
    assert len(feeds) == 6 and set(feeds[0]) == {b.model.input_name, *(s.input for s in b.model.state)}
    assert all(not feeds[0][s.input].any() for s in b.model.state)  # first step: zero state
    assert feeds[3]["k_ring_0"].any() and feeds[3]["n_seen"].item() == 3
    # the feeds reproduce the backend's outputs step by step
    import onnxruntime as ort

    sess = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    with OnnxRuntimeBackend(b) as be:
        ref = run_backend(be, rows)
    for i, feed in enumerate(feeds):
        np.testing.assert_allclose(sess.run([b.model.output_name], feed)[0][0], ref[i], rtol=1e-5, atol=1e-6)


def test_run_backend_resets_state(streaming_bundle):
    b = streaming_bundle[0]
    rows = np.random.default_rng(4).standard_normal((10, 1, b.n_features)).astype(np.float32)
    with OnnxRuntimeBackend(b) as be:
        a = run_backend(be, rows)
        assert np.array_equal(a, run_backend(be, rows))
        assert not np.allclose(a[5], run_backend(be, rows[5:6])[0])  # context matters in a streaming model
