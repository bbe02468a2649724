"""TensorRT on a real GPU: compile, engine vs ONNX Runtime, streaming state, CUDA graphs.

Run with `python -m pytest -m gpu tests/backends`. Skipped (with the reason) where
tensorrt, pycuda or a GPU are missing. NOTE: written against the TensorRT 10 docs and
never run yet: no GPU machine was available when it was written.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rtdecode[gpu]')")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install 'rtdecode[gpu]')")
    from rtdecode.backends.tensorrt import probe_host

    host, why = probe_host()
    if host is None:
        pytest.skip(why)
    return host


@pytest.fixture(scope="module")
def bundles(gpu, tmp_path_factory):
    from tests.export.students import student_bundle

    root = tmp_path_factory.mktemp("gpu")
    out = {d: student_bundle(root / d, d)[0] for d in ("window", "streaming")}  # streaming: state layout ring_v1
    out["streaming_shift_v0"] = student_bundle(root / "shift", "streaming", layout="shift_v0")[0]  # the older layout
    return out


def _copy(b, tmp_path):
    from rtdecode.bundle import load_bundle

    shutil.copytree(b.path, tmp_path / "b")
    return load_bundle(tmp_path / "b")


@pytest.mark.parametrize("design", ["window", "streaming", "streaming_shift_v0"])
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_compile_then_backend_matches_onnxruntime(gpu, bundles, design, fp16, tmp_path):
    from rtdecode.backends import select_backend
    from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
    from rtdecode.backends.tensorrt import TensorRTBackend, engine_filename
    from rtdecode.bundle import load_bundle
    from rtdecode.compile import PARITY_TOL, compile_bundle, rel_error, run_backend

    b = _copy(bundles[design], tmp_path)
    cache = tmp_path / "timing.cache"
    spec = compile_bundle(b.path, fp16=fp16, timing_cache=cache)
    prec = "fp16" if fp16 else "fp32"
    assert spec.file == engine_filename(gpu.gpu_name, gpu.tensorrt_version, prec)
    assert cache.is_file() and cache.stat().st_size > 0
    b = load_bundle(b.path)  # hashes verified
    (e,) = b.engines
    assert (e.gpu_name, e.compute_capability, e.tensorrt_version) == (gpu.gpu_name, gpu.compute_capability, gpu.tensorrt_version)
    assert e.parity["checked"] and e.parity["max_rel_error"] <= PARITY_TOL[prec]

    x = np.random.default_rng(1).standard_normal((40, *OnnxRuntimeBackend(b).input_shape[1:])).astype(np.float32)
    with OnnxRuntimeBackend(b) as ref_be:
        ref = run_backend(ref_be, x)
    be, why = select_backend(b, "auto")
    try:
        assert isinstance(be, TensorRTBackend), why
        assert why.startswith("auto: TensorRT")
        assert "cuda graph on" in be.describe(), be.describe()
        got = run_backend(be, x)
        assert rel_error(got, ref)[1] <= PARITY_TOL[prec]
        y1 = be.infer(x[0:1])
        y2 = be.infer(x[1:2])
        assert np.shares_memory(y1, y2)  # one output buffer, no allocation per call
    finally:
        be.close()


@pytest.mark.parametrize("design", ["streaming", "streaming_shift_v0"])
def test_streaming_state_ping_pongs_and_resets(gpu, bundles, design, tmp_path):
    """The device-side state must carry across calls exactly as ONNX Runtime's does (ring
    graph: over three ring wraps), with and without CUDA graphs, for both state layouts,
    and reset_state must restart the sequence."""
    from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
    from rtdecode.backends.tensorrt import TensorRTBackend
    from rtdecode.bundle import load_bundle
    from rtdecode.compile import compile_bundle, run_backend

    b = _copy(bundles[design], tmp_path)
    compile_bundle(b.path)
    b = load_bundle(b.path)
    rows = np.random.default_rng(2).standard_normal((3 * b.model.window_bins, 1, b.n_features)).astype(np.float32)
    with OnnxRuntimeBackend(b) as ref_be:
        ref = run_backend(ref_be, rows)
    for graph in (True, False):
        be = TensorRTBackend(b, cuda_graph=graph)
        try:
            assert f"state {b.model.state_layout} ping-pong" in be.describe()
            got = np.stack([be.infer(r[None]).copy() for r in rows])
            np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)
            be.reset_state()
            np.testing.assert_allclose(be.infer(rows[0:1]), ref[0], rtol=1e-3, atol=1e-4)
            be.warmup(5)  # warm-up leaves zero state behind
            np.testing.assert_allclose(be.infer(rows[0:1]), ref[0], rtol=1e-3, atol=1e-4)
        finally:
            be.close()


def test_corrupt_engine_bytes_are_refused(gpu, bundles, tmp_path):
    from rtdecode.backends.base import BackendError
    from rtdecode.backends.tensorrt import TensorRTBackend
    from rtdecode.bundle import EngineSpec

    b = bundles["window"]
    spec = EngineSpec("x.plan", gpu.gpu_name, gpu.compute_capability, gpu.tensorrt_version)
    with pytest.raises(BackendError, match="could not deserialise"):
        TensorRTBackend(b, engine=spec, plan=b"\0" * 1024)
