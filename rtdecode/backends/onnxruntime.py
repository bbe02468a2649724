"""ONNX Runtime backend (CPU): the working default everywhere without a GPU.

Zero allocation per call: inputs and outputs are bound by pointer (IOBinding) to
arrays this object owns; streaming-model state ping-pongs between two buffers.
"""

from __future__ import annotations

import numpy as np

from ..bundle import Bundle
from .base import Backend, BackendError


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 1, device: int = 0):
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
        self._out = np.zeros((1, self.n_outputs), dtype=np.float32)
        self._state = [[np.zeros(s.shape, np.float32), np.zeros(s.shape, np.float32)] for s in m.state]
        self._flip = 0
        self._io = self.session.io_binding()
        self._io.bind_output(m.output_name, "cpu", 0, np.float32, self._out.shape, self._out.ctypes.data)

    def infer(self, x: np.ndarray) -> np.ndarray:
        io = self._io
        m = self.bundle.model
        io.bind_input(m.input_name, "cpu", 0, np.float32, x.shape, x.ctypes.data)
        if self._state:
            f = self._flip
            for spec, (a, b) in zip(m.state, self._state):
                src, dst = (a, b) if f == 0 else (b, a)
                io.bind_input(spec.input, "cpu", 0, np.float32, src.shape, src.ctypes.data)
                io.bind_output(spec.output, "cpu", 0, np.float32, dst.shape, dst.ctypes.data)
            self._flip = 1 - f
        self.session.run_with_iobinding(io)
        return self._out[0]

    def reset_state(self) -> None:
        for a, b in self._state:
            a.fill(0.0)
            b.fill(0.0)
        self._flip = 0

    def describe(self) -> str:
        return f"onnxruntime {self.session.get_providers()[0]} threads={self.threads}"
