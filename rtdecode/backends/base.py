"""The inference backend interface: small on purpose (DESIGN.md).

A backend runs the bundle's ONNX graph (or an engine built from it) on one input:

- window model: ``x`` is (1, window_bins, n_features) float32, C-contiguous;
- streaming model: ``x`` is (1, 1, n_features); the backend carries the state
  tensors between calls (ping-pong buffers, no allocation) and `reset_state` zeroes them.

``infer`` returns a float32 view of shape (n_outputs,) into a buffer the backend owns,
valid until the next call. Adding a backend = one module + one line in `REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..bundle import Bundle


class BackendError(RuntimeError):
    """A backend that cannot run here, with the reason and the remedy."""


class Backend(ABC):
    name: str = "?"

    def __init__(self, bundle: Bundle, *, threads: int = 1, device: int = 0):
        self.bundle = bundle
        self.threads = threads
        self.device = device
        m = bundle.model
        self.input_shape = (1, m.window_bins if m.kind == "window" else 1, bundle.n_features)
        self.n_outputs = bundle.n_outputs

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def reset_state(self) -> None:
        """Zero recurrent state (streaming models); a no-op for window models."""

    def warmup(self, n: int = 20) -> None:
        """Run a few inferences so the first real bin pays no start-up cost."""
        x = np.zeros(self.input_shape, dtype=np.float32)
        for _ in range(n):
            self.infer(x)
        self.reset_state()

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
