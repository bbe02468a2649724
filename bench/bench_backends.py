"""Per-backend inference latency on the same student, and the ring graph against the older
streaming graph (same weights, same run).

    python -m pytest bench/bench_backends.py -p no:cacheprovider --benchmark-only -s

The student is the one `rtdecode bench` builds (4 layers, dim 64, 4 heads, 96 channels in
patches of 8 = 12 tokens per bin, W = 32 bins) with random weights, exported three ways:
window (input (1, 32, 96)), streaming in state layout ring_v1 (the default: per-layer rings
updated in place) and streaming in the older layout shift_v0 (caches of 31 bins shifted
and re-rotated every step). Backends: ONNX Runtime on one thread (the baseline; for the
ring also with every state ping-ponged), PyTorch eager on one thread, and TensorRT (fp32
engine compiled on the spot) where tensorrt, pycuda and a GPU exist.

Streaming steps are timed back to back and with 10 ms between calls (`pedantic`, the sleep
outside the timing), as the runtime calls them once per 10 ms bin: caches are colder then.
At the end the ratios old graph / ring graph are printed (medians, from this run).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

N_CH = 96
W = 32
GAP_S = 0.010  # the runtime's bin period
SPACED_ROUNDS = 300
DESIGNS = ["window", "streaming", "streaming_shift_v0"]  # "streaming": ring_v1
_MEDIANS: dict[tuple[str, str], float] = {}  # (design, how) -> median seconds


def _student(design: str):
    from offline.models.heads import BehaviorHead
    from offline.models.student import LFPStudent, StudentConfig

    scfg = StudentConfig(dim=64, n_layers=4, n_heads=4, patch_channels=8)  # rtdecode.bench's student
    scfg = replace(scfg, attn_window=W if design.startswith("streaming") else 0)
    torch.manual_seed(0)  # the same weights in every design
    student = LFPStudent(scfg, N_CH, 1, n_sessions=1).eval()
    return student, BehaviorHead(scfg.dim, 2).eval()


@pytest.fixture(scope="module", params=DESIGNS)
def setup(request, tmp_path_factory):
    from offline.export import export_bundle
    from rtdecode.dsp.design import design_chain

    design = request.param
    student, head = _student(design)
    chain = design_chain("lfp", fs=1000.0, n_channels=N_CH, line_freq=None)
    chain = chain.with_normalization(np.zeros(chain.n_features), np.ones(chain.n_features))
    layout = "shift_v0" if design == "streaming_shift_v0" else "ring_v1"
    b = export_bundle(tmp_path_factory.mktemp("bench") / design, student, head, 0, chain, W, ["x", "y"], layout=layout)
    return design, b, student, head


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    # teardown output is captured (fd 1) and dropped for a passing module: write with capture off
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        _write_ratios(tr.write_line if tr else print)


def _write_ratios(write):
    load = os.getloadavg()
    write("")
    write(f"ring graph vs older graph (ONNX Runtime, 1 thread, median per step; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):")
    for how in ("back to back", f"{GAP_S * 1e3:g} ms apart"):
        old, new = _MEDIANS.get(("streaming_shift_v0", how)), _MEDIANS.get(("streaming", how))
        if old and new:
            write(f"  {how:>14}: shift_v0 {old * 1e3:.3f} ms, ring_v1 {new * 1e3:.3f} ms, ratio {old / new:.2f}x")
    pp = _MEDIANS.get(("streaming", "ping-pong back to back"))
    if pp and ("streaming", "back to back") in _MEDIANS:
        ip = _MEDIANS["streaming", "back to back"]
        write(f"  ring_v1 in place {ip * 1e3:.3f} ms vs every state ping-pong {pp * 1e3:.3f} ms ({pp / ip:.2f}x)")


def _group(design, b):
    return f"backend-{design}-{b.model.window_bins}bins-{b.n_features}f"


def _x(b):
    shape = (1, b.model.window_bins if b.model.kind == "window" else 1, b.n_features)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _ort(b, **kw):
    from rtdecode.backends.onnxruntime import OnnxRuntimeBackend

    be = OnnxRuntimeBackend(b, threads=1, **kw)
    be.warmup(50)
    return be


def test_onnxruntime_baseline(benchmark, setup):
    design, b, _, _ = setup
    be = _ort(b)
    benchmark.group = _group(design, b)
    benchmark.name = f"onnxruntime 1 thread baseline ({design}; {be.describe()})"
    benchmark(be.infer, _x(b))
    _MEDIANS[design, "back to back"] = benchmark.stats.stats.median
    be.close()


def test_onnxruntime_spaced(benchmark, setup):
    """One step every 10 ms, as in the runtime (the sleep is not timed)."""
    design, b, _, _ = setup
    if design == "window":
        pytest.skip("the streaming graphs are compared spaced")
    be = _ort(b)
    benchmark.group = _group(design, b) + "-spaced"
    benchmark.name = f"onnxruntime 1 thread, steps {GAP_S * 1e3:g} ms apart ({design})"
    x = _x(b)
    benchmark.pedantic(be.infer, args=(x,), setup=lambda: time.sleep(GAP_S), rounds=SPACED_ROUNDS, iterations=1, warmup_rounds=5)
    _MEDIANS[design, f"{GAP_S * 1e3:g} ms apart"] = benchmark.stats.stats.median
    be.close()


def test_onnxruntime_ring_ping_pong(benchmark, setup):
    """The ring graph with every state ping-ponged (two buffers, no in-place binding)."""
    design, b, _, _ = setup
    if design != "streaming":
        pytest.skip("ring graph only")
    be = _ort(b, inplace=False)
    benchmark.group = _group(design, b)
    benchmark.name = f"onnxruntime 1 thread, ring, every state ping-pong ({be.describe()})"
    benchmark(be.infer, _x(b))
    _MEDIANS[design, "ping-pong back to back"] = benchmark.stats.stats.median
    be.close()


def test_pytorch_eager(benchmark, setup):
    from offline.export import deployable

    design, b, student, head = setup
    torch.set_num_threads(1)
    mod, ex, _ = deployable(student, head, 0, b.model.window_bins, b.model.state_layout)
    x = torch.from_numpy(_x(b))
    if design == "window":
        def step():
            with torch.no_grad():
                return mod(x)
    else:
        state = list(ex[1:])

        def step():  # carries the caches, as the runtime would
            nonlocal state
            with torch.no_grad():
                y, *state = mod(x, *state)
            return y

    for _ in range(20):
        step()
    benchmark.group = _group(design, b)
    benchmark.name = f"pytorch eager 1 thread ({design})"
    benchmark(step)


def test_tensorrt(benchmark, setup, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'rtdecode[gpu]')")
    import shutil

    from rtdecode.backends.tensorrt import TensorRTBackend, probe_host
    from rtdecode.bundle import load_bundle
    from rtdecode.compile import compile_bundle

    host, why = probe_host()
    if host is None:
        pytest.skip(why)
    design, b, _, _ = setup
    shutil.copytree(b.path, tmp_path / "b")
    compile_bundle(tmp_path / "b")
    be = TensorRTBackend(load_bundle(tmp_path / "b"))
    be.warmup(50)
    benchmark.group = _group(design, b)
    benchmark.name = f"tensorrt fp32 ({design}; {be.describe()})"
    benchmark(be.infer, _x(b))
    be.close()
