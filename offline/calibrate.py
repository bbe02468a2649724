"""`rtdecode calibrate`: refit a bundle's linear readout on a new session's calibration block.

A decoder trained on some days rarely reads another day with its own readout: electrodes
move, units turn over, gains change (docs/distill.md: the exported decoder as shipped scored
R² 0.17 on the demo's unseen day, and below 0 on a new user's own files). The paper's
transfer claim is about the encoder: its latents carry to new sessions, and the readout is
refit there. This module is that step for a lab: record a few minutes with behaviour on the
new day, then

    rtdecode calibrate BUNDLE day8.nwb --out day8_bundle --minutes 3

What it does, without torch and on the exact graph the runtime runs:
1. the recording's LFP goes through the bundle's own chain (`rtdecode.dsp.compute_features`,
   its training normalisation; `--renormalize` refits the z-scoring on the calibration block);
2. the bundle's ONNX graph runs bin by bin, as `rtdecode run` feeds it (window ring or
   streaming state), with the readout's input (the student's latent of the newest bin, or the
   lagged-ridge bundle's flattened window) added as a graph output;
3. a new readout from that input to the behaviour, chosen per output by blocked
   cross-validation over the calibration block (`folds` contiguous blocks, a guard of one
   window around each) among: the shipped readout as it is, with its intercept refit, a ridge
   shrunk toward it, and a plain ridge (each ridge over a grid of penalties), then refit on the
   whole block. The shipped readout being a candidate, a short block cannot make an output
   worse in cross-validation, and the shrinkage lets a minute of data move the readout only
   as far as it supports;
4. the readout's weights (the graph's final Gemm, or MatMul + Add, of initializers) are
   replaced in a copy of the graph, which must decode what numpy computes from the same
   inputs (parity), and written as a new bundle: the same chain, state layout and outputs,
   provenance saying what was calibrated on what, `calibration.json` with the figures. A
   TensorRT engine is not carried (its weights are the old ones): `rtdecode compile` again.

It reports cross-validated R² on the calibration block for the readout as shipped and refit,
and, when the recording goes on after the calibration block, on the rest of it (the shipped
bundle and the new one, both decoded by ONNX Runtime from the raw samples as the runtime
would): what a lab wants to know before it runs closed loop on the new bundle.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdecode.batch import decode_recording, r2_score
from rtdecode.bundle import Bundle, load_bundle, update_manifest, write_bundle
from rtdecode.config import ConfigError
from rtdecode.dsp import compute_features
from rtdecode.dsp.design import fit_normalization

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # relative ridge penalties, as rtdecode distill's [eval] grid
MIN_FIT_BINS, MIN_VAL_BINS = 500, 100
GUARD_BINS = 10  # beyond the window: between folds and before the scored rest (the chain's smoothing, the behaviour's)
REST_MAX_BINS = 60_000  # the rest scored after the block: at most 10 minutes of 10-ms bins
READS = ("an NWB file (.nwb), an XDF file (.xdf, .xdfz: LabRecorder's, with the LFP and a behaviour stream) or an "
         "rtdecode recording (.npz) with behaviour")  # fmt: skip


class CalibrationError(ConfigError):
    """A bundle or recording that cannot be calibrated: the message names what and the fix."""


# ------------------------------------------------------------------------------------------
# the readout in the graph


@dataclass(frozen=True)
class Readout:
    """The graph's final linear map `output = input @ W + b`, as the exporters write it:
    Gemm(input, W, b) (offline.export; W stored (n_out, D) with transB = 1) or
    Add(MatMul(input, W), b) (offline.linear; W stored (D, n_out))."""

    op: str  # "Gemm" | "MatMul+Add"
    input: str  # the tensor the readout reads: (1, D)
    weight: str  # initializer
    bias: str  # initializer
    trans_b: bool
    dim: int  # D
    n_out: int


def _inits(model) -> dict:
    return {t.name: t for t in model.graph.initializer}


def find_readout(model, output_name: str, where: str = "the graph") -> Readout:
    """The final linear readout producing `output_name`, or CalibrationError saying why not."""
    from onnx import numpy_helper

    prod = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    inits = _inits(model)
    fix = ("only a bundle whose output is a linear map of one tensor (rtdecode distill's and offline.linear's "
           "bundles) can be recalibrated; re-export the decoder with rtdecode distill")  # fmt: skip
    node = prod.get(output_name)
    if node is None:
        raise CalibrationError(f"{where}: no node computes the output {output_name!r}; {fix}")

    def own(name: str) -> bool:  # an initializer only this readout reads (so it can be replaced)
        return name in inits and uses.get(name, 0) == 1

    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if "transA" in attrs and attrs["transA"].i:
            raise CalibrationError(f"{where}: the output's Gemm transposes its input (transA = 1); {fix}")
        if len(node.input) < 3 or not own(node.input[1]) or not own(node.input[2]):
            raise CalibrationError(f"{where}: the output's Gemm does not read its own weight and bias initializers; {fix}")
        for k in ("alpha", "beta"):
            if k in attrs and abs(attrs[k].f - 1.0) > 0:
                raise CalibrationError(f"{where}: the output's Gemm has {k} = {attrs[k].f:g} (not 1); {fix}")
        trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
        w = numpy_helper.to_array(inits[node.input[1]])
        dim, n_out = (w.shape[1], w.shape[0]) if trans_b else w.shape
        return Readout("Gemm", node.input[0], node.input[1], node.input[2], trans_b, int(dim), int(n_out))
    if node.op_type == "Add":
        mm = [prod.get(i) for i in node.input]
        k = next((j for j in (0, 1) if mm[j] is not None and mm[j].op_type == "MatMul"), None)
        if k is not None and own(node.input[1 - k]) and own(mm[k].input[1]) and uses.get(node.input[k], 0) == 1:
            w = numpy_helper.to_array(inits[mm[k].input[1]])
            if w.ndim == 2:
                return Readout("MatMul+Add", mm[k].input[0], mm[k].input[1], node.input[1 - k], False, int(w.shape[0]), int(w.shape[1]))
    raise CalibrationError(f"{where}: the output {output_name!r} is computed by {node.op_type}, not by a linear map of "
                           f"initializers (Gemm, or MatMul + Add); {fix}")  # fmt: skip


def set_readout(model, ro: Readout, w: np.ndarray, b: np.ndarray) -> None:
    """Replace the readout's weights, in place: `w` (D, n_out), `b` (n_out,); dtypes and the
    stored shapes (the bias's (n_out,) or (1, n_out)) kept."""
    from onnx import numpy_helper

    inits = _inits(model)
    old_w, old_b = numpy_helper.to_array(inits[ro.weight]), numpy_helper.to_array(inits[ro.bias])
    new_w = (w.T if ro.trans_b else w).astype(old_w.dtype)
    new_b = np.asarray(b).reshape(old_b.shape).astype(old_b.dtype)
    for name, arr in ((ro.weight, new_w), (ro.bias, new_b)):
        if arr.shape != numpy_helper.to_array(inits[name]).shape:
            raise CalibrationError(f"readout {name}: new shape {arr.shape}, the graph's {numpy_helper.to_array(inits[name]).shape}")
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))


def readout_weights(model, ro: Readout) -> tuple[np.ndarray, np.ndarray]:
    """(w (D, n_out), b (n_out,)) as stored in the graph."""
    from onnx import numpy_helper

    inits = _inits(model)
    w = numpy_helper.to_array(inits[ro.weight]).astype(np.float64)
    return (w.T if ro.trans_b else w), numpy_helper.to_array(inits[ro.bias]).astype(np.float64).reshape(-1)


def readout_inputs(bundle: Bundle, model, ro: Readout, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run `model` (the bundle's graph) bin by bin over normalised features (n_bins, F), fed
    as `rtdecode run` feeds it (a zero-filled window ring, or the streaming state from zeros),
    and return (the readout's input per bin (n_bins, D), the graph's output (n_bins, n_out))."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    if ro.input not in {o.name for o in m.graph.output}:
        m.graph.output.append(onnx.helper.make_tensor_value_info(ro.input, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    spec = bundle.model
    names = [spec.output_name, ro.input, *[s.output for s in spec.state]]
    state = {s.input: np.zeros(s.shape, np.float32) for s in spec.state}
    n, w = len(feats), spec.window_bins
    z = np.empty((n, ro.dim), np.float32)
    y = np.empty((n, ro.n_out), np.float32)
    feats = np.ascontiguousarray(feats, np.float32)
    if spec.kind == "window":
        pad = np.concatenate([np.zeros((w - 1, feats.shape[1]), np.float32), feats])
    for i in range(n):
        x = feats[None, i : i + 1] if spec.kind == "streaming" else pad[None, i : i + w]
        out = sess.run(names, {spec.input_name: x, **state})
        y[i], z[i] = out[0].reshape(-1), out[1].reshape(-1)
        for s, v in zip(spec.state, out[2:]):
            state[s.input] = v
    return z, y


# ------------------------------------------------------------------------------------------
# the calibration recording


def _reorder(names_have: list[str] | None, names_want: tuple[str, ...] | None, what: str, log=print) -> np.ndarray | None:
    """Column order that puts `names_have` in `names_want`'s order; None when it is already
    (or when either has no names); a warning, and None, when the sets differ."""
    if not names_have or not names_want:
        return None
    if list(names_have) == list(names_want):
        return None
    if sorted(names_have) == sorted(names_want):
        pos = {c: i for i, c in enumerate(names_have)}
        log(f"[calibrate] the recording's {what} are in another order than the bundle's: reordered by name")
        return np.array([pos[c] for c in names_want])
    log(f"[calibrate] WARNING: the recording's {what} ({list(names_have)[:6]}...) are not the bundle's "
        f"({list(names_want)[:6]}...): used in the file's order")  # fmt: skip
    return None


def _training_mapping(bundle: Bundle, path: Path):
    """The NWBMapping the bundle's own distill run used ([data.nwb] of the config in its
    provenance, per-file overrides applied for `path`), or None when it has none."""
    from offline.data.nwb import NWBConfig

    cfg = bundle.provenance.get("config") if isinstance(bundle.provenance, dict) else None
    table = cfg.get("data", {}).get("nwb") if isinstance(cfg, dict) and isinstance(cfg.get("data"), dict) else None
    if not isinstance(table, dict):
        return None
    try:
        return NWBConfig.from_dict(table, where=f"{bundle.path} provenance [data.nwb]").for_file(path)
    except (ConfigError, TypeError, ValueError):
        return None


MAX_BEHAVIOR_GAP_S = 0.25  # behaviour samples further apart than this (and 5 of its periods): the bins between are left out


def sample_times(ts: np.ndarray, rate: float) -> tuple[np.ndarray, int]:
    """Stamps of a regularly sampled stream as the acquisition clock had them: a straight line
    of stamp against sample count in each stretch without a pause (a least-squares fit: push-time
    jitter averages out), a new stretch after a step of more than max(5 ms, 5 periods) beyond
    one period (lost samples, a pause) or back in time by more than 50 ms (a clock reset).
    Returns (times, pauses)."""
    ts = np.asarray(ts, np.float64)
    n = len(ts)
    if n < 2:
        return ts.copy(), 0
    period = 1.0 / rate
    step = np.diff(ts)
    brk = np.flatnonzero((step > period + max(0.005, 5 * period)) | (step < -0.05)) + 1
    out = np.empty(n)
    for lo, hi in zip(np.r_[0, brk], np.r_[brk, n]):
        k = np.arange(lo, hi, dtype=np.float64)
        if hi - lo < 2:
            out[lo:hi] = ts[lo:hi]
            continue
        slope, icpt = np.polyfit(k - lo, ts[lo:hi], 1)
        if not 0.9 * period < slope < 1.1 * period:  # too few or too odd to fit: the nominal rate from its mean
            slope, icpt = period, float(np.mean(ts[lo:hi] - (k - lo) * period))
        out[lo:hi] = icpt + (k - lo) * slope
    return out, int(len(brk))


def behavior_at(t_bins: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Behaviour samples (t, x (n, k)) at bin times `t_bins`, linearly interpolated; NaN outside
    the samples' span, across a gap of more than MAX_BEHAVIOR_GAP_S (and 5 median periods), and
    next to a NaN sample (a tracking dropout)."""
    order = np.argsort(t, kind="stable")
    t, x = np.asarray(t, np.float64)[order], np.asarray(x, np.float64)[order]
    out = np.full((len(t_bins), x.shape[1]), np.nan, np.float32)
    if len(t) < 2:
        return out
    med = float(np.median(np.diff(t)))
    gap = max(MAX_BEHAVIOR_GAP_S, 5 * med)
    j = np.searchsorted(t, t_bins, side="right")  # t[j-1] <= t_bin < t[j]
    inside = (j > 0) & (j < len(t))
    jj = np.clip(j, 1, len(t) - 1)
    inside &= (t[jj] - t[jj - 1]) <= gap
    for c in range(x.shape[1]):
        y = np.interp(t_bins, t, x[:, c])  # NaN next to a NaN sample: np.interp propagates it
        out[inside, c] = y[inside]
    return out


def _read_xdf(path: Path, kind: str, bundle: Bundle, lfp_stream: str | None, behavior_stream: str | None, log,
              max_bins: int | None, need_behavior: bool = True):  # fmt: skip
    """The LFP stream and the behaviour stream of an XDF file (LabRecorder's: the raw stream and
    the task's kinematics, recorded on one clock): the LFP's samples as the runtime gets them,
    the behaviour at the centre of each of its bins."""
    from offline.data.nwb import derive_velocity
    from rtdecode.recording import (RecordingError, _xdf_field, xdf_describe, xdf_labels, xdf_regular,
                                    xdf_select, xdf_streams)  # fmt: skip

    try:
        streams = xdf_streams(path, kind, synchronize_clocks=True)
        listing = "; ".join(xdf_describe(s) for s in streams) or "no streams"
        want = list(bundle.output_names)

        def rate_of(s):
            return float(_xdf_field(s["info"], "nominal_srate", 0) or 0)

        def ch_of(s):
            return int(float(_xdf_field(s["info"], "channel_count", 0) or 0))

        if lfp_stream:
            ls = xdf_select(path, streams, lfp_stream, "--xdf-stream")
            if not xdf_regular(ls):
                raise CalibrationError(f"{path}: stream {xdf_describe(ls)} is not an LFP: it needs numeric samples at a "
                                       "nominal rate; choose the raw stream with --xdf-stream")  # fmt: skip
        else:
            cands = [s for s in streams if xdf_regular(s) and ch_of(s) == bundle.n_channels
                     and abs(rate_of(s) - bundle.sampling_rate) <= 1e-6 * bundle.sampling_rate]  # fmt: skip
            if len(cands) != 1:
                what = (f"no stream of {bundle.n_channels} channels at {bundle.sampling_rate:g} Hz (the bundle's)" if not cands
                        else f"{len(cands)} streams of {bundle.n_channels} channels at {bundle.sampling_rate:g} Hz")  # fmt: skip
                raise CalibrationError(f"{path}: {what}; the file has: {listing}. Name the LFP stream with --xdf-stream NAME")
            ls = cands[0]

        def names_of(s):
            lb = xdf_labels(s)
            return lb if lb is not None else None

        def covers(names):
            if not names:
                return False
            if set(want) <= set(names):
                return True
            _, derived, _ = derive_velocity(np.zeros((1, len(names)), np.float32), list(names), [""] * len(names), 1.0)
            return set(want) <= set(derived)

        others = [s for s in streams if s is not ls and _xdf_field(s["info"], "channel_format") != "string"
                  and len(s["time_series"]) > 1]  # fmt: skip
        if behavior_stream:
            bs = xdf_select(path, streams, behavior_stream, "--behavior-stream")
            if bs is ls or _xdf_field(bs["info"], "channel_format") == "string":
                raise CalibrationError(f"{path}: stream {xdf_describe(bs)} cannot be the behaviour: it needs numeric samples "
                                       "other than the LFP's; choose the task's kinematics stream with --behavior-stream")  # fmt: skip
        else:
            cands = [s for s in others if covers(names_of(s))]
            if not cands and not need_behavior:
                bs = None
            elif len(cands) != 1:
                what = (f"no stream whose channel labels name the bundle's outputs {want}" if not cands
                        else f"{len(cands)} streams name the bundle's outputs")  # fmt: skip
                raise CalibrationError(f"{path}: {what}; the file has: {listing}. Name the behaviour stream with "
                                       "--behavior-stream NAME")  # fmt: skip
            else:
                bs = cands[0]
    except RecordingError as e:
        raise CalibrationError(str(e)) from None
    rate = rate_of(ls)
    spb = bundle.chain.bin_samples
    lfp = np.asarray(ls["time_series"])
    lfp = lfp[:, None] if lfp.ndim == 1 else lfp
    n_bins = len(lfp) // spb if max_bins is None else min(len(lfp) // spb, max_bins)
    lfp = np.ascontiguousarray(lfp[: n_bins * spb], np.float32)
    t_lfp, pauses = sample_times(ls["time_stamps"][: n_bins * spb], rate)
    if pauses:
        log(f"[calibrate] WARNING: the LFP stream's stamps pause {pauses} time(s) (lost samples or a clock reset): the "
            "samples are taken as they are, unfilled; bins next to a pause are approximate")  # fmt: skip
    centre = np.arange(n_bins) * spb + spb / 2.0  # a bin's centre, as rtdecode distill reads behaviour at it
    t_bins = np.interp(centre, np.arange(len(t_lfp), dtype=np.float64), t_lfp)
    if bs is None:  # label-free, and no behaviour stream: the LFP alone
        info = {"file": str(path), "format": "xdf", "lfp_stream": str(_xdf_field(ls["info"], "name")), "behavior_stream": None,
                "lfp_pauses": pauses, "behavior_bins": 0}  # fmt: skip
        return lfp, rate, xdf_labels(ls), np.zeros((n_bins, 0), np.float32), [], info
    bx = np.asarray(bs["time_series"], np.float64)
    bx = bx[:, None] if bx.ndim == 1 else bx
    bt = np.asarray(bs["time_stamps"], np.float64)
    if rate_of(bs) > 0:
        bt, _ = sample_times(bt, rate_of(bs))
    names = names_of(bs)
    beh = behavior_at(t_bins, bt, bx)
    if names and not set(want) <= set(names):
        beh, names, _ = derive_velocity(beh, list(names), [""] * len(names), bundle.chain.bin_width_s)
        log(f"[calibrate] velocity derived from the behaviour stream's positions (backward difference over a bin)")
    covered = np.isfinite(beh).all(1)
    if not covered.any():
        raise CalibrationError(f"{path}: the behaviour stream {xdf_describe(bs)} covers none of the LFP's "
                               f"{n_bins * bundle.chain.bin_width_s:.0f} s (stamps {bt[0]:.3f}-{bt[-1]:.3f} s against the LFP's "
                               f"{t_lfp[0]:.3f}-{t_lfp[-1]:.3f} s): record both streams together (LabRecorder)")  # fmt: skip
    info = {"file": str(path), "format": "xdf", "lfp_stream": str(_xdf_field(ls["info"], "name")),
            "behavior_stream": str(_xdf_field(bs["info"], "name")), "lfp_pauses": pauses,
            "behavior_bins": int(covered.sum())}  # fmt: skip
    return lfp, rate, xdf_labels(ls), beh.astype(np.float32), list(names or []), info


def load_calibration(path, bundle: Bundle, mapping: str | None = None, log=print, max_bins: int | None = None,
                     xdf_stream: str | None = None, behavior_stream: str | None = None,
                     need_behavior: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], dict]:  # fmt: skip
    """(raw LFP (n_samples, C) in the bundle's channel order, behaviour (n_bins, n_out) in the
    bundle's output order at its bins, NaN where the tracker lost it, the behaviour's names,
    what was read) from an NWB file (the bundle's bin width; the LFP and behaviour chosen by the
    [data.nwb] table of `mapping`, else by that of the bundle's own training config, else as
    `rtdecode distill` does by default), an XDF file (LabRecorder's: the LFP stream, `xdf_stream`
    or the one of the bundle's channel count and rate, and the behaviour stream,
    `behavior_stream` or the one whose channel labels name the bundle's outputs, on one clock)
    or an rtdecode recording (.npz) with behaviour. An NWB or XDF file's LFP is read only up to
    `max_bins` bins. `need_behavior=False` (label-free renormalisation): a file without the
    bundle's behaviour gives NaN behaviour (nothing scored) instead of an error."""
    from rtdecode.recording import Recording, RecordingError, _kind, nwb_mapping_for

    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"{path} is a folder; rtdecode calibrate reads one file: {READS}")
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file; rtdecode calibrate reads {READS}")
    kind = _kind(path)
    bw = bundle.chain.bin_width_s
    if (xdf_stream or behavior_stream) and kind not in ("xdf", "xdfz"):
        raise CalibrationError(f"--xdf-stream and --behavior-stream choose the streams of an XDF file; {path} is not one")
    if kind == "nwb":
        from dataclasses import replace

        try:
            import pynwb  # noqa: F401
        except ImportError:
            raise CalibrationError(f"{path}: reading NWB files needs pynwb: pip install 'rtdecode[train]'") from None
        from offline.data.nwb import NWBMapping, NWBMappingError, NWBReadError, read_session

        base = nwb_mapping_for(path, mapping) if mapping else (_training_mapping(bundle, path) or NWBMapping())
        m = replace(base, bin_width=bw)
        try:  # NaN behaviour kept (not interpolated across the block's end into the scored rest): masked below
            s = read_session(path, m, lazy=True, spikes=False, fill_behavior=False, behavior_optional=not need_behavior)
            n_keep = s.lfp.shape[0] if max_bins is None else min(s.lfp.shape[0], max_bins * bundle.chain.bin_samples)
            lfp_lazy, lfp = s.lfp, np.asarray(s.lfp[:n_keep], np.float32)
            lfp_lazy.close()
        except NWBMappingError:
            raise
        except NWBReadError as e:
            raise CalibrationError(f"{e}; or give an .npz recording") from None
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            raise CalibrationError(f"{path}: not a readable NWB file ({type(e).__name__}: {e}); check that the copy is "
                                   "complete, or give an .npz recording") from None  # fmt: skip
        rate, ch = float(s.lfp_rate), [str(c) for c in s.channel_ids]
        beh, names = np.asarray(s.behavior, np.float32), list(s.behavior_names)
        info = {"file": str(path), "format": "nwb", "session_id": s.session_id}
    elif kind in ("xdf", "xdfz"):
        if mapping:
            raise CalibrationError(f"--mapping chooses the series of an NWB file; {path} is an XDF file (--xdf-stream, "
                                   "--behavior-stream choose its streams)")  # fmt: skip
        lfp, rate, ch, beh, names, info = _read_xdf(path, kind, bundle, xdf_stream, behavior_stream, log, max_bins,
                                                    need_behavior)  # fmt: skip
    elif kind == "npz":
        if mapping:
            raise CalibrationError(f"--mapping chooses the series of an NWB file; {path} is an rtdecode recording")
        try:
            r = Recording.load(path)
        except RecordingError as e:
            raise CalibrationError(str(e)) from None
        if r.behavior is None and need_behavior:
            raise CalibrationError(f"{path}: the recording has no behaviour; calibration needs the behaviour the bundle decodes "
                                   f"({list(bundle.output_names)}) at {1 / bw:g} Hz (Recording(behavior=..., behavior_names=..., "
                                   f"behavior_rate={1 / bw:g}))")  # fmt: skip
        if r.behavior is not None and abs(r.behavior_rate * bw - 1.0) > 1e-6:
            raise CalibrationError(f"{path}: behaviour at {r.behavior_rate:g} Hz; the bundle's bins are {bw * 1e3:g} ms: "
                                   f"give one row per bin (behavior_rate = {1 / bw:g})")  # fmt: skip
        lfp, rate, ch = r.data, r.sampling_rate, r.channel_names
        beh = r.behavior if r.behavior is not None else np.zeros((len(r.data) // bundle.chain.bin_samples, 0), np.float32)
        names = list(r.behavior_names or [])
        info = {"file": str(path), "format": "npz"}
    else:
        raise CalibrationError(f"{path}: rtdecode calibrate reads {READS}")
    if abs(rate - bundle.sampling_rate) > 1e-6 * bundle.sampling_rate:
        raise CalibrationError(f"{path}: LFP at {rate:g} Hz; the bundle's chain runs at {bundle.sampling_rate:g} Hz: "
                               "calibrate on a recording made at the bundle's rate")  # fmt: skip
    if lfp.shape[1] != bundle.n_channels:
        raise CalibrationError(f"{path}: {lfp.shape[1]} LFP channels; the bundle reads {bundle.n_channels}: calibrate on a "
                               "recording of the same array (or choose its series with --mapping)")  # fmt: skip
    order = _reorder(ch, bundle.channel_names, "channels", log)
    if order is not None:
        lfp = np.ascontiguousarray(lfp[:, order])
    want = list(bundle.output_names)
    if not need_behavior and not (names and set(want) <= set(names)) and not (not names and beh.shape[1] == len(want)):
        if beh.shape[1]:
            log(f"[calibrate] the recording's behaviour {names or beh.shape[1]} does not name the bundle's outputs {want}: "
                "not read (label-free: nothing needs it; nothing is scored)")  # fmt: skip
        n_bins = len(lfp) // bundle.chain.bin_samples
        return lfp[: n_bins * bundle.chain.bin_samples], np.full((n_bins, len(want)), np.nan, np.float32), want, info
    if names and set(want) <= set(names):
        cols = [names.index(n) for n in want]
    elif not names and beh.shape[1] == len(want):
        cols = list(range(len(want)))
        log(f"[calibrate] the recording's behaviour has no names: its {len(want)} columns taken as {want}")
    else:
        missing = [n for n in want if n not in names]
        raise CalibrationError(f"{path}: the bundle decodes {want}; the recording's behaviour is {names or beh.shape[1]} "
                               f"(missing {missing}): name the outputs as the bundle does (NWB: a [data.nwb.outputs] table "
                               "in --mapping; XDF: the behaviour stream's channel labels; .npz: behavior_names)")  # fmt: skip
    n_bins = min(len(lfp) // bundle.chain.bin_samples, len(beh))
    return lfp[: n_bins * bundle.chain.bin_samples], np.ascontiguousarray(beh[:n_bins][:, cols]), want, info


# ------------------------------------------------------------------------------------------
# the calibration


CANDIDATES = ("shipped", "offset", "toward shipped", "from zero")


class _Fit:
    """Ridge fits of many targets and penalties on one set of rows: the centred Gram matrix and
    its eigendecomposition once (the readout input can be a 960-wide lagged window), then each
    (target, alpha) costs two small matrix products. Penalties are relative, as
    `offline.train.decode.fit_ridge` (alpha x the mean eigenvalue)."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, np.float64)
        self.xm = x.mean(0)
        self.xc = x - self.xm
        g = self.xc.T @ self.xc
        self.evals, self.evecs = np.linalg.eigh(g)
        self.evals = np.clip(self.evals, 0.0, None)
        self.gram = g
        self.scale = float(np.trace(g)) / g.shape[0]

    def ridge(self, xty: np.ndarray, alpha: float) -> np.ndarray:
        """Weights (D, k) for the centred cross-products xc.T @ (t - mean t) of targets t."""
        lam = alpha * self.scale + 1e-12
        return self.evecs @ ((self.evecs.T @ xty) / (self.evals + lam)[:, None])


def _solve(f: _Fit, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, cand: tuple[str, float | None]):
    """(w, b) of one readout candidate on the rows of `f` with targets y: "shipped" (w0, b0 as
    they are), "offset" (w0, the intercept refit), "toward shipped" (a ridge of penalty alpha
    shrunk toward w0: w0 + the ridge of the shipped readout's residual), "from zero" (a plain
    ridge)."""
    kind, a = cand
    y = np.asarray(y, np.float64)
    ym = y.mean(0)
    if kind == "shipped":
        return w0, b0
    if kind == "offset":
        return w0, ym - f.xm @ w0
    xty = f.xc.T @ (y - ym)
    if kind == "toward shipped":
        w = w0 + f.ridge(xty - f.gram @ w0, float(a))
    else:
        w = f.ridge(xty, float(a))
    return w, ym - f.xm @ w


def folds_of(rows: np.ndarray, k: int, guard: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Blocked cross-validation of time-ordered bins `rows`: k contiguous blocks, each scored
    by a fit on the others less the `guard` bins either side of it (a readout input spans a
    window of bins, so neighbours share samples)."""
    edges = np.linspace(0, len(rows), k + 1).astype(int)
    out = []
    for i in range(k):
        lo, hi = rows[edges[i]], rows[edges[i + 1] - 1]
        out.append((rows[(rows < lo - guard) | (rows > hi + guard)], rows[edges[i] : edges[i + 1]]))
    return out


def cv_r2(y: np.ndarray, pred: np.ndarray, folds) -> np.ndarray:
    """R² per output over the folds' bins pooled (as `choose_readout` scores), of fixed
    predictions (the shipped bundle's)."""
    rows = np.concatenate([v for _, v in folds])
    return r2_score(y[rows], pred[rows])


def choose_readout(z, y, folds, w0, b0, alphas) -> tuple[list[tuple[str, float | None]], np.ndarray]:
    """Per output, the candidate (`_solve`; every alpha of the grid for the two ridges) with the
    best R² of its out-of-fold predictions over the blocked folds (`folds_of`), pooled: one R²
    over the whole block, so a slow output (position) is judged against the block's variance,
    not each short fold's: the shipped readout is one of them, so a
    short block cannot make an output worse in cross-validation than the bundle already is, and
    the shrinkage toward it lets a minute of data move it only as far as the data support.
    Returns (the choice per output, its cross-validated R² per output)."""
    cands = [("shipped", None), ("offset", None)] + [(k, float(a)) for k in CANDIDATES[2:] for a in alphas]
    rows = np.concatenate([v for _, v in folds])
    pred = np.zeros((len(cands), len(y), y.shape[1]))
    for fit, val in folds:
        f = _Fit(z[fit])
        zv = z[val].astype(np.float64)
        for k, c in enumerate(cands):
            wk, bk = _solve(f, y[fit], w0, b0, c)
            pred[k, val] = zv @ wk + bk
    score = np.stack([r2_score(y[rows], p[rows]) for p in pred])
    best = score.argmax(0)
    return [cands[i] for i in best], score[best, np.arange(y.shape[1])]


def refit_readout(z, y, rows, w0, b0, choice) -> tuple[np.ndarray, np.ndarray]:
    """(w (D, n_out), b) with each output's chosen candidate fit on `rows`."""
    w, b = np.array(w0, np.float64), np.array(b0, np.float64)
    f = _Fit(z[rows])
    for c in dict.fromkeys(choice):
        cols = [j for j, cj in enumerate(choice) if cj == c]
        w[:, cols], b[cols] = _solve(f, y[rows][:, cols], w0[:, cols], b0[cols], c)
    return w, b


def _name(c: tuple[str, float | None]) -> str:
    return c[0] if c[1] is None else f"{c[0]} (alpha {c[1]:g})"


def _fmt(r2) -> str:
    return " ".join(f"{v:+.3f}" for v in np.asarray(r2).ravel())


def calibrate(bundle_path, recording, out, *, minutes: float | None = None, folds: int = 5,
              alphas=ALPHAS, renormalize: bool = False, mapping: str | None = None, overwrite: bool = False,
              xdf_stream: str | None = None, behavior_stream: str | None = None, label_free: bool = False,
              log=print) -> dict:  # fmt: skip
    """Refit `bundle_path`'s readout on the first `minutes` of `recording` (all of it when
    None) and write the result to `out`. Returns what `calibration.json` holds. `label_free`:
    refit only the chain's z-scoring on the block's LFP (no behaviour read for it) and keep
    the readout: a new day for a bundle trained with `[chain] normalize = "session"`."""
    import onnx

    b = load_bundle(bundle_path)
    out = Path(out)
    src, dst = b.path.resolve(), out.resolve()
    if dst == src or dst in src.parents or src in dst.parents:
        raise CalibrationError(f"--out {out} is, holds or lies inside the bundle being calibrated ({b.path}), which writing "
                               "would remove: write the calibrated bundle to a new folder beside it")  # fmt: skip
    if out.exists() and not overwrite:
        raise CalibrationError(f"{out} already exists: choose another --out or pass --overwrite")
    if not 2 <= int(folds) <= 20 or int(folds) != folds:
        raise CalibrationError(f"--folds must be a whole number from 2 to 20, got {folds:g}")
    folds = int(folds)
    if label_free and renormalize:
        raise CalibrationError("--label-free and --renormalize are two ways of refitting the z-scoring: --label-free keeps "
                               "the readout and needs no behaviour, --renormalize refits the readout too; choose one")  # fmt: skip
    if label_free:
        return _label_free(b, recording, out, minutes, mapping, overwrite, xdf_stream, behavior_stream, log)
    model = onnx.load(str(b.model_path))
    ro = find_readout(model, b.model.output_name, where=str(b.model_path))
    if ro.n_out != b.n_outputs:
        raise CalibrationError(f"{b.model_path}: the readout has {ro.n_out} outputs, the manifest names {b.n_outputs}: rebuild the bundle")
    w = b.model.window_bins
    guard = w + GUARD_BINS  # a readout input spans a window; the chain's smoothing reaches a little further
    want_cal = None if minutes is None else int(round(minutes * 60.0 / b.chain.bin_width_s))
    lfp, beh, names, info = load_calibration(recording, b, mapping, log,
                                             None if want_cal is None else want_cal + guard + REST_MAX_BINS,
                                             xdf_stream=xdf_stream, behavior_stream=behavior_stream)  # fmt: skip
    n_cal = len(beh) if want_cal is None else min(len(beh), want_cal)
    _say_if_cut(recording, minutes, want_cal, n_cal, b.chain.bin_width_s, log)
    n_bins = min(len(beh), n_cal + guard + REST_MAX_BINS)  # at most 10 min of rest scored: memory stays bounded
    lfp, beh = lfp[: n_bins * b.chain.bin_samples], beh[:n_bins]
    start = w  # the ring's zero-filled first window is not data
    ok = np.isfinite(beh).all(1)  # tracking dropouts (NWB and .npz alike: kept NaN on reading, left out here)
    if not ok[start:n_cal].all():
        log(f"[calibrate] {int((~ok[start:n_cal]).sum())} calibration bins have NaN or infinite behaviour: left out of the fit")
    cal = np.arange(start, n_cal)[ok[start:n_cal]]
    if len(cal) < max(MIN_FIT_BINS + MIN_VAL_BINS, folds * MIN_VAL_BINS):
        need = max(MIN_FIT_BINS + MIN_VAL_BINS, folds * MIN_VAL_BINS) + 2 * w
        raise CalibrationError(f"{recording}: a calibration block of {n_cal} bins ({n_cal * b.chain.bin_width_s:.0f} s) leaves "
                               f"{len(cal)} bins with behaviour; give at least {need * b.chain.bin_width_s:.0f} s (--minutes), "
                               "a few minutes for a good fit")  # fmt: skip
    cv = folds_of(cal, folds, guard=guard)
    stats: dict = {}
    feats = compute_features(b.chain, lfp, stats=stats)
    if stats["nonfinite"]:
        log(f"[calibrate] {stats['nonfinite']} LFP values are NaN or infinite: held at the channel's last finite value, "
            "as the runtime repairs them")  # fmt: skip
    z, y_shipped = readout_inputs(b, model, ro, feats)  # the bundle as shipped: its chain, its readout
    w0, b0 = readout_weights(model, ro)
    chain = b.chain
    choice, val_r2 = choose_readout(z, beh, cv, w0, b0, alphas)
    shipped_val = cv_r2(beh, y_shipped, cv)
    renormalized = False
    if renormalize:  # the readout's inputs on a z-scoring refit on the block: kept only if it cross-validates better
        raw = compute_features(b.chain.without_normalization(), lfp[: n_cal * b.chain.bin_samples])
        chain_n = b.chain.with_normalization(*fit_normalization(raw[start:n_cal]))
        feats_n = compute_features(chain_n, lfp)
        z_n, _ = readout_inputs(b, model, ro, feats_n)
        choice_n, val_n = choose_readout(z_n, beh, cv, w0, b0, alphas)
        if np.mean(val_n) > np.mean(val_r2):
            chain, feats, z, choice, val_r2, renormalized = chain_n, feats_n, z_n, choice_n, val_n, True
        else:
            log(f"[calibrate] --renormalize: the refit z-scoring cross-validates below the bundle's own (mean "
                f"{np.mean(val_n):+.3f} against {np.mean(val_r2):+.3f}): the bundle's normalisation kept")  # fmt: skip
    w_new, b_new = refit_readout(z, beh, cal, w0, b0, choice)
    set_readout(model, ro, w_new, b_new)
    res = {
        "from_bundle": str(b.path), "from_model_sha256": b.files.get(b.model.file), "recording": info,
        "outputs": names, "bins": {"calibration": int(n_cal), "used": [int(cal[0]), int(cal[-1]) + 1], "guard": int(guard)},
        "folds": int(folds),
        "minutes": round(n_cal * chain.bin_width_s / 60.0, 3), "readout": {"op": ro.op, "input": ro.input, "dim": ro.dim},
        "choice": [_name(c) for c in choice], "renormalized": renormalized,
        "cv_r2": {"shipped": [round(float(v), 4) for v in shipped_val], "recalibrated": [round(float(v), 4) for v in val_r2],
                  "note": "out-of-fold R² over the calibration block; 'recalibrated' is the best of the candidates on these "
                          "folds, so it is optimistic: the rest of the recording, when there is one, is the unbiased figure"},
        "report_files": "report/ (if any) is the source bundle's training report: its figures are for the shipped readout",
    }  # fmt: skip
    rest0 = n_cal + guard
    rest = np.arange(rest0, n_bins)[ok[rest0:]]
    if len(rest) >= MIN_VAL_BINS:  # the recording goes on after the block: score both there
        res["rest"] = {"bins": [int(rest0), int(n_bins)], "minutes": round((n_bins - rest0) * chain.bin_width_s / 60.0, 3),
                       "shipped": [round(float(v), 4) for v in r2_score(beh[rest], y_shipped[rest])],
                       "recalibrated": [round(float(v), 4) for v in r2_score(beh[rest], z[rest].astype(np.float64) @ w_new + b_new)]}  # fmt: skip
    # parity, before anything is written: the patched graph, fed as the runtime feeds it, decodes
    # what numpy computes from the same readout inputs (so the figures above are the graph's)
    probe = min(n_bins, start + 400)
    _, y_new = readout_inputs(b, model, ro, feats[:probe])
    want_y = z[:probe].astype(np.float64) @ w_new + b_new
    err = float(np.max(np.abs(y_new - want_y) / (np.abs(want_y) + 1e-2 * (np.abs(want_y).max() + 1e-12))))
    if err > 1e-3:
        raise RuntimeError(f"the recalibrated graph differs from numpy by {err:.1e} (relative): nothing written")
    res["parity_max_rel_error"] = err
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / b.model.file
        onnx.save(model, str(onnx_path))
        carried = {k: str(b.path / k) for k in b.files if k != b.model.file and not k.startswith("engine") and k != "calibration.json"}
        js = Path(tmp) / "calibration.json"
        js.write_text(json.dumps(res, indent=1))
        prov = {**b.provenance, "calibration": {k: res[k] for k in ("from_bundle", "from_model_sha256", "recording", "minutes",
                                                                     "choice", "renormalized", "cv_r2", "readout")}}  # fmt: skip
        write_bundle(out, chain=chain, model_file=onnx_path, model=b.model, output_names=list(b.output_names),
                     output_units=list(b.output_units), channel_names=list(b.channel_names) if b.channel_names else None,
                     provenance=prov, extra_files={**carried, "calibration.json": js}, overwrite=overwrite)  # fmt: skip
    y_run = decode_recording(load_bundle(out), lfp[: probe * chain.bin_samples])  # as `rtdecode run`'s backend runs it
    err_run = float(np.max(np.abs(y_run - want_y) / (np.abs(want_y) + 1e-2 * (np.abs(want_y).max() + 1e-12))))
    if err_run > 1e-3:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError(f"the written bundle decodes {err_run:.1e} (relative) away from numpy: removed")
    log(f"[calibrate] {b.path} -> {out}: readout ({ro.op}, {ro.dim} inputs -> {ro.n_out} outputs) refit on the first "
        f"{res['minutes']:g} min of {Path(recording).name} (chosen by {folds}-fold blocked cross-validation)")  # fmt: skip
    log(f"  outputs                   {' '.join(f'{n:>6}' for n in names)}")
    log(f"  cross-validated, shipped  {_fmt(shipped_val)}   (mean {np.mean(shipped_val):+.3f})")
    log(f"  cross-validated, refit    {_fmt(val_r2)}   (mean {np.mean(val_r2):+.3f}; best of the candidates: optimistic)")
    log(f"  readout per output        {', '.join(f'{n}: {_name(c)}' for n, c in zip(names, choice))}")
    if "rest" in res:
        r = res["rest"]
        log(f"  rest ({r['minutes']:g} min), shipped      {_fmt(r['shipped'])}   (mean {np.mean(r['shipped']):+.3f})")
        log(f"  rest ({r['minutes']:g} min), recalibrated {_fmt(r['recalibrated'])}   (mean {np.mean(r['recalibrated']):+.3f})")
    if all(c[0] == "shipped" for c in choice) and not renormalized:
        log("[calibrate] no candidate beat the shipped readout in cross-validation: the new bundle decodes as the old "
            "one; calibrate on a longer block")  # fmt: skip
    if b.engines:
        log(f"[calibrate] the bundle's TensorRT engine(s) hold the old readout and were not carried: rtdecode compile {out}")
    return res


def _say_if_cut(recording, minutes, want_cal: int | None, n_cal: int, bw: float, log) -> None:
    """--minutes asked for more than the recording holds: say that the block is all of it, and so
    that nothing is left to score the calibration on."""
    if want_cal is not None and n_cal < want_cal:
        log(f"[calibrate] --minutes {minutes:g}: {Path(recording).name} holds only {n_cal * bw / 60.0:.2f} min, so the "
            "calibration block is the whole recording and no rest is left to score it on; record longer, or give "
            "--minutes below the recording's length to see the shipped and recalibrated R² on the rest")  # fmt: skip


MIN_NORM_BINS = 1000  # 10 s of 10-ms bins: the least a z-scoring is refit on (a few minutes is better)


def _label_free(b: Bundle, recording, out: Path, minutes, mapping, overwrite, xdf_stream, behavior_stream, log) -> dict:
    """The bundle's chain with its z-scoring refit on the first `minutes` of `recording`'s LFP
    (the readout and the graph as they are): what `[chain] normalize = "session"` trained
    every session on. Behaviour, where the file has the bundle's, only scores the rest."""
    bw = b.chain.bin_width_s
    want_cal = None if minutes is None else int(round(minutes * 60.0 / bw))
    guard = b.model.window_bins + GUARD_BINS
    if b.chain.norm_scope != "session":
        log(f"[calibrate] WARNING: {b.path} was trained on features z-scored over every training session together "
            "(chain.norm_scope = 'pooled'): its decoder never saw per-session statistics, so --label-free may not help; "
            "--renormalize (with behaviour) keeps the refit only where it cross-validates better")  # fmt: skip
    lfp, beh, names, info = load_calibration(recording, b, mapping, log,
                                             None if want_cal is None else want_cal + guard + REST_MAX_BINS,
                                             xdf_stream=xdf_stream, behavior_stream=behavior_stream, need_behavior=False)  # fmt: skip
    n_all = len(lfp) // b.chain.bin_samples
    n_cal = n_all if want_cal is None else min(n_all, want_cal)
    _say_if_cut(recording, minutes, want_cal, n_cal, bw, log)
    if n_cal < MIN_NORM_BINS:
        raise CalibrationError(f"{recording}: {n_cal} bins ({n_cal * bw:.1f} s) of LFP; label-free renormalisation needs at "
                               f"least {MIN_NORM_BINS * bw:.0f} s (--minutes), a few minutes for stable statistics")  # fmt: skip
    n_bins = min(n_all, n_cal + guard + REST_MAX_BINS)
    lfp, beh = lfp[: n_bins * b.chain.bin_samples], beh[:n_bins]
    stats: dict = {}
    raw = compute_features(b.chain.without_normalization(), lfp[: n_cal * b.chain.bin_samples], stats=stats)
    if stats["nonfinite"]:
        log(f"[calibrate] {stats['nonfinite']} LFP values are NaN or infinite: held at the channel's last finite value, "
            "as the runtime repairs them")  # fmt: skip
    mean, std = fit_normalization(raw)
    flat = int((std <= 1e-6).sum())
    if flat:
        log(f"[calibrate] WARNING: {flat} of {len(std)} features are flat over the block (a disconnected channel?): their "
            "std is floored, so they stay near 0 after z-scoring")  # fmt: skip
    chain = b.chain.with_normalization(mean, std)
    res = {
        "from_bundle": str(b.path), "from_model_sha256": b.files.get(b.model.file), "recording": info, "outputs": names,
        "label_free": True, "renormalized": True, "choice": ["shipped"] * len(names),
        "bins": {"calibration": int(n_cal), "used": [0, int(n_cal)], "guard": int(guard)},
        "minutes": round(n_cal * bw / 60.0, 3), "trained_norm_scope": b.chain.norm_scope,
        "report_files": "report/ (if any) is the source bundle's training report: its figures are for the source's statistics",
    }  # fmt: skip
    rest0 = n_cal + guard
    ok = np.isfinite(beh).all(1)
    rest = np.arange(rest0, n_bins)[ok[rest0:]]
    y_old = y_new = None
    if len(rest) >= MIN_VAL_BINS:  # the file has the bundle's behaviour after the block: score both there
        y_old = decode_recording(b, lfp)
    with tempfile.TemporaryDirectory() as tmp:
        js = Path(tmp) / "calibration.json"
        js.write_text(json.dumps(res, indent=1))
        carried = {k: str(b.path / k) for k in b.files if k != b.model.file and k != "calibration.json"}
        prov = {**b.provenance, "calibration": {k: res[k] for k in ("from_bundle", "from_model_sha256", "recording", "minutes",
                                                                     "choice", "renormalized", "label_free")}}  # fmt: skip
        write_bundle(out, chain=chain, model_file=b.model_path, model=b.model, output_names=list(b.output_names),
                     output_units=list(b.output_units), channel_names=list(b.channel_names) if b.channel_names else None,
                     provenance=prov, extra_files={**carried, "calibration.json": js},
                     engines=list(b.engines), overwrite=overwrite)  # fmt: skip
    nb = load_bundle(out)
    if y_old is not None:
        y_new = decode_recording(nb, lfp)
        res["rest"] = {"bins": [int(rest0), int(n_bins)], "minutes": round((n_bins - rest0) * bw / 60.0, 3),
                       "shipped": [round(float(v), 4) for v in r2_score(beh[rest], y_old[rest])],
                       "recalibrated": [round(float(v), 4) for v in r2_score(beh[rest], y_new[rest])]}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:  # the scores join calibration.json (rehashed in the manifest)
            js = Path(tmp) / "calibration.json"
            js.write_text(json.dumps(res, indent=1))
            update_manifest(nb.path, lambda m: None, add_files={"calibration.json": js})
    log(f"[calibrate] {b.path} -> {out}: the chain's z-scoring refit on the first {res['minutes']:g} min of "
        f"{Path(recording).name}'s LFP, label-free (the readout as trained{'; TensorRT engines carried: the graph is unchanged' if b.engines else ''})")  # fmt: skip
    if "rest" in res:
        r = res["rest"]
        log(f"  outputs                     {' '.join(f'{n:>6}' for n in names)}")
        log(f"  rest ({r['minutes']:g} min), shipped        {_fmt(r['shipped'])}   (mean {np.mean(r['shipped']):+.3f})")
        log(f"  rest ({r['minutes']:g} min), renormalised   {_fmt(r['recalibrated'])}   (mean {np.mean(r['recalibrated']):+.3f})")
    return res


def main_calibrate(args) -> int:
    calibrate(args.bundle, args.recording, args.out, minutes=args.minutes, folds=args.folds,
              renormalize=args.renormalize, mapping=args.mapping, overwrite=args.overwrite,
              xdf_stream=args.xdf_stream, behavior_stream=args.behavior_stream,
              label_free=getattr(args, "label_free", False))  # fmt: skip
    return 0
