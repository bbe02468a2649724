"""Per-backend inference latency on the same student, as ratios to ONNX Runtime (same run).

    python -m pytest bench/bench_backends.py -p no:cacheprovider --benchmark-only

The student is configs/distill_default.toml's size (4 layers, dim 64, 4 heads, 32
channels in patches of 8, W = 32 bins) with random weights, in both designs: window
(input (1, 32, 32)) and streaming (input (1, 1, 32) + key/value caches of 31 bins).
Backends: ONNX Runtime on one thread (the baseline), PyTorch eager on one thread, and
TensorRT (fp32 engine compiled on the spot) where tensorrt, pycuda and a GPU exist.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CONFIG = Path(__file__).parents[1] / "configs" / "distill_default.toml"
N_CH = 32


def _student(design: str):
    from offline.models.heads import BehaviorHead
    from offline.models.student import LFPStudent
    from offline.train.config import load_config

    cfg = load_config(CONFIG)
    scfg = replace(cfg.student, attn_window=cfg.window_bins if design == "streaming" else 0)
    torch.manual_seed(0)
    student = LFPStudent(scfg, N_CH, 1, n_sessions=1).eval()
    return student, BehaviorHead(scfg.dim, 2).eval(), cfg.window_bins


@pytest.fixture(scope="module", params=["window", "streaming"])
def setup(request, tmp_path_factory):
    from offline.export import export_bundle
    from rtdecode.dsp.design import design_chain

    design = request.param
    student, head, w = _student(design)
    chain = design_chain("lfp", fs=1000.0, n_channels=N_CH, line_freq=None)
    chain = chain.with_normalization(np.zeros(chain.n_features), np.ones(chain.n_features))
    b = export_bundle(tmp_path_factory.mktemp("bench") / design, student, head, 0, chain, w, ["x", "y"])
    return design, b, student, head


def _group(design, b):
    return f"backend-{design}-{b.model.window_bins}bins-{b.n_features}f"


def _x(b):
    shape = (1, b.model.window_bins if b.model.kind == "window" else 1, b.n_features)
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_onnxruntime_baseline(benchmark, setup):
    from rtdecode.backends.onnxruntime import OnnxRuntimeBackend

    design, b, _, _ = setup
    be = OnnxRuntimeBackend(b, threads=1)
    be.warmup()
    benchmark.group = _group(design, b)
    benchmark.name = f"onnxruntime 1 thread baseline ({design})"
    benchmark(be.infer, _x(b))
    be.close()


def test_pytorch_eager(benchmark, setup):
    from offline.export import deployable

    design, b, student, head = setup
    torch.set_num_threads(1)
    mod, ex, _ = deployable(student, head, 0, b.model.window_bins)
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
