"""ONNX export of the deployable student + head, parity check, bundle.

Exporter: `torch.onnx.export(..., dynamo=False)` (the TorchScript exporter). It writes
one self-contained .onnx file (no external data) whose shapes are all fixed, which is
what the runtime and TensorRT want; the dynamo exporter also works on these models
but writes external data and adds nothing here.

Window design: features (1, W, F) -> behavior (1, n_out), the newest bin decoded.
Streaming design: features (1, 1, F) + k_cache, v_cache (L, 1, W-1, P, D) + n_seen (1,)
-> behavior (1, n_out) + k_cache_out, v_cache_out, n_seen_out (the runtime ping-pongs
the states by name, `rtdecode.bundle.StateSpec`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rtdecode.bundle import Bundle, ModelSpec, StateSpec, write_bundle
from rtdecode.dsp import ChainSpec

from .models.heads import BehaviorHead, StreamingDecoder, WindowDecoder
from .models.student import LFPStudent

STATE_NAMES = (("k_cache", "k_cache_out"), ("v_cache", "v_cache_out"), ("n_seen", "n_seen_out"))


class ExportError(RuntimeError):
    pass


def deployable(student: LFPStudent, head: BehaviorHead, session: int, window_bins: int):
    """(module, example inputs, ModelSpec) for the student's design."""
    f = student.n_features
    if student.cfg.attn_window == 0:
        mod = WindowDecoder(student, head, session).eval()
        return mod, (torch.zeros(1, window_bins, f),), ModelSpec(kind="window", window_bins=window_bins)
    shape = student.cache_shape(1)
    mod = StreamingDecoder(student, head, session).eval()
    ex = (torch.zeros(1, 1, f), torch.zeros(shape), torch.zeros(shape), torch.zeros(1))
    state = tuple(StateSpec(i, o, tuple(t.shape)) for (i, o), t in zip(STATE_NAMES, ex[1:]))
    return mod, ex, ModelSpec(kind="streaming", window_bins=student.cfg.attn_window, state=state)


def export_onnx(student: LFPStudent, head: BehaviorHead, session: int, window_bins: int, path: str | Path,
                opset: int = 17) -> ModelSpec:  # fmt: skip
    mod, ex, spec = deployable(student, head, session, window_bins)
    inputs = [spec.input_name] + [s.input for s in spec.state]
    outputs = [spec.output_name] + [s.output for s in spec.state]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter (constant masks, shapes) is expected here
        torch.onnx.export(mod, ex, str(path), input_names=inputs, output_names=outputs, opset_version=opset,
                          dynamo=False, do_constant_folding=True)  # fmt: skip
    import onnx

    onnx.checker.check_model(str(path))
    return ModelSpec(kind=spec.kind, window_bins=spec.window_bins, state=spec.state, opset=opset)


def parity(student: LFPStudent, head: BehaviorHead, session: int, spec: ModelSpec, onnx_path: str | Path,
           n_trials: int = 5, seed: int = 0, real: np.ndarray | None = None) -> dict:  # fmt: skip
    """Max abs and relative error of ONNX Runtime against PyTorch on random inputs (and on
    `real` feature rows, if given). Streaming: runs `n_trials * 4` steps carrying the state."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    mod, ex, _ = deployable(student, head, session, spec.window_bins)
    g = torch.Generator().manual_seed(seed)
    f = student.n_features
    max_abs, max_rel = 0.0, 0.0

    def _cmp(a: np.ndarray, b: np.ndarray):
        nonlocal max_abs, max_rel
        err = np.abs(a - b)
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float((err / (np.abs(b) + 1e-3 * (np.abs(b).max() + 1e-12))).max()))

    with torch.no_grad():
        if spec.kind == "window":
            xs = [torch.randn(1, spec.window_bins, f, generator=g) for _ in range(n_trials)]
            if real is not None and len(real) >= spec.window_bins:
                xs.append(torch.from_numpy(np.ascontiguousarray(real[-spec.window_bins :]))[None])
            for x in xs:
                _cmp(sess.run(None, {spec.input_name: x.numpy()})[0], mod(x).numpy())
        else:
            states_t = list(ex[1:])
            states_o = [s.numpy() for s in states_t]
            rows = [torch.randn(1, 1, f, generator=g) for _ in range(n_trials * 4)]
            if real is not None:
                rows += [torch.from_numpy(np.ascontiguousarray(r))[None, None] for r in real[: n_trials * 4]]
            for x in rows:
                y_t, *states_t = mod(x, *states_t)
                feed = {spec.input_name: x.numpy(), **{s.input: v for s, v in zip(spec.state, states_o)}}
                y_o, *states_o = sess.run([spec.output_name] + [s.output for s in spec.state], feed)
                _cmp(y_o, y_t.numpy())
    return {"max_abs_error": max_abs, "max_rel_error": max_rel, "n_inputs": n_trials, "runtime": f"onnxruntime {ort.__version__}"}


def export_bundle(
    out: str | Path,
    student: LFPStudent,
    head: BehaviorHead,
    session: int,
    chain: ChainSpec,
    window_bins: int,
    output_names: list[str],
    *,
    provenance: dict | None = None,
    opset: int = 17,
    parity_tol: float = 1e-4,
    real_features: np.ndarray | None = None,
    channel_names: list[str] | None = None,
    extra_files: dict[str, str | Path] | None = None,
    overwrite: bool = True,
) -> Bundle:
    """Export, check parity (refuse above `parity_tol` relative), write the bundle."""
    if chain.n_features != student.n_features:
        raise ExportError(f"the chain makes {chain.n_features} features, the student expects {student.n_features}")
    student.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        spec = export_onnx(student, head, session, window_bins, path, opset)
        par = parity(student, head, session, spec, path, real=real_features)
        if par["max_rel_error"] > parity_tol:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {par['max_rel_error']:.2e} relative "
                              f"(> {parity_tol:.0e}): the exported graph is not trustworthy")  # fmt: skip
        prov = {**(provenance or {}), "export": {"exporter": "torch.onnx.export(dynamo=False)", "torch": torch.__version__,
                                                 "opset": opset, "session_embedding": int(session), "parity": par}}  # fmt: skip
        return write_bundle(out, chain=chain, model_file=path, model=spec, output_names=list(output_names),
                            channel_names=channel_names, provenance=prov, extra_files=extra_files,
                            overwrite=overwrite)  # fmt: skip
