"""Inference backends: a registry and `select_backend` (auto picks TensorRT when it can run)."""

from __future__ import annotations

import importlib
import logging

from ..bundle import Bundle
from .base import Backend, BackendError

log = logging.getLogger(__name__)

# name -> "module:Class"; adding a backend is one line here plus its module
REGISTRY = {
    "onnxruntime": "rtdecode.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "rtdecode.backends.tensorrt:TensorRTBackend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; choose one of {sorted(REGISTRY)} or 'auto'")
    mod, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def select_backend(bundle: Bundle, name: str = "auto", *, fallback: bool = False, threads: int = 1, device: int = 0) -> tuple[Backend, str]:
    """Build the backend; return it with a one-line reason for the choice.

    ``auto``: TensorRT when a GPU, TensorRT and an engine for this GPU are present,
    else ONNX Runtime. An explicit ``tensorrt`` that cannot run raises, unless
    ``fallback`` is set, in which case ONNX Runtime runs and the reason says why.
    """
    if name == "auto":
        why = None
        try:
            from .tensorrt import TensorRTBackend, tensorrt_unavailable_reason

            why = tensorrt_unavailable_reason(bundle)
            if why is None:
                return TensorRTBackend(bundle, device=device), "auto: TensorRT (GPU and a matching engine found)"
        except ImportError as e:  # module missing entirely
            why = str(e)
        except BackendError as e:
            why = str(e)
        be = backend_class("onnxruntime")(bundle, threads=threads, device=device)
        return be, f"auto: ONNX Runtime on the CPU ({why})"
    if name == "tensorrt" and fallback:
        try:
            return backend_class("tensorrt")(bundle, device=device), "TensorRT"
        except BackendError as e:
            log.warning("TensorRT refused: %s; falling back to ONNX Runtime", e)
            return backend_class("onnxruntime")(bundle, threads=threads), f"ONNX Runtime (fallback: {e})"
    return backend_class(name)(bundle, threads=threads, device=device), name


__all__ = ["Backend", "BackendError", "REGISTRY", "backend_class", "select_backend"]
