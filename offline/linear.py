"""A lagged ridge decoder on the chain's LFP features, exported as a real ONNX graph.

The simplest deployable bundle (and the classic LFP-only baseline): features of the
last `window_bins` bins -> linear map -> outputs. It needs no torch: the ONNX graph
(Reshape, MatMul, Add) is written with `onnx.helper`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rtdecode.bundle import Bundle, ModelSpec, write_bundle
from rtdecode.dsp import compute_features
from rtdecode.dsp.design import design_chain, fit_normalization


def lagged(features: np.ndarray, window_bins: int) -> np.ndarray:
    """(n_bins, F) -> (n_bins, W*F): row i holds bins i-W+1..i, zeros before the start
    (the runtime's window ring starts zero-filled the same way)."""
    n, f = features.shape
    out = np.zeros((n, window_bins, f), dtype=np.float32)
    for lag in range(window_bins):
        out[lag:, window_bins - 1 - lag] = features[: n - lag]
    return out.reshape(n, window_bins * f)


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    a = xc.T @ xc + alpha * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(a, xc.T @ yc)
    return w.astype(np.float32), (ym - xm @ w).astype(np.float32)


def linear_onnx(weights: np.ndarray, bias: np.ndarray, window_bins: int, n_features: int, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["features", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["proj"]),
            helper.make_node("Add", ["proj", "b"], ["behavior"]),
        ],
        "lagged_ridge",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, window_bins, n_features])],
        [helper.make_tensor_value_info("behavior", TensorProto.FLOAT, [1, weights.shape[1]])],
        initializer=[
            numpy_helper.from_array(np.array([1, window_bins * n_features], np.int64), "flat_shape"),
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias.reshape(1, -1), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rtdecode")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def fit_linear_bundle(
    lfp: np.ndarray,
    fs: float,
    behavior: np.ndarray,
    output_names: list[str],
    out: str | Path,
    *,
    chain_kind: str = "lfp",
    window_bins: int = 10,
    alpha: float = 1e-2,
    channel_names: list[str] | None = None,
    provenance: dict | None = None,
    overwrite: bool = False,
    **chain_kw,
) -> Bundle:
    """Fit on one recording: lfp (n_samples, C) raw, behavior (n_bins, n_out) per bin."""
    spec = design_chain(chain_kind, fs=fs, n_channels=lfp.shape[1], **chain_kw)
    mean, std = fit_normalization(compute_features(spec, lfp))
    spec = spec.with_normalization(mean, std)
    feats = compute_features(spec, lfp)
    n = min(len(feats), len(behavior))
    x = lagged(feats[:n], window_bins)
    w, b = ridge(x, np.asarray(behavior[:n], np.float32), alpha)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        linear_onnx(w, b, window_bins, spec.n_features, onnx_path)
        return write_bundle(
            out,
            chain=spec,
            model_file=onnx_path,
            model=ModelSpec(kind="window", window_bins=window_bins, opset=17),
            output_names=output_names,
            channel_names=channel_names,
            provenance={"model": "lagged ridge on LFP features", "alpha": alpha, **(provenance or {})},
            overwrite=overwrite,
        )


def export_ridge_bundle(
    out: str | Path,
    ridge,
    chain,
    window_bins: int,
    output_names: list[str],
    *,
    provenance: dict | None = None,
    parity_tol: float = 1e-4,
    real_features: np.ndarray | None = None,
    channel_names: list[str] | None = None,
    extra_files: dict | None = None,
    overwrite: bool = True,
    output_units: list[str] | None = None,
) -> Bundle:
    """A fitted lagged ridge (`ridge.w` (W*F, n_out) on windows of W bins flattened oldest
    first, as `offline.train.decode.lagged_features`; `ridge.b`) as a bundle on `chain`
    (normalisation included), after a parity check of ONNX Runtime against numpy on random
    and, if given, real feature windows (`real_features` (T, F)). `rtdecode distill` writes
    this when the lagged ridge is the best decoder the run found (export.choose)."""
    import onnxruntime as ort

    f = chain.n_features
    w = np.ascontiguousarray(ridge.w, np.float32)
    b = np.ascontiguousarray(ridge.b, np.float32)
    if w.shape[0] != window_bins * f:
        raise ValueError(f"ridge weights have {w.shape[0]} rows, {window_bins} bins x {f} features need {window_bins * f}")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, window_bins, f)).astype(np.float32) for _ in range(5)]
    if real_features is not None and len(real_features) >= window_bins:
        r = np.asarray(real_features, np.float32)
        xs += [r[s : s + window_bins][None] for s in np.linspace(0, len(r) - window_bins, 5).astype(int)]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        linear_onnx(w, b, window_bins, f, onnx_path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        got = np.concatenate([sess.run(None, {"features": x})[0] for x in xs])
        want = np.concatenate([x.reshape(1, -1).astype(np.float64) @ w + b for x in xs])
        err = np.abs(got - want)
        rel = float((err / (np.abs(want) + 1e-2 * (np.abs(want).max() + 1e-12))).max())
        if rel > parity_tol:
            raise RuntimeError(f"ONNX Runtime differs from numpy by {rel:.2e} relative (> {parity_tol:.0e}) on the ridge graph")
        par = {"max_abs_error": float(err.max()), "max_rel_error": rel, "n_inputs": len(xs), "runtime": f"onnxruntime {ort.__version__}"}
        prov = {**(provenance or {}), "model": "lagged ridge on LFP features",
                "export": {"exporter": "offline.linear.linear_onnx", "opset": 17, "parity": par, "window_bins": int(window_bins)}}
        return write_bundle(out, chain=chain, model_file=onnx_path, model=ModelSpec(kind="window", window_bins=window_bins, opset=17),
                            output_names=list(output_names), output_units=list(output_units) if output_units else None,
                            channel_names=channel_names, provenance=prov, extra_files=extra_files, overwrite=overwrite)  # fmt: skip
