"""ONNX export of the deployable student + head, parity check, bundle.

Exporter: `torch.onnx.export(..., dynamo=False)` (the TorchScript exporter). It writes
one self-contained .onnx file (no external data) whose shapes are all fixed, which is
what the runtime and TensorRT want; the dynamo exporter also works on these models
but writes external data and adds nothing here.

Window design: features (1, W, F) -> behavior (1, n_out), the newest bin decoded.
Streaming design, state layout "ring_v1" (the default): features (1, 1, F) + per-layer
rings k_ring_i (1, H, hd, W, P; keys stored transposed), v_ring_i (1, H, W, P, hd) +
n_seen (1,) + phase (hd/2,) -> behavior (1, n_out) + the rings with one slot written
(k_ring_i_out, ...) + n_seen_out + phase_out. Keys are rotated once, when written; nothing
in the graph moves, transposes or re-rotates the cache (`Encoder.step_ring`), and the rings
are marked `inplace` so the backend binds each ring's input and output to one buffer.
Layout "shift_v0" (bundles before the ring, still exported with `layout="shift_v0"` for
comparisons): k_cache, v_cache (L, 1, W-1, P, D) + n_seen -> ... shifted every step. The
runtime feeds the states back by name either way (`rtdecode.bundle.StateSpec`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rtdecode.bundle import Bundle, ModelSpec, StateSpec, write_bundle
from rtdecode.dsp import ChainSpec

from .models.heads import BehaviorHead, RingStreamingDecoder, StreamingDecoder, WindowDecoder
from .models.student import LFPStudent

STATE_NAMES = (("k_cache", "k_cache_out"), ("v_cache", "v_cache_out"), ("n_seen", "n_seen_out"))  # shift_v0
LAYOUTS = ("ring_v1", "shift_v0")


def ring_state_names(n_layers: int) -> list[tuple[str, str]]:
    """(input, output) state names of a ring_v1 graph: k rings, v rings, the counter, the phase."""
    rings = [f"{kv}_ring_{i}" for kv in "kv" for i in range(n_layers)]
    return [(r, f"{r}_out") for r in rings] + [("n_seen", "n_seen_out"), ("phase", "phase_out")]


class ExportError(RuntimeError):
    pass


# ONNX operators (default domain) that TensorRT 10's ONNX parser converts: the supported
# rows of the onnx-tensorrt support matrix (docs/operators.md) that a transformer decoder
# may plausibly use, plus the normalisation ops added since (LayerNormalization,
# GroupNormalization). Declared, not probed: an operator outside it is refused at export
# time, before anyone finds out on a GPU machine. The students in configs/ use 29 of them
# (tests/export). Extend it only after `rtdecode compile` has parsed the new operator.
TENSORRT10_OPS = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
    Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
    Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
    GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization GRU HardSigmoid Identity If
    InstanceNormalization IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LRN LSTM MatMul Max
    MaxPool Mean Min Mul Neg Not Or Pad Pow PRelu QuantizeLinear Range ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
    Round ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Where Xor
""".split())
# target -> declared operator set; None: every operator of the standard ONNX domain
# (ONNX Runtime's CPU provider implements the whole standard opset)
SUPPORTED_OPS: dict[str, frozenset | None] = {"tensorrt": TENSORRT10_OPS, "onnxruntime": None}


def graph_ops(onnx_path: str | Path) -> dict[tuple[str, str], list[str]]:
    """(domain, op_type) -> names of the nodes using it (main graph)."""
    import onnx

    ops: dict[tuple[str, str], list[str]] = {}
    for n in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        ops.setdefault((n.domain or "", n.op_type), []).append(n.name)
    return ops


def check_operators(onnx_path: str | Path, targets: tuple[str, ...] = ("onnxruntime", "tensorrt")) -> list[str]:
    """The operator types the graph uses; ExportError naming each operator (and a node)
    that a target cannot run."""
    import onnx

    ops = graph_ops(onnx_path)
    bad = []
    for target in targets:
        if target not in SUPPORTED_OPS:
            raise ExportError(f"unknown export target {target!r}; one of {sorted(SUPPORTED_OPS)}")
        allowed = SUPPORTED_OPS[target]
        for (domain, op), nodes in sorted(ops.items()):
            standard = domain in ("", "ai.onnx") and onnx.defs.has(op)
            if not standard or (allowed is not None and op not in allowed):
                where = f"{domain}::{op}" if domain else op
                bad.append(f"{target} cannot run operator {where} (node {nodes[0]!r}, {len(nodes)} node(s))")
    if bad:
        raise ExportError(f"{onnx_path}: " + "; ".join(bad) + ". Replace that layer in the model with supported "
                          "operations, or drop the target (offline.export.SUPPORTED_OPS lists what each accepts)")  # fmt: skip
    return sorted(op for _, op in ops)


def simplify_onnx(onnx_path: str | Path) -> dict:
    """Run onnxsim (optional) and keep its graph only when it has fewer nodes; the parity
    check runs after this, on whatever graph is kept. Returns what happened."""
    try:
        import onnxsim
    except ImportError:
        return {"simplified": False, "why": "onnxsim not installed (optional)"}
    import onnx

    model = onnx.load(str(onnx_path))
    n0 = len(model.graph.node)
    try:
        simp, ok = onnxsim.simplify(model)
    except Exception as e:  # onnxsim raises many types; simplification is optional
        return {"simplified": False, "why": f"onnxsim failed: {e}"}
    n1 = len(simp.graph.node)
    if not ok or n1 >= n0:
        return {"simplified": False, "why": "onnxsim check failed" if not ok else f"no gain ({n0} -> {n1} nodes)"}
    onnx.save(simp, str(onnx_path))
    return {"simplified": True, "nodes_before": n0, "nodes_after": n1}


def deployable(student: LFPStudent, head: BehaviorHead, session: int, window_bins: int, layout: str = "ring_v1"):
    """(module, example inputs = zero state, ModelSpec) for the student's design; streaming
    students in state layout `layout` ("ring_v1" or the old "shift_v0")."""
    f = student.n_features
    if student.cfg.attn_window == 0:
        mod = WindowDecoder(student, head, session).eval()
        return mod, (torch.zeros(1, window_bins, f),), ModelSpec(kind="window", window_bins=window_bins)
    if layout not in LAYOUTS:
        raise ExportError(f"unknown state layout {layout!r}; one of {LAYOUTS}")
    w = student.cfg.attn_window
    if layout == "shift_v0":
        shape = student.cache_shape(1)
        mod = StreamingDecoder(student, head, session).eval()
        ex = (torch.zeros(1, 1, f), torch.zeros(shape), torch.zeros(shape), torch.zeros(1))
        state = tuple(StateSpec(i, o, tuple(t.shape)) for (i, o), t in zip(STATE_NAMES, ex[1:]))
        return mod, ex, ModelSpec(kind="streaming", window_bins=w, state=state, state_layout=layout)
    n_l = student.cfg.n_layers
    mod = RingStreamingDecoder(student, head, session).eval()
    ex = (torch.zeros(1, 1, f), *student.ring_state(1))
    state = tuple(StateSpec(i, o, tuple(t.shape), inplace=k < 2 * n_l)
                  for k, ((i, o), t) in enumerate(zip(ring_state_names(n_l), ex[1:])))  # fmt: skip
    return mod, ex, ModelSpec(kind="streaming", window_bins=w, state=state, state_layout=layout)


def export_onnx(student: LFPStudent, head: BehaviorHead, session: int, window_bins: int, path: str | Path,
                opset: int = 17, targets: tuple[str, ...] = ("onnxruntime", "tensorrt"),
                layout: str = "ring_v1") -> ModelSpec:  # fmt: skip
    """Export at the runtime's fixed shapes; refuse a graph a target cannot run."""
    mod, ex, spec = deployable(student, head, session, window_bins, layout)
    inputs = [spec.input_name] + [s.input for s in spec.state]
    outputs = [spec.output_name] + [s.output for s in spec.state]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter (constant masks, shapes) is expected here
        torch.onnx.export(mod, ex, str(path), input_names=inputs, output_names=outputs, opset_version=opset,
                          dynamo=False, do_constant_folding=True)  # fmt: skip
    import onnx

    onnx.checker.check_model(str(path))
    check_operators(path, targets)
    return ModelSpec(kind=spec.kind, window_bins=spec.window_bins, state=spec.state, opset=opset,
                     state_layout=spec.state_layout)  # fmt: skip


def parity(student: LFPStudent, head: BehaviorHead, session: int, spec: ModelSpec, onnx_path: str | Path,
           n_trials: int = 5, seed: int = 0, real: np.ndarray | None = None) -> dict:  # fmt: skip
    """Max abs and relative error of ONNX Runtime against PyTorch, on fresh random inputs
    and, if given, on `real` feature rows (T, F) (recorded windows), each reported apart
    ("random", "real") and together (top-level max_abs_error / max_rel_error).

    Window models: `n_trials` random windows, plus up to `n_trials` real windows spread over
    `real`. Streaming: `n_trials * 4` steps from zero state, carrying the state; real rows
    run as their own sequence. Relative error: |a - b| / (|b| + 1e-3 max |b|)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    mod, ex, _ = deployable(student, head, session, spec.window_bins, spec.state_layout)
    g = torch.Generator().manual_seed(seed)
    f = student.n_features

    def _err(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        # relative to each value, floored at 1 % of the largest output magnitude: an output
        # that happens to be near 0 must not turn float32 rounding into a large "relative" error
        err = np.abs(a.astype(np.float64) - b)
        return float(err.max()), float((err / (np.abs(b) + 1e-2 * (np.abs(b).max() + 1e-12))).max())

    def _run(xs: list[torch.Tensor]) -> dict:
        """Compare on a list of inputs (windows, or the steps of one sequence)."""
        ys_t, ys_o = [], []
        if spec.kind == "window":
            for x in xs:
                ys_o.append(sess.run(None, {spec.input_name: x.numpy()})[0])
                ys_t.append(mod(x).numpy())
        else:
            states_t = list(ex[1:])
            states_o = [s.numpy() for s in states_t]
            for x in xs:
                y_t, *states_t = mod(x, *states_t)
                feed = {spec.input_name: x.numpy(), **{s.input: v for s, v in zip(spec.state, states_o)}}
                y_o, *states_o = sess.run([spec.output_name] + [s.output for s in spec.state], feed)
                ys_t.append(y_t.numpy())
                ys_o.append(y_o)
        a, r = _err(np.concatenate(ys_o), np.concatenate(ys_t).astype(np.float64))
        return {"max_abs_error": a, "max_rel_error": r, "n_inputs": len(xs)}

    with torch.no_grad():
        if spec.kind == "window":
            rnd = [torch.randn(1, spec.window_bins, f, generator=g) for _ in range(n_trials)]
        else:
            rnd = [torch.randn(1, 1, f, generator=g) for _ in range(n_trials * 4)]
        out = {"random": _run(rnd), "real": None}
        if real is not None:
            real = np.ascontiguousarray(real, dtype=np.float32)
            if spec.kind == "window" and len(real) >= spec.window_bins:
                starts = np.linspace(0, len(real) - spec.window_bins, num=min(n_trials, len(real) - spec.window_bins + 1)).astype(int)
                xs = [torch.from_numpy(real[s : s + spec.window_bins].copy())[None] for s in starts]
                out["real"] = _run(xs)
            elif spec.kind == "streaming" and len(real):
                out["real"] = _run([torch.from_numpy(r.copy())[None, None] for r in real[: n_trials * 4]])
    parts = [p for p in (out["random"], out["real"]) if p]
    return {
        "max_abs_error": max(p["max_abs_error"] for p in parts),
        "max_rel_error": max(p["max_rel_error"] for p in parts),
        "n_inputs": sum(p["n_inputs"] for p in parts),
        **out,
        "runtime": f"onnxruntime {ort.__version__}",
    }


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
    layout: str = "ring_v1",
    output_units: list[str] | None = None,
) -> Bundle:
    """Export, check parity (refuse above `parity_tol` relative), write the bundle.
    `layout`: the streaming state layout ("ring_v1"; "shift_v0" writes the old format)."""
    if chain.n_features != student.n_features:
        raise ExportError(f"the chain makes {chain.n_features} features, the student expects {student.n_features}")
    student.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        spec = export_onnx(student, head, session, window_bins, path, opset, layout=layout)
        simp = simplify_onnx(path)
        ops = check_operators(path)
        par = parity(student, head, session, spec, path, real=real_features)
        if par["max_rel_error"] > parity_tol:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {par['max_rel_error']:.2e} relative "
                              f"(> {parity_tol:.0e}): the exported graph is not trustworthy")  # fmt: skip
        prov = {**(provenance or {}), "export": {"exporter": "torch.onnx.export(dynamo=False)", "torch": torch.__version__,
                                                 "opset": opset, "session_embedding": int(session), "parity": par,
                                                 "simplify": simp, "operators": ops}}  # fmt: skip
        return write_bundle(out, chain=chain, model_file=path, model=spec, output_names=list(output_names),
                            output_units=list(output_units) if output_units else None,
                            channel_names=channel_names, provenance=prov, extra_files=extra_files,
                            overwrite=overwrite)  # fmt: skip
