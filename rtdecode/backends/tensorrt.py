"""TensorRT backend (NVIDIA GPU): a prebuilt engine from the bundle, one CUDA stream.

Written against the TensorRT 10 Python API (tensor names, `set_tensor_address`,
`execute_async_v3`) and pycuda. NOT YET RUN ON HARDWARE: see README "GPU / TensorRT".

Per call: copy the window into a page-locked host buffer, then on one stream copy it
to the device, enqueue the engine, copy the output back, and synchronise. That enqueue
(copy in, execute, copy out) is captured once into a CUDA graph and replayed per call,
which removes most of the launch overhead of a small transformer. Streaming models carry
their state on the device: two buffers per state tensor that swap roles every call
(ping-pong); with graphs, two graphs are captured, one per parity, because a graph bakes
in the tensor addresses.

Both state layouts run the same way: "shift_v0" (caches shifted by the graph) and
"ring_v1" (per-layer rings, one slot written per step by a ScatterND, plus a counter and
a rotary phase). The manifest's `inplace` marks are not used here: TensorRT 10 gives no
guarantee for an engine whose input and output tensors are bound to the same address
(in-place update is offered only through IKVCacheUpdateLayer or aliased plugin I/O), so
every state ping-pongs; on the device the ring copy that ScatterND makes is a few hundred
kB per step at device bandwidth. The ring graph's operators are all in TensorRT's ONNX
parser (offline.export.check_operators, target "tensorrt").

Why cuda-python for the graph: pycuda's own stream-capture wrapper could not be confirmed
in the pycuda sources and docs available when this was written, while cuda-python's
runtime API (`cudaStreamBeginCapture`, `cudaStreamEndCapture`, `cudaGraphInstantiate`,
`cudaGraphLaunch`) is NVIDIA's documented path and the one TensorRT's own samples use. It
runs on pycuda's stream handle in the device's primary context (retained by pycuda, so
pycuda, cuda-python and TensorRT share one context). Without cuda-python, or if capture
fails, the backend enqueues directly and `describe()` says so.

The pure-Python parts (host probe, engine matching, the file name slug, the rebuild
command) are plain functions so that they are tested without a GPU.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from ..bundle import Bundle, EngineSpec
from .base import Backend, BackendError

log = logging.getLogger(__name__)

GPU_EXTRA = "pip install 'rtdecode[gpu]' (TensorRT 10 and pycuda, from NVIDIA's index with a CUDA toolkit; see README)"


# ------------------------------------------------------------------------------------------
# pure logic: names, versions, matching (tested without a GPU)


@dataclass(frozen=True)
class HostGPU:
    """What an engine must have been built for: this machine's GPU and TensorRT."""

    gpu_name: str
    compute_capability: str  # "8.9"
    tensorrt_version: str  # trt.__version__


def gpu_slug(name: str) -> str:
    """A file-name-safe GPU name: 'NVIDIA GeForce RTX 4090' -> 'geforce-rtx-4090'."""
    s = re.sub(r"^nvidia[\s_-]*", "", name.strip().lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s or "gpu"


def trt_version_key(version: str) -> tuple[int, ...]:
    """Major.minor.patch of a TensorRT version string ('10.3.0.26' -> (10, 3, 0)).

    A serialised engine runs only under the TensorRT version that built it (engines are
    not built version-compatible here), so these three numbers must match."""
    nums = [int(x) for x in re.findall(r"\d+", version)[:3]]
    return tuple(nums + [0] * (3 - len(nums)))


def engine_filename(gpu_name: str, tensorrt_version: str, precision: str) -> str:
    v = ".".join(str(x) for x in trt_version_key(tensorrt_version))
    return f"engine-{gpu_slug(gpu_name)}-trt{v}-{precision}.plan"


def rebuild_command(bundle_path, precision: str = "fp32") -> str:
    flag = {"fp16": " --fp16", "int8": " --int8 --calib CALIB.npz"}.get(precision, "")
    return f"rtdecode compile {bundle_path}{flag}"


def engine_mismatch(e: EngineSpec, host: HostGPU) -> str | None:
    """Why engine `e` cannot run on `host`, or None when it can."""
    why = []
    if e.compute_capability != host.compute_capability or gpu_slug(e.gpu_name) != gpu_slug(host.gpu_name):
        why.append(f"built for {e.gpu_name} (sm {e.compute_capability}), this GPU is {host.gpu_name} (sm {host.compute_capability})")
    if trt_version_key(e.tensorrt_version) != trt_version_key(host.tensorrt_version):
        why.append(f"built with TensorRT {e.tensorrt_version}, this is TensorRT {host.tensorrt_version}")
    return "; ".join(why) or None


def select_engine(bundle: Bundle, host: HostGPU, precision: str | None = None) -> tuple[EngineSpec | None, str | None]:
    """The engine of `bundle` that runs on `host` (the most recently compiled one when
    several match; only `precision` if given), else (None, reason with the rebuild command)."""
    engines = [e for e in bundle.engines if precision in (None, e.precision)]
    if not engines:
        what = "no TensorRT engine" if precision is None else f"no {precision} TensorRT engine"
        return None, (f"bundle {bundle.path} has {what} (manifest.json engines): build one on this GPU with "
                      f"`{rebuild_command(bundle.path, precision or 'fp32')}`")  # fmt: skip
    for e in reversed(engines):  # compile appends: newest last
        if engine_mismatch(e, host) is None:
            return e, None
    reasons = "; ".join(f"{e.file}: {engine_mismatch(e, host)}" for e in engines)
    prec = precision or engines[-1].precision
    return None, (f"no engine in {bundle.path} fits this machine ({reasons}): rebuild it here with "
                  f"`{rebuild_command(bundle.path, prec)}`")  # fmt: skip


def probe_host(device: int = 0) -> tuple[HostGPU | None, str | None]:
    """(HostGPU, None) when tensorrt, pycuda and an NVIDIA GPU are present, else (None, reason)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        return None, f"the tensorrt module is not installed ({e}): {GPU_EXTRA}"
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        return None, f"pycuda is not installed ({e}): {GPU_EXTRA}"
    try:
        cuda.init()
        n = cuda.Device.count()
    except Exception as e:  # pycuda raises its own types (no driver, no device)
        return None, f"no usable NVIDIA GPU (CUDA driver: {e})"
    if n <= device:
        return None, f"no NVIDIA GPU with index {device} ({n} found)"
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return HostGPU(dev.name(), f"{major}.{minor}", trt.__version__), None


def tensorrt_unavailable_reason(bundle: Bundle, device: int = 0) -> str | None:
    """None when the TensorRT backend can run `bundle` here; else why not, and what to do."""
    host, why = probe_host(device)
    if host is None:
        if bundle.engines:
            e = bundle.engines[-1]
            why += f" (the bundle's engine {e.file} is for {e.gpu_name}, sm {e.compute_capability}, TensorRT {e.tensorrt_version})"
        return why
    return select_engine(bundle, host)[1]


# ------------------------------------------------------------------------------------------
# the backend (needs a GPU)


def _cudart():
    """cuda-python's runtime module (new layout first), or None."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            return None
    return cudart


def _check(ret, what: str):
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    """Runs the bundle's engine for this GPU. Use it from the thread that created it (the
    CUDA context is made current there)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, *, threads: int = 1, device: int = 0, engine: EngineSpec | None = None,
                 plan: bytes | None = None, cuda_graph: bool = True):  # fmt: skip
        """`engine`/`plan`: run these instead of the bundle's matching engine (compile's check)."""
        super().__init__(bundle, threads=threads, device=device)
        if plan is None:
            host, why = probe_host(device)
            if host is None:
                raise BackendError(f"TensorRT cannot run: {why}")
            engine, why = select_engine(bundle, host)
            if engine is None:
                raise BackendError(f"TensorRT cannot run: {why}")
            plan = (bundle.path / engine.file).read_bytes()
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda, self._trt, self.engine_spec = cuda, trt, engine
        cuda.init()
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        self._graphs: list = []
        self._graph_note = "off"
        self._dev: list = []
        try:
            self._setup(plan)
            if cuda_graph:
                self._capture_graphs()
            self.reset_state()
        except BaseException:
            self.close()
            raise

    # -- setup

    def _setup(self, plan: bytes) -> None:
        cuda, trt, m = self._cuda, self._trt, self.bundle.model
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError(f"TensorRT {trt.__version__} could not deserialise the engine "
                               f"({self.engine_spec.file if self.engine_spec else 'plan'}): it is corrupt or was built by "
                               f"another TensorRT version; rebuild it with `{rebuild_command(self.bundle.path)}`")  # fmt: skip
        eng = self._engine
        io = {}
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            io[name] = (eng.get_tensor_mode(name), tuple(eng.get_tensor_shape(name)), eng.get_tensor_dtype(name))
        want = {m.input_name: (trt.TensorIOMode.INPUT, self.input_shape), m.output_name: (trt.TensorIOMode.OUTPUT, (1, self.n_outputs))}
        for s in m.state:
            want[s.input] = (trt.TensorIOMode.INPUT, s.shape)
            want[s.output] = (trt.TensorIOMode.OUTPUT, s.shape)
        for name, (mode, shape) in want.items():
            if name not in io:
                raise BackendError(f"the engine has no tensor {name!r} (it has {sorted(io)}): it was not built from this bundle's model.onnx; rebuild it with `{rebuild_command(self.bundle.path)}`")
            gmode, gshape, gdtype = io[name]
            if gmode != mode or gshape != tuple(shape):
                raise BackendError(f"engine tensor {name!r} is {gmode} {gshape}, the manifest says {mode} {tuple(shape)}: rebuild the engine with `{rebuild_command(self.bundle.path)}`")
            if trt.nptype(gdtype) != np.float32:
                raise BackendError(f"engine tensor {name!r} is {gdtype}, expected float32")
        self._context = eng.create_execution_context()
        self._stream = cuda.Stream()
        # page-locked host buffers for what crosses the bus; device buffers for everything
        self._h_in = cuda.pagelocked_empty(self.input_shape, np.float32)
        self._h_out = cuda.pagelocked_empty((1, self.n_outputs), np.float32)
        self._d_in = self._alloc(self._h_in.nbytes)
        self._d_out = self._alloc(self._h_out.nbytes)
        self._state = [(s, self._alloc(4 * int(np.prod(s.shape))), self._alloc(4 * int(np.prod(s.shape)))) for s in m.state]
        self._state_bytes = [4 * int(np.prod(s.shape)) for s in m.state]
        self._context.set_tensor_address(m.input_name, int(self._d_in))
        self._context.set_tensor_address(m.output_name, int(self._d_out))
        self._flip = 0

    def _alloc(self, nbytes: int):
        d = self._cuda.mem_alloc(max(int(nbytes), 4))
        self._dev.append(d)
        return d

    def _bind_state(self, parity: int) -> None:
        for s, a, b in self._state:
            src, dst = (a, b) if parity == 0 else (b, a)
            self._context.set_tensor_address(s.input, int(src))
            self._context.set_tensor_address(s.output, int(dst))

    def _enqueue(self, parity: int) -> None:
        """Copy in, execute, copy out on the stream (no synchronisation)."""
        cuda, st = self._cuda, self._stream
        self._bind_state(parity)
        cuda.memcpy_htod_async(self._d_in, self._h_in, st)
        if not self._context.execute_async_v3(st.handle):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        cuda.memcpy_dtoh_async(self._h_out, self._d_out, st)

    def _capture_graphs(self) -> None:
        cudart = _cudart()
        if cudart is None:
            self._graph_note = "off (cuda-python not installed: pip install cuda-python)"
            return
        h = self._stream.handle
        graphs = []
        try:
            for parity in range(2 if self._state else 1):
                # TensorRT needs one ordinary enqueue before capture (deferred set-up work)
                self._enqueue(parity)
                self._stream.synchronize()
                _check(cudart.cudaStreamBeginCapture(h, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
                try:
                    self._enqueue(parity)
                finally:
                    graph = _check(cudart.cudaStreamEndCapture(h), "cudaStreamEndCapture")
                exe = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
                graphs.append((graph, exe))
        except Exception as e:  # capture is an optimisation: run without it, and say so
            log.warning("CUDA graph capture failed (%s); enqueueing directly", e)
            self._graph_note = f"off (capture failed: {e})"
            self._destroy_graphs(graphs)
            return
        self._graphs, self._cudart_mod = graphs, cudart
        self._graph_note = f"on ({len(graphs)} graph{'s' if len(graphs) > 1 else ''})"

    def _destroy_graphs(self, graphs) -> None:
        cudart = _cudart()
        for graph, exe in graphs:
            cudart.cudaGraphExecDestroy(exe)
            cudart.cudaGraphDestroy(graph)

    # -- the interface

    def infer(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._h_in, x, casting="no")
        f = self._flip
        if self._graphs:
            _check(self._cudart_mod.cudaGraphLaunch(self._graphs[f if self._state else 0][1], self._stream.handle), "cudaGraphLaunch")
        else:
            self._enqueue(f)
        self._stream.synchronize()
        if self._state:
            self._flip = 1 - f
        return self._h_out[0]

    def reset_state(self) -> None:
        for (_, a, b), n in zip(self._state, self._state_bytes):
            self._cuda.memset_d32(a, 0, n // 4)
            self._cuda.memset_d32(b, 0, n // 4)
        self._flip = 0

    def describe(self) -> str:
        e = self.engine_spec
        what = f"{e.file} ({e.precision}, {e.gpu_name} sm {e.compute_capability})" if e else "engine"
        st = f", state {self.bundle.model.state_layout} ping-pong" if self._state else ""
        return f"tensorrt {self._trt.__version__} {what}, cuda graph {self._graph_note}{st}"

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        try:
            if self._graphs:
                self._destroy_graphs(self._graphs)
            self._graphs = []
            for attr in ("_context", "_engine", "_runtime"):
                if hasattr(self, attr):
                    delattr(self, attr)
            for d in self._dev:
                d.free()
            self._dev = []
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
