"""`rtdecode compile`: build a TensorRT engine from a bundle's ONNX and store it in the bundle.

Written against the TensorRT 10 Python API and pycuda; NOT YET RUN ON HARDWARE (README
"GPU / TensorRT"). Steps: parse model.onnx (errors name the node and operator), one
optimisation profile at the bundle's fixed input shapes, a workspace limit, an optional
timing cache (loaded and saved), FP16 / INT8 (entropy calibration on an .npz of feature
windows), serialise, check the engine against ONNX Runtime (tolerance per precision),
then add `engine-<gpu>-trt<version>-<precision>.plan` to the bundle with the GPU name,
compute capability, TensorRT version and the parity result in the manifest.

Everything that does not need a GPU (argument checks, calibration data, reference
outputs, tolerances, the error metric) is a plain function, tested on any machine.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .backends.base import BackendError
from .backends.tensorrt import GPU_EXTRA, engine_filename, probe_host
from .bundle import Bundle, EngineSpec, load_bundle, update_manifest

log = logging.getLogger(__name__)

# max relative error of the engine against ONNX Runtime, per precision
PARITY_TOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}


class CompileError(BackendError):
    """An engine that cannot be built or fails its check; says why and what to do."""


def parity_tolerance(precision: str) -> float:
    if precision not in PARITY_TOL:
        raise CompileError(f"unknown precision {precision!r}; one of {sorted(PARITY_TOL)}")
    return PARITY_TOL[precision]


def precision_of(fp16: bool, int8: bool) -> str:
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def rel_error(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs, max relative) error of `a` against `ref`; relative to |ref| with a floor
    of 1e-3 of max |ref| (the same metric as offline.export.parity)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    err = np.abs(a - ref)
    rel = err / (np.abs(ref) + 1e-3 * (np.abs(ref).max() + 1e-12))
    return float(err.max()), float(rel.max())


# ------------------------------------------------------------------------------------------
# inputs: calibration / check windows and the ONNX Runtime reference (no GPU needed)


def load_feature_windows(bundle: Bundle, path: str | Path) -> np.ndarray:
    """Feature windows from an .npz, as (N, *input shape[1:]) float32.

    The file holds `features` (or a single array): (N, W, F) windows, or (T, F) rows that
    are cut into windows (window models, stride W // 2) or used one row per step
    (streaming models). Refuses a feature count or window length the bundle does not use."""
    path = Path(path)
    if not path.is_file():
        raise CompileError(f"calibration file {path} does not exist")
    with np.load(path) as z:
        keys = list(z.keys())
        if "features" in z:
            x = z["features"]
        elif len(keys) == 1:
            x = z[keys[0]]
        else:
            raise CompileError(f"{path}: no 'features' array (found {keys}); save it with np.savez(path, features=...)")
    x = np.asarray(x, np.float32)
    m, f = bundle.model, bundle.n_features
    w = m.window_bins if m.kind == "window" else 1
    if x.ndim not in (2, 3) or x.shape[-1] != f:
        raise CompileError(f"{path}: features have shape {x.shape}, expected (N, {w}, {f}) windows or (T, {f}) rows for this bundle")
    if x.ndim == 2:
        if m.kind == "streaming":
            x = x[:, None, :]
        else:
            if len(x) < w:
                raise CompileError(f"{path}: {len(x)} rows, a window needs {w}")
            starts = range(0, len(x) - w + 1, max(1, w // 2))
            x = np.stack([x[s : s + w] for s in starts])
    if x.shape[1] != w:
        raise CompileError(f"{path}: windows of {x.shape[1]} bins, the bundle's model takes {w}")
    if not np.isfinite(x).all():
        raise CompileError(f"{path}: features contain NaN or inf")
    return np.ascontiguousarray(x)


def check_inputs(bundle: Bundle, calib: np.ndarray | None = None, n_random: int = 32, seed: int = 0) -> np.ndarray:
    """Windows for the engine check: the recorded ones (calibration file), then random
    N(0, 1) ones (features are z-scored, so that is their scale)."""
    m = bundle.model
    shape = (1, m.window_bins if m.kind == "window" else 1, bundle.n_features)
    rnd = np.random.default_rng(seed).standard_normal((n_random, *shape[1:])).astype(np.float32)
    return rnd if calib is None else np.concatenate([calib[:256], rnd])


def run_backend(backend, windows: np.ndarray) -> np.ndarray:
    """Outputs (N, n_outputs) of `backend` on windows (N, W, F); a streaming model runs them
    as one sequence from zero state."""
    backend.reset_state()
    out = np.stack([backend.infer(w[None]).copy() for w in windows])
    backend.reset_state()
    return out


def calibration_feeds(bundle: Bundle, windows: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One feed (input name -> array) per calibration step. Streaming models need their
    state inputs too: ONNX Runtime runs the sequence and records the state at each step,
    so INT8 ranges are calibrated on realistic caches, not zeros."""
    m = bundle.model
    if m.kind == "window":
        return [{m.input_name: w[None]} for w in windows]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(bundle.model_path), so, providers=["CPUExecutionProvider"])
    state = {s.input: np.zeros(s.shape, np.float32) for s in m.state}
    feeds = []
    for w in windows:
        feed = {m.input_name: w[None], **state}
        feeds.append(feed)
        outs = sess.run([s.output for s in m.state], feed)
        state = {s.input: o for s, o in zip(m.state, outs)}
    return feeds


# ------------------------------------------------------------------------------------------
# the build (needs TensorRT and a GPU)


def _import_gpu():
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt as trt
    except ImportError as e:
        raise CompileError(f"rtdecode compile needs TensorRT and pycuda ({e}): {GPU_EXTRA}") from e
    return trt


def _parser_errors(parser, onnx_path: Path) -> str:
    """Parser errors with the ONNX node (name, operator) each one is about."""
    try:
        import onnx

        nodes = list(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    except Exception:  # the file itself may be what is broken
        nodes = []
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        idx = e.node()
        name = e.node_name() if hasattr(e, "node_name") else ""
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        if 0 <= idx < len(nodes):
            name, op = name or nodes[idx].name, op or nodes[idx].op_type
        lines.append(f"node {idx} {name!r} (operator {op or '?'}): {e.code()}: {e.desc()}")
    return "; ".join(lines) or "no parser error recorded"


def _make_calibrator(trt, feeds: list[dict[str, np.ndarray]], cache_path: Path | None):
    import pycuda.driver as cuda

    class Calibrator(trt.IInt8EntropyCalibrator2):
        """Entropy calibration, batch 1, one step per feed (TensorRT 10: implicit INT8
        calibration is deprecated but supported; explicit Q/DQ is the future path)."""

        def __init__(self):
            super().__init__()
            self.feeds, self.i = feeds, 0
            self.dev = {k: cuda.mem_alloc(v.nbytes) for k, v in feeds[0].items()}

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self.i >= len(self.feeds):
                return None
            feed = self.feeds[self.i]
            self.i += 1
            for k in names:
                cuda.memcpy_htod(self.dev[k], np.ascontiguousarray(feed[k]))
            return [int(self.dev[k]) for k in names]

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(bundle: Bundle, *, precision: str, workspace_mb: int, timing_cache: str | Path | None,
                 calib_feeds: list | None = None) -> bytes:  # fmt: skip
    """Serialised engine bytes for `bundle`'s model.onnx."""
    trt = _import_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    onnx_path = bundle.model_path
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise CompileError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {_parser_errors(parser, onnx_path)}. "
                           "Re-export with an operator TensorRT supports (offline.export.SUPPORTED_OPS)")  # fmt: skip
    m = bundle.model
    fixed = {m.input_name: (1, m.window_bins if m.kind == "window" else 1, bundle.n_features), **{s.input: s.shape for s in m.state}}
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(fixed.get(t.name, tuple(t.shape)))
        if any(d < 0 for d in shape):
            raise CompileError(f"input {t.name!r} has a dynamic shape {tuple(t.shape)} the manifest does not fix")
        profile.set_shape(t.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; building anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, calib_feeds, None)
        config.set_calibration_profile(profile)
    cache = None
    if timing_cache is not None:
        tc = Path(timing_cache)
        cache = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        if not config.set_timing_cache(cache, False):
            raise CompileError(f"TensorRT rejected the timing cache {tc} (another TensorRT version or GPU?): delete it")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(f"TensorRT {trt.__version__} failed to build the engine (see the TensorRT log above); "
                           f"try a larger --workspace-mb than {workspace_mb}")  # fmt: skip
    if timing_cache is not None:
        data = config.get_timing_cache().serialize()
        tmp = Path(str(timing_cache) + ".tmp")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, timing_cache)
    return bytes(serialized)


def check_engine(bundle: Bundle, plan: bytes, engine: EngineSpec, windows: np.ndarray, device: int = 0) -> dict:
    """Engine vs ONNX Runtime on `windows`; raises CompileError above the precision's tolerance."""
    from .backends.onnxruntime import OnnxRuntimeBackend
    from .backends.tensorrt import TensorRTBackend

    with OnnxRuntimeBackend(bundle) as ref_be:
        ref = run_backend(ref_be, windows)
    trt_be = TensorRTBackend(bundle, device=device, engine=engine, plan=plan)
    try:
        got = run_backend(trt_be, windows)
        graph = trt_be.describe()
    finally:
        trt_be.close()
    max_abs, max_rel = rel_error(got, ref)
    tol = parity_tolerance(engine.precision)
    res = {"reference": "onnxruntime", "n_windows": int(len(windows)), "max_abs_error": max_abs,
           "max_rel_error": max_rel, "tolerance_rel": tol, "backend": graph}  # fmt: skip
    if not np.isfinite(max_rel) or max_rel > tol:
        raise CompileError(f"the {engine.precision} engine differs from ONNX Runtime by {max_rel:.2e} relative (max abs "
                           f"{max_abs:.2e}) > {tol:.0e} on {len(windows)} windows: not stored. Try fp32 (no --fp16/--int8), "
                           "or more representative --calib data for int8")  # fmt: skip
    return res


def compile_bundle(bundle: str | Path, *, fp16: bool = False, int8: bool = False, calib: str | Path | None = None,
                   workspace_mb: int = 1024, timing_cache: str | Path | None = None, check: bool = True,
                   device: int = 0) -> EngineSpec:  # fmt: skip
    """Build, check and store an engine for this machine's GPU; return its EngineSpec."""
    b = load_bundle(bundle)
    precision = precision_of(fp16, int8)
    if int8 and not calib:
        raise CompileError("--int8 needs --calib FILE.npz: feature windows to calibrate on (np.savez(path, features=...))")
    if workspace_mb < 16:
        raise CompileError(f"--workspace-mb {workspace_mb} is too small (>= 16)")
    calib_windows = load_feature_windows(b, calib) if calib else None
    _import_gpu()
    host, why = probe_host(device)
    if host is None:
        raise CompileError(f"cannot compile here: {why}")
    feeds = calibration_feeds(b, calib_windows) if int8 else None
    plan = build_engine(b, precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache, calib_feeds=feeds)
    spec = EngineSpec(file=engine_filename(host.gpu_name, host.tensorrt_version, precision), gpu_name=host.gpu_name,
                      compute_capability=host.compute_capability, tensorrt_version=host.tensorrt_version,
                      precision=precision)  # fmt: skip
    parity = {"checked": False}
    if check:
        parity = {"checked": True, **check_engine(b, plan, spec, check_inputs(b, calib_windows), device)}
    spec = EngineSpec(**{**spec.to_dict(), "parity": parity})
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / spec.file
        f.write_bytes(plan)

        def mutate(manifest: dict) -> None:
            manifest["engines"] = [e for e in manifest.get("engines") or [] if e["file"] != spec.file] + [spec.to_dict()]

        update_manifest(b.path, mutate, add_files={spec.file: f})
    log.info("stored %s in %s", spec.file, b.path)
    return spec
