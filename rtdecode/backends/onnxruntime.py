"""ONNX Runtime backend (CPU): the working default everywhere without a GPU.

Zero allocation and no binding per call: every input and output is bound once, by
pointer (IOBinding), to arrays this object owns; `infer` copies the features into the
bound input buffer and runs. Streaming-model state:

- a state marked `inplace` in the manifest (the rings of layout "ring_v1": the graph reads
  the input only through the ScatterND that writes the newest slot) is bound as input and
  output to the same buffer, so the ring is updated in place and never copied;
- any other state (the counters; every cache of the older layout "shift_v0") ping-pongs
  between two buffers: two bindings, one per parity, prepared once and used in turn.

In-place binding relies on ONNX Runtime writing a ScatterND's output over its input when
both are the same buffer, which it does but does not document. So at load a streaming
model with in-place state runs a few steps past one ring wrap both ways (in place, and all
ping-pong) and keeps in place only when the outputs agree; `describe()` says which.
"""

from __future__ import annotations

import logging

import numpy as np

from ..bundle import Bundle
from .base import Backend, BackendError

log = logging.getLogger(__name__)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 1, device: int = 0, inplace: bool = True):
        """`inplace=False`: ping-pong every state (the manifest's `inplace` marks ignored)."""
        super().__init__(bundle, threads=threads, device=device)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads <= 1 else "1")
        try:
            self.session = ort.InferenceSession(str(bundle.model_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendError(
                f"ONNX Runtime cannot load {bundle.model_path}: {e}. The file may be truncated or use an "
                "operator this onnxruntime does not support: rebuild the bundle or upgrade onnxruntime"
            ) from e
        m = bundle.model
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        for name, where in [(m.input_name, ins), *[(s.input, ins) for s in m.state]]:
            if name not in where:
                raise BackendError(f"{bundle.model_path}: graph has no input {name!r} (it has {sorted(ins)}); the manifest's model section does not match the graph")
        for name in [m.output_name, *[s.output for s in m.state]]:
            if name not in outs:
                raise BackendError(f"{bundle.model_path}: graph has no output {name!r} (it has {sorted(outs)}); the manifest's model section does not match the graph")
        self._x = np.zeros(self.input_shape, dtype=np.float32)
        self._out = np.zeros((1, self.n_outputs), dtype=np.float32)
        self._inplace = bool(inplace) and any(s.inplace for s in m.state)
        self._note = ""
        self._bind(self._inplace)
        if self._inplace:
            self._check_inplace()

    # -- binding

    def _bind(self, inplace: bool) -> None:
        """State buffers [a, b] per state (b is a for in-place state) and the two bindings."""
        m = self.bundle.model
        self._state = []
        for s in m.state:
            a = np.zeros(s.shape, np.float32)
            self._state.append([a, a if (inplace and s.inplace) else np.zeros(s.shape, np.float32)])
        self._ios = []
        for parity in (0, 1):
            io = self.session.io_binding()
            io.bind_input(m.input_name, "cpu", 0, np.float32, self._x.shape, self._x.ctypes.data)
            io.bind_output(m.output_name, "cpu", 0, np.float32, self._out.shape, self._out.ctypes.data)
            for spec, (a, b) in zip(m.state, self._state):
                src, dst = (a, b) if parity == 0 else (b, a)
                io.bind_input(spec.input, "cpu", 0, np.float32, src.shape, src.ctypes.data)
                io.bind_output(spec.output, "cpu", 0, np.float32, dst.shape, dst.ctypes.data)
            self._ios.append(io)
            if not m.state:
                break
        self._flip = 0
        self._inplace = inplace
        self._note = ""
        if m.state:
            n_in = sum(1 for s in m.state if inplace and s.inplace)
            self._note = f", state {m.state_layout}: {n_in} in place, {len(m.state) - n_in} ping-pong"

    def _run_steps(self, xs: np.ndarray) -> np.ndarray:
        self.reset_state()
        return np.stack([self.infer(x).copy() for x in xs])

    def _check_inplace(self) -> None:
        """Keep in-place binding only if it decodes what all-ping-pong decodes, over a ring
        wrap (window + 3 steps of random features)."""
        xs = np.random.default_rng(0).standard_normal((self.bundle.model.window_bins + 3, *self.input_shape)).astype(np.float32)
        got = self._run_steps(xs)
        self._bind(False)
        ref = self._run_steps(xs)
        err = float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-3 * (np.abs(ref).max() + 1e-12))))
        if err <= 1e-5:
            self._bind(True)
        else:
            log.warning("ONNX Runtime did not update the state in place correctly (rel. error %.1e against "
                        "ping-pong): ping-pong for every state", err)  # fmt: skip
            self._note += " (in place refused by the load check)"
        self.reset_state()

    # -- the interface

    def infer(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._x, x, casting="same_kind")
        f = self._flip
        self.session.run_with_iobinding(self._ios[f])
        if self._state:
            self._flip = 1 - f
        return self._out[0]

    @property
    def state_inplace(self) -> bool:
        """Whether the in-place states are bound in place (False: every state ping-pongs)."""
        return self._inplace

    def reset_state(self) -> None:
        for a, b in self._state:
            a.fill(0.0)
            b.fill(0.0)
        self._flip = 0

    def describe(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]} threads={self.threads}{self._note}"
