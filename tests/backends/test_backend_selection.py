"""TensorRT engine matching, refusal paths and backend selection, on a machine without a GPU.

The bundles are real (ridge decoder exported to ONNX, tests/helpers.py) and the fallback
runs real ONNX Runtime sessions. The engine files are placeholder bytes: nothing here
deserialises them; what is tested is which engine the runtime would pick and how it
refuses the others.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from rtdecode.backends import select_backend
from rtdecode.backends.base import BackendError
from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
from rtdecode.backends.tensorrt import (
    HostGPU,
    TensorRTBackend,
    engine_filename,
    engine_mismatch,
    gpu_slug,
    probe_host,
    rebuild_command,
    select_engine,
    tensorrt_unavailable_reason,
    trt_version_key,
)
from rtdecode.bundle import BundleError, EngineSpec, load_bundle, update_manifest
from tests.helpers import make_bundle

H100 = HostGPU("NVIDIA H100 80GB HBM3", "9.0", "10.3.0")
RTX4090 = HostGPU("NVIDIA GeForce RTX 4090", "8.9", "10.3.0")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("be") / "bundle")


def _with_engines(src, dst, *engines: tuple[HostGPU, str]):
    """Copy bundle `src` to `dst` and add a placeholder engine per (host, precision)."""
    shutil.copytree(src.path, dst)
    files, specs = {}, []
    for host, prec in engines:
        name = engine_filename(host.gpu_name, host.tensorrt_version, prec)
        f = dst.parent / f"{name}.src"
        f.write_bytes(b"not a real engine " + name.encode() * 64)
        files[name] = f
        specs.append(EngineSpec(name, host.gpu_name, host.compute_capability, host.tensorrt_version, prec).to_dict())
    return update_manifest(dst, lambda m: m.__setitem__("engines", specs), add_files=files)


def test_gpu_slug_and_engine_filename():
    assert gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gpu_slug("Tesla T4") == "tesla-t4"
    assert gpu_slug("  ") == "gpu"
    assert engine_filename("NVIDIA H100 80GB HBM3", "10.3.0.26", "fp16") == "engine-h100-80gb-hbm3-trt10.3.0-fp16.plan"
    assert trt_version_key("10.3.0.26") == (10, 3, 0) and trt_version_key("10.1") == (10, 1, 0)


def test_engine_mismatch_names_gpu_and_version():
    e = EngineSpec("x.plan", H100.gpu_name, "9.0", "10.3.0.26", "fp32")
    assert engine_mismatch(e, H100) is None  # the build number does not matter, major.minor.patch does
    why = engine_mismatch(e, RTX4090)
    assert "H100" in why and "RTX 4090" in why and "sm 8.9" in why and "TensorRT" not in why
    why = engine_mismatch(e, HostGPU(H100.gpu_name, "9.0", "10.4.0"))
    assert "TensorRT 10.3.0.26" in why and "TensorRT 10.4.0" in why and "sm" not in why


def test_engine_for_another_gpu_is_refused_with_the_rebuild_command(plain, tmp_path):
    b = _with_engines(plain, tmp_path / "b", (H100, "fp16"))
    eng, why = select_engine(b, RTX4090)
    assert eng is None
    assert f"`rtdecode compile {b.path} --fp16`" in why
    assert "H100" in why and "RTX 4090" in why and b.engines[0].file in why
    # another TensorRT version on the same GPU: refused too
    eng, why = select_engine(b, HostGPU(H100.gpu_name, "9.0", "10.0.1"))
    assert eng is None and "TensorRT 10.0.1" in why and f"rtdecode compile {b.path} --fp16" in why
    # the GPU it was built for: accepted
    eng, why = select_engine(b, H100)
    assert why is None and eng.file == "engine-h100-80gb-hbm3-trt10.3.0-fp16.plan"


def test_newest_matching_engine_wins_and_precision_filters(plain, tmp_path):
    b = _with_engines(plain, tmp_path / "b", (H100, "fp32"), (RTX4090, "fp32"), (H100, "fp16"))
    assert select_engine(b, H100)[0].precision == "fp16"
    assert select_engine(b, H100, "fp32")[0].precision == "fp32"
    assert select_engine(b, RTX4090)[0].gpu_name == RTX4090.gpu_name
    eng, why = select_engine(b, RTX4090, "int8")
    assert eng is None and "no int8 TensorRT engine" in why and "--int8 --calib" in why


def test_no_engine_reason_names_the_compile_command(plain):
    eng, why = select_engine(plain, H100)
    assert eng is None and "has no TensorRT engine" in why and f"`rtdecode compile {plain.path}`" in why
    assert rebuild_command("b", "fp16") == "rtdecode compile b --fp16"


def test_unavailable_reason_here_names_the_gpu_extra_and_the_foreign_engine(plain, tmp_path):
    if probe_host()[0] is not None:
        pytest.skip("this machine has TensorRT and a GPU: the no-GPU refusal cannot be observed")
    why = tensorrt_unavailable_reason(plain)
    assert "rtdecode[gpu]" in why
    b = _with_engines(plain, tmp_path / "b", (H100, "fp32"))
    why = tensorrt_unavailable_reason(b)
    assert "rtdecode[gpu]" in why and b.engines[0].file in why and "TensorRT 10.3.0" in why


def _no_gpu():
    if probe_host()[0] is not None:
        pytest.skip("this machine can run TensorRT: the CPU fallback is not taken")


def test_auto_picks_onnxruntime_and_says_why(plain, tmp_path):
    _no_gpu()
    b = _with_engines(plain, tmp_path / "b", (H100, "fp16"))
    be, why = select_backend(b, "auto")
    try:
        assert isinstance(be, OnnxRuntimeBackend)
        assert why.startswith("auto: ONNX Runtime on the CPU (") and "tensorrt" in why
        x = np.random.default_rng(0).standard_normal(be.input_shape).astype(np.float32)
        y = be.infer(x)
        assert y.shape == (2,) and np.isfinite(y).all()
    finally:
        be.close()


def test_explicit_tensorrt_raises_unless_fallback(plain, tmp_path):
    _no_gpu()
    b = _with_engines(plain, tmp_path / "b", (H100, "fp16"))
    with pytest.raises(BackendError, match=r"rtdecode\[gpu\]"):
        select_backend(b, "tensorrt")
    with pytest.raises(BackendError, match="TensorRT cannot run"):
        TensorRTBackend(b)
    be, why = select_backend(b, "tensorrt", fallback=True)
    try:
        assert isinstance(be, OnnxRuntimeBackend)
        assert why.startswith("ONNX Runtime (fallback: TensorRT cannot run:") and "rtdecode[gpu]" in why
    finally:
        be.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_engine_file_is_refused_at_bundle_load(plain, tmp_path, damage):
    b = _with_engines(plain, tmp_path / "b", (H100, "fp32"))
    f = b.path / b.engines[0].file
    data = f.read_bytes()
    if damage == "flip":
        f.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:
        f.unlink()
    with pytest.raises(BundleError) as ei:
        load_bundle(b.path)
    msg = str(ei.value)
    assert b.engines[0].file in msg
    assert ("sha256 mismatch" in msg) if damage != "delete" else ("missing" in msg)


def test_engine_entry_without_file_listing_is_refused(plain, tmp_path):
    b = _with_engines(plain, tmp_path / "b", (H100, "fp32"))
    m = json.loads((b.path / "manifest.json").read_text())
    del m["files"][b.engines[0].file]
    (b.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"engines\[0\]\.file"):
        load_bundle(b.path)


def test_cli_run_tensorrt_refuses_with_reason(plain, tmp_path):
    _no_gpu()
    b = _with_engines(plain, tmp_path / "b", (H100, "fp16"))
    r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "run", "--bundle", str(b.path), "--backend", "tensorrt",
                        "--stream", "nonexistent-stream", "--quiet"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "TensorRT cannot run" in r.stderr and "rtdecode[gpu]" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_run_auto_says_onnxruntime(plain, tmp_path):
    """`rtdecode run --backend auto` against a real LSL outlet prints the backend it chose."""
    _no_gpu()
    from tests.conftest import start_outlet, unique_name
    from tests.harness import free_address

    name = unique_name("be")
    out = start_outlet(name, channels=plain.n_channels, duration=30.0)
    try:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "run", "--bundle", str(plain.path), "--stream", name,
                            "--backend", "auto", "--duration", "1.0", "--address", free_address(),
                            "--summary", str(tmp_path / "summary.json")],
                           capture_output=True, text=True, timeout=90)  # fmt: skip
    finally:
        out.kill()
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("backend:"))
    assert line.startswith("backend: auto: ONNX Runtime on the CPU (") and "tensorrt" in line, line
    assert time.monotonic() - t0 < 60
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == line.removeprefix("backend: ")


# -- streaming state: rings updated in place (layout ring_v1), everything else ping-pong


def test_auto_runs_a_ring_bundle_in_place_with_the_same_output_as_ping_pong(tmp_path):
    """A ring_v1 streaming bundle (a real exported student): auto picks ONNX Runtime here,
    which binds each ring as input and output to one buffer (the counter and the phase
    ping-pong) and decodes exactly what all-ping-pong decodes, over three ring wraps and
    after a reset."""
    _no_gpu()
    from tests.export.students import student_bundle

    b = student_bundle(tmp_path / "ring", "streaming")[0]
    assert b.model.state_layout == "ring_v1"
    be, why = select_backend(b, "auto")
    ref_be = OnnxRuntimeBackend(b, inplace=False)
    try:
        assert isinstance(be, OnnxRuntimeBackend) and be.state_inplace and not ref_be.state_inplace
        n_rings = sum(s.inplace for s in b.model.state)
        assert n_rings == len(b.model.state) - 2 and f"{n_rings} in place, 2 ping-pong" in be.describe()
        for spec, (a, c) in zip(b.model.state, be._state):
            assert (a is c) == spec.inplace  # one buffer per ring, two for the others
        rows = np.random.default_rng(1).standard_normal((3 * b.model.window_bins + 2, 1, 1, b.n_features)).astype(np.float32)
        for _ in range(2):
            got = np.stack([be.infer(x).copy() for x in rows])
            ref = np.stack([ref_be.infer(x).copy() for x in rows])
            np.testing.assert_array_equal(got, ref)
            be.reset_state()
            ref_be.reset_state()
        assert not np.allclose(got[0], got[b.model.window_bins])  # the state carries
    finally:
        be.close()
        ref_be.close()


def _aliasing_breaks_bundle(path):
    """A streaming bundle whose manifest wrongly marks its state in place: the graph reads
    the state input after writing the output (behaviour = s_out - s = 1 when ping-ponged,
    0 when both share one buffer)."""
    import onnx
    from onnx import TensorProto, helper

    from rtdecode.bundle import ModelSpec, StateSpec, write_bundle
    from rtdecode.dsp.design import design_chain

    chain = design_chain("lfp", fs=1000.0, n_channels=4, line_freq=None)
    chain = chain.with_normalization(np.zeros(chain.n_features), np.ones(chain.n_features))
    f = chain.n_features
    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 2], [1.0, 1.0])
    nodes = [helper.make_node("Add", ["s", "one"], ["s_out"]), helper.make_node("Sub", ["s_out", "s"], ["behavior"])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 1, f]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("behavior", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 2])], [one])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path.parent / "alias.onnx"))
    spec = ModelSpec(kind="streaming", window_bins=4, state=(StateSpec("s", "s_out", (1, 2), inplace=True),),
                     opset=17, state_layout="ring_v1")  # fmt: skip
    return write_bundle(path, chain=chain, model_file=path.parent / "alias.onnx", model=spec, output_names=["a", "b"])


def test_in_place_binding_is_refused_when_it_changes_the_output(tmp_path):
    """The load check: a state marked in place whose graph would decode differently with
    one buffer runs ping-pong, and says so."""
    b = _aliasing_breaks_bundle(tmp_path / "alias")
    with OnnxRuntimeBackend(b) as be:
        assert not be.state_inplace and "refused by the load check" in be.describe()
        x = np.zeros(be.input_shape, np.float32)
        for _ in range(6):
            np.testing.assert_array_equal(be.infer(x), [1.0, 1.0])
