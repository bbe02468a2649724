"""`rtdecode calibrate`: a bundle's readout refit on a new session (offline/calibrate.py).

Real bundles (a lagged ridge from offline.linear, small real students from offline.export in
every state layout), real ONNX Runtime sessions, and a calibration NWB file written here with
pynwb in a layout of its own (LFP in acquisition, in volts, no units table, behaviour as plain
TimeSeries): what a lab records on a new day.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rtdecode.batch import decode_recording, r2_score
from rtdecode.bundle import load_bundle, write_bundle
from rtdecode.recording import Recording

pytest.importorskip("onnx")
from offline.calibrate import CalibrationError, calibrate, find_readout, readout_inputs  # noqa: E402


def _nwb_without_units(path, lfp_uv: np.ndarray, fs: float, beh: np.ndarray, names: list[str], bin_width: float):
    """A calibration file as acquisition software and a tracker leave it: raw LFP in
    acquisition (volts, int16 counts with a conversion), behaviour in processing/behavior as one
    TimeSeries per output at the bin rate, no spikes."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.ecephys import ElectricalSeries

    nwb = NWBFile(session_description="calibration block", identifier="cal-day", session_id="day-new",
                  session_start_time=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))  # fmt: skip
    dev = nwb.create_device(name="amp")
    grp = nwb.create_electrode_group(name="shank", description="", location="M1", device=dev)
    for c in range(lfp_uv.shape[1]):
        nwb.add_electrode(group=grp, location="M1", id=c)
    region = nwb.create_electrode_table_region(list(range(lfp_uv.shape[1])), "all")
    step = 0.05  # uV per count
    counts = np.clip(np.round(lfp_uv / step), -32768, 32767).astype(np.int16)
    nwb.add_acquisition(ElectricalSeries(name="raw", data=counts, electrodes=region, rate=fs, starting_time=0.0,
                                         conversion=step * 1e-6))  # fmt: skip
    mod = nwb.create_processing_module("behavior", "tracking")
    for j, n in enumerate(names):
        mod.add(TimeSeries(name=n, data=beh[:, j], unit="a.u.", rate=1.0 / bin_width, starting_time=bin_width / 2))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.fixture(scope="module")
def ridge_case(tmp_path_factory):
    """A lagged-ridge bundle fit on one day, and another day whose electrodes were re-plugged
    (columns permuted, nothing says so) as an NWB file without units."""
    pytest.importorskip("pynwb")
    from offline.data.simulate import SimConfig, simulate_session
    from offline.linear import fit_linear_bundle

    tmp = tmp_path_factory.mktemp("cal")
    cfg = SimConfig(n_channels=32, duration_s=180.0)
    a = simulate_session(cfg, session_index=0, seed=0)
    b = simulate_session(cfg, session_index=1, seed=1)
    bundle = fit_linear_bundle(np.asarray(a.lfp), a.lfp_rate, a.behavior, list(a.behavior_names), tmp / "bundle", window_bins=10)
    lfp = np.asarray(b.lfp)[:, np.random.default_rng(3).permutation(32)]
    path = _nwb_without_units(tmp / "day-new.nwb", lfp, b.lfp_rate, np.asarray(b.behavior), list(b.behavior_names), b.bin_width)
    return bundle, path, lfp, np.asarray(b.behavior, np.float32), tmp


def test_a_replugged_day_is_recalibrated_from_an_nwb_file_without_units(ridge_case, capsys):
    bundle, path, lfp, beh, tmp = ridge_case
    res = calibrate(bundle.path, path, tmp / "cal", minutes=2)
    new = load_bundle(tmp / "cal")  # hashes verified
    rest = res["rest"]
    vel = [2, 3]  # vx, vy: what this simulator's LFP carries best (docs/families.md)
    shipped, recal = np.mean(np.take(rest["shipped"], vel)), np.mean(np.take(rest["recalibrated"], vel))
    assert recal > shipped + 0.15, rest  # the shipped readout reads the wrong electrodes
    assert recal > 0.1, rest  # it decodes again (2 min of this weak simulator; the README has a family table)
    # the figure is the new bundle's, decoded from the raw samples as the runtime's backend decodes them
    y = decode_recording(new, lfp)
    lo, hi = rest["bins"]
    np.testing.assert_allclose(r2_score(beh[lo:hi], y[lo:hi]), rest["recalibrated"], atol=2e-3)
    np.testing.assert_allclose(r2_score(beh[lo:hi], decode_recording(bundle, lfp)[lo:hi]), rest["shipped"], atol=2e-3)
    # nothing of the rest was fit on: the calibration block ends before it
    assert res["bins"]["calibration"] == 12000 and lo >= 12000 + bundle.model.window_bins
    assert new.provenance["calibration"]["minutes"] == 2 and new.chain == bundle.chain
    assert "calibration.json" in new.files and not new.engines
    out = capsys.readouterr().out
    assert "rest" in out and "recalibrated" in out
    from rtdecode.cli import main

    assert main(["info", str(tmp / "cal")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("calibrated:"))
    assert f"readout refit on 2.0 min of {path}" in line and str(res["cv_r2"]["recalibrated"]) in line, line
    assert str(res["cv_r2"]["shipped"]) in line and str(res["choice"]) in line, line


def test_the_scored_rest_never_reaches_the_fit(ridge_case, tmp_path):
    """Junk behaviour after the calibration block (and its guard) leaves the written readout
    exactly as it is; junk inside the block changes it."""
    import onnx

    bundle, _, lfp, beh, _ = ridge_case

    def weights(b, name):
        rec = tmp_path / f"{name}.npz"
        Recording(lfp, 1000.0, behavior=b, behavior_names=list(bundle.output_names), behavior_rate=100.0).save(rec)
        res = calibrate(bundle.path, rec, tmp_path / name, minutes=1, log=lambda *a: None)
        m = onnx.load(str(tmp_path / name / "model.onnx"))
        return [onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.name in ("W", "b")], res

    ref, res = weights(beh, "ref")
    lo = res["bins"]["calibration"] + res["bins"]["guard"]
    after = beh.copy()
    after[lo:] = np.random.default_rng(5).standard_normal(after[lo:].shape) * 50
    got, _ = weights(after, "after")
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
    inside = beh.copy()
    inside[lo - 3000 : lo - 2000] *= -1
    changed, _ = weights(inside, "inside")
    assert not all(np.array_equal(a, b) for a, b in zip(ref, changed))


def test_named_channels_in_another_order_are_put_in_the_bundles_order(tmp_path):
    """A day whose channels arrive in another order, named: reordered by name, so the
    calibrated bundle decodes the file exactly as the same day in the bundle's order does."""
    from offline.linear import fit_linear_bundle

    rng = np.random.default_rng(2)
    lfp = rng.standard_normal((40_000, 8)).astype(np.float32).cumsum(0) * 0.1
    names = [f"e{i}" for i in range(8)]
    beh = rng.standard_normal((4000, 2)).astype(np.float32)
    b = fit_linear_bundle(lfp, 1000.0, beh, ["u", "v"], tmp_path / "b", window_bins=5, line_freq=None, channel_names=names)
    perm = rng.permutation(8)
    ordered, shuffled = tmp_path / "ordered.npz", tmp_path / "shuffled.npz"
    Recording(lfp, 1000.0, channel_names=names, behavior=beh, behavior_names=["u", "v"], behavior_rate=100.0).save(ordered)
    Recording(lfp[:, perm], 1000.0, channel_names=[names[i] for i in perm], behavior=beh, behavior_names=["u", "v"],
              behavior_rate=100.0).save(shuffled)  # fmt: skip
    said = []
    r1 = calibrate(b.path, ordered, tmp_path / "c1", log=lambda *a: None)
    r2 = calibrate(b.path, shuffled, tmp_path / "c2", log=said.append)
    assert any("reordered by name" in str(x) for x in said)
    assert r1["cv_r2"] == r2["cv_r2"] and r1["choice"] == r2["choice"]


def test_a_graph_that_does_not_decode_what_numpy_computes_writes_nothing(ridge_case, tmp_path, monkeypatch):
    import offline.calibrate as cal

    bundle, path = ridge_case[0], ridge_case[1]
    real = cal.set_readout
    monkeypatch.setattr(cal, "set_readout", lambda model, ro, w, b: real(model, ro, w * 1.01, b))
    with pytest.raises(RuntimeError, match="differs from numpy"):
        cal.calibrate(bundle.path, path, tmp_path / "out", minutes=2, log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_renormalize_is_kept_only_when_it_cross_validates_better(ridge_case, tmp_path):
    """A lagged ridge reads z-scored features linearly, and its penalty is scale-free: a refit
    z-scoring adds nothing it cannot absorb, so the bundle's own is kept, and the log says so.
    A student is not linear in its input: a day whose features sit 5 sd off the bundle's
    training statistics decodes well only once the z-scoring is refit on it, and then the
    block's statistics are in the bundle."""
    import onnx

    from rtdecode.dsp import compute_features
    from tests.export.students import student_bundle

    bundle, path, lfp, beh, tmp = ridge_case
    said = []
    res = calibrate(bundle.path, path, tmp_path / "ridge", minutes=2, renormalize=True, log=said.append)
    assert not res["renormalized"] and load_bundle(tmp_path / "ridge").chain == bundle.chain
    assert any("normalisation kept" in str(x) for x in said), said

    b = student_bundle(tmp_path / "student", "window")[0]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((30_000, 8)).cumsum(0) * 0.5 + 20 * rng.standard_normal((30_000, 8))).astype(np.float32)
    model = onnx.load(str(b.model_path))
    ro = find_readout(model, b.model.output_name)
    f = compute_features(b.chain.without_normalization(), x)
    right = b.chain.with_normalization(f.mean(0), f.std(0))  # this day's own statistics
    z, _ = readout_inputs(b, model, ro, compute_features(right, x))  # the latents of this day, rightly normalised
    y = (z @ rng.standard_normal((ro.dim, 2)) / np.sqrt(ro.dim)).astype(np.float32)
    # the same student with training statistics that do not fit this day (an offset of 5 sd on every feature)
    stale = b.chain.with_normalization(f.mean(0) + 5 * f.std(0), f.std(0))
    b = write_bundle(tmp_path / "stale", chain=stale, model_file=b.model_path, model=b.model, output_names=list(b.output_names))
    rec = tmp_path / "day.npz"
    Recording(x, 1000.0, behavior=y, behavior_names=["vel_x", "vel_y"], behavior_rate=100.0).save(rec)
    plain = calibrate(b.path, rec, tmp_path / "plain", minutes=0.4, log=lambda *a: None)
    res = calibrate(b.path, rec, tmp_path / "renorm", minutes=0.4, renormalize=True, log=lambda *a: None)
    assert res["renormalized"]
    assert np.mean(res["rest"]["recalibrated"]) > np.mean(plain["rest"]["recalibrated"]), (res["rest"], plain["rest"])
    raw = compute_features(b.chain.without_normalization(), x)
    cal = slice(b.model.window_bins, res["bins"]["calibration"])
    np.testing.assert_allclose(load_bundle(tmp_path / "renorm").chain.norm_mean, raw[cal].mean(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("design,layout", [("streaming", "ring_v1"), pytest.param("streaming", "shift_v0", marks=pytest.mark.slow),
                                           ("window", "ring_v1")])  # fmt: skip
def test_a_student_bundles_readout_is_refit_on_its_own_latents(tmp_path, design, layout):
    """Behaviour made a known linear map of the student's latents (from the runtime's own
    backend): the refit readout finds it (R² near 1 on the rest), the untrained head does not,
    and the readout inputs are fed exactly as the runtime feeds the graph."""
    import onnx

    from tests.export.students import student_bundle

    b = student_bundle(tmp_path / "b", design, layout=layout)[0]
    rng = np.random.default_rng(0)
    lfp = (rng.standard_normal((30_000, 8)).cumsum(0) * 0.5 + 20 * rng.standard_normal((30_000, 8))).astype(np.float32)
    from rtdecode.dsp import compute_features

    model = onnx.load(str(b.model_path))
    ro = find_readout(model, b.model.output_name)
    assert (ro.op, ro.n_out) == ("Gemm", 2)
    z, y0 = readout_inputs(b, model, ro, compute_features(b.chain, lfp))
    np.testing.assert_allclose(y0, decode_recording(b, lfp), rtol=1e-4, atol=1e-5)  # fed as rtdecode run feeds it
    w = rng.standard_normal((ro.dim, 2))
    beh = (z @ w / np.sqrt(ro.dim) + 0.05 * rng.standard_normal((len(z), 2)) * (z @ w).std(0) / np.sqrt(ro.dim)).astype(np.float32)
    beh[800:840] = np.nan  # a tracking dropout inside the calibration block: left out, not fit
    rec = tmp_path / "day.npz"
    Recording(lfp, 1000.0, behavior=beh, behavior_names=["vel_x", "vel_y"], behavior_rate=100.0).save(rec)
    res = calibrate(b.path, rec, tmp_path / "cal", minutes=0.4, log=lambda *a: None)
    assert min(res["rest"]["recalibrated"]) > 0.95, res["rest"]
    assert max(res["rest"]["shipped"]) < 0.5, res["rest"]
    assert res["parity_max_rel_error"] < 1e-4
    lo, hi = res["rest"]["bins"]
    new = load_bundle(tmp_path / "cal")
    assert new.model == b.model  # the same state layout and names: the runtime feeds it as before
    np.testing.assert_allclose(r2_score(beh[lo:hi], decode_recording(new, lfp)[lo:hi]), res["rest"]["recalibrated"], atol=2e-3)


def _npz(path, n_s: float = 120.0, ch: int = 32, fs: float = 1000.0, names=("x", "y", "vx", "vy", "grip"), beh=True):
    rng = np.random.default_rng(1)
    n = int(n_s * fs)
    kw = {}
    if beh:
        kw = dict(behavior=rng.standard_normal((n // 10, len(names))).astype(np.float32), behavior_names=list(names), behavior_rate=100.0)
    Recording(rng.standard_normal((n, ch)).astype(np.float32), fs, **kw).save(path)
    return path


@pytest.mark.parametrize("case,match", [
    ("channels", "7 LFP channels; the bundle reads 32"),
    ("rate", "LFP at 500 Hz; the bundle's chain runs at 1000 Hz"),
    ("no_behavior", "has no behaviour; calibration needs the behaviour"),
    ("names", "missing ['grip']"),
    ("short", "give at least"),
    ("same_out", "is, holds or lies inside the bundle being calibrated"),
    ("parent_out", "is, holds or lies inside the bundle being calibrated"),
    ("folder", "is a folder"),
    ("corrupt_nwb", "not a readable NWB file"),
    ("missing_file", "no such file"),
])  # fmt: skip
def test_what_cannot_be_calibrated_is_refused_with_the_fix(ridge_case, tmp_path, case, match):
    bundle = ridge_case[0]
    rec, out = tmp_path / "r.npz", tmp_path / "out"
    if case == "channels":
        _npz(rec, ch=7)
    elif case == "rate":
        _npz(rec, fs=500.0)
    elif case == "no_behavior":
        _npz(rec, beh=False)
    elif case == "names":
        _npz(rec, names=("x", "y", "vx", "vy", "force"))
    elif case == "short":
        _npz(rec, n_s=5.0)
    elif case == "same_out":
        _npz(rec)
        out = bundle.path
    elif case == "parent_out":
        _npz(rec)
        out = bundle.path.parent  # --overwrite would remove the run folder and the bundle in it
    elif case == "folder":
        rec = tmp_path
    elif case == "corrupt_nwb":
        rec = tmp_path / "cut.nwb"
        rec.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    elif case == "missing_file":
        rec = tmp_path / "nothing.nwb"
    with pytest.raises(CalibrationError, match=match.replace("[", r"\[").replace("]", r"\]")):
        calibrate(bundle.path, rec, out, log=lambda *a: None, overwrite=True)
    assert not (tmp_path / "out").exists() and bundle.path.is_dir()


@pytest.mark.parametrize("label_free", [False, True])
def test_minutes_beyond_the_recording_say_the_block_is_all_of_it(ridge_case, tmp_path, label_free):
    """--minutes 3 on a 1-min file: it calibrates on the whole file and says so, and that no rest
    is left to score on (a probe found it silent); within the file it says nothing of the kind."""
    rec = _npz(tmp_path / "r.npz", n_s=60.0)
    said: list[str] = []
    res = calibrate(ridge_case[0].path, rec, tmp_path / "cut", minutes=3, label_free=label_free, log=said.append)
    cut = [m for m in said if "holds only" in m]
    assert len(cut) == 1 and "--minutes 3: r.npz holds only 1.00 min" in cut[0] and "no rest" in cut[0], said
    assert "rest" not in res
    said.clear()
    res = calibrate(ridge_case[0].path, rec, tmp_path / "within", minutes=0.5, label_free=label_free, log=said.append)
    assert not [m for m in said if "holds only" in m] and "rest" in res, said


def test_a_graph_whose_output_is_not_a_linear_readout_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.ones((4, 2), np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["features_flat", "W"], ["p"]), helper.make_node("Relu", ["p"], ["behavior"])],
                          "g", [helper.make_tensor_value_info("features_flat", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("behavior", TensorProto.FLOAT, [1, 2])],
                          initializer=[numpy_helper.from_array(w, "W")])  # fmt: skip
    with pytest.raises(CalibrationError, match="computed by Relu, not by a linear map"):
        find_readout(helper.make_model(g), "behavior")


def test_the_cli_refuses_in_one_line_with_exit_2(ridge_case, tmp_path, capsys):
    from rtdecode.cli import main

    rec = _npz(tmp_path / "r.npz", ch=7)
    assert main(["calibrate", str(ridge_case[0].path), str(rec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rtdecode calibrate: error:") and "7 LFP channels" in err[0], err


def test_the_readout_candidates_are_the_ridges_they_claim_to_be():
    """`_Fit` (one eigendecomposition for every penalty) against offline.train.decode.fit_ridge:
    "from zero" is the plain ridge, "toward shipped" the shipped weights plus the ridge of their
    residual, "offset" the shipped weights with the mean residual as intercept."""
    from offline.calibrate import _Fit, _solve
    from offline.train.decode import fit_ridge

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 12)), rng.standard_normal((400, 3))
    w0, b0 = rng.standard_normal((12, 3)), rng.standard_normal(3)
    f = _Fit(x)
    for a in (1e-3, 1.0, 100.0):
        r = fit_ridge(x, y, a)
        w, b = _solve(f, y, w0, b0, ("from zero", a))
        np.testing.assert_allclose(w, r.w, atol=1e-5)
        np.testing.assert_allclose(b, r.b, atol=1e-5)
        r = fit_ridge(x, y - x @ w0, a)
        w, b = _solve(f, y, w0, b0, ("toward shipped", a))
        np.testing.assert_allclose(w, w0 + r.w, atol=1e-5)
        np.testing.assert_allclose(b, r.b, atol=1e-5)
    w, b = _solve(f, y, w0, b0, ("offset", None))
    np.testing.assert_allclose(b, (y - x @ w0).mean(0), atol=1e-12)
    assert _solve(f, y, w0, b0, ("shipped", None)) == (w0, b0)


# ------------------------------------------------------------------------------------------
# a LabRecorder file: the raw stream and the task's kinematics, from two hosts, on one clock


def _arrival_stamps(n: int, fs: float, t0: float, rng, jitter_s: float = 0.003) -> np.ndarray:
    """Per-sample stamps as an acquisition program's outlet leaves them: chunks of 5-20 samples,
    each stamped at push time (its last sample's acquisition + 0-3 ms), the earlier ones
    back-dated by one period each (liblsl's push_chunk)."""
    t = np.empty(n)
    k = 0
    while k < n:
        m = min(int(rng.integers(5, 21)), n - k)
        last = t0 + (k + m - 1) / fs + rng.uniform(0, jitter_s)
        t[k : k + m] = last - (m - 1 - np.arange(m)) / fs
        k += m
    return t


def _lab_xdf(path, lfp, beh, names, *, fs=1000.0, bw=0.01, drop=None, beh_rate=60.0, beh_names=None, offset_s=2.5,
             clock_offsets=True, seed=0):  # fmt: skip
    """An XDF file as LabRecorder writes it on a rig: the amplifier's LFP stream (arrival stamps
    on the recorder's clock; `drop` = (sample, count) lost in transit), a marker stream, and the
    task's kinematics at `beh_rate` from another host whose clock is `offset_s` behind (with the
    ClockOffset chunks that bring it back, unless not `clock_offsets`). The kinematics start 0.7 s after the LFP and stop 1 s
    before it: bins outside them have no behaviour."""
    from tests.helpers import write_xdf

    rng = np.random.default_rng(seed)
    t0 = 5000.0
    t_lfp = _arrival_stamps(len(lfp), fs, t0, rng)
    keep = np.ones(len(lfp), bool)
    if drop:
        keep[drop[0] : drop[0] + drop[1]] = False
    t_true = t0 + (np.arange(len(beh)) + 0.5) * bw  # the bins' centres, on the acquisition clock
    tb = np.arange(t0 + 0.7, t_true[-1] - 1.0, 1.0 / beh_rate)
    cols = [names.index(n) for n in (beh_names or names)]
    bx = np.stack([np.interp(tb, t_true, beh[:, j]) for j in cols], 1)
    tb_host = tb - offset_s + rng.uniform(0, 0.002, len(tb))  # the task host's clock, stamped at push time
    streams = [
        {"id": 1, "name": "Amp-LFP", "type": "LFP", "rate": fs, "fmt": "float32", "data": lfp[keep], "times": t_lfp[keep]},
        {"id": 2, "name": "Task-Markers", "type": "Markers", "rate": 0, "fmt": "string", "data": [["start"], ["stop"]],
         "times": [t0 + 1, t0 + 2]},
        {"id": 3, "name": "Kinematics", "type": "Mocap", "rate": beh_rate, "fmt": "double64", "data": bx, "times": tb_host,
         "labels": list(beh_names or names), "clock_offsets": [(t0 + 5.0 * i, offset_s) for i in range(int(len(lfp) / fs / 5) + 1)] if clock_offsets else None},
    ]  # fmt: skip
    return write_xdf(path, streams)


def test_a_labrecorder_xdf_calibrates_as_the_same_block_at_the_bins_does(ridge_case, tmp_path):
    """The same new day, as an XDF file (arrival-stamped LFP, kinematics at 60 Hz from a host
    whose clock is 2.5 s behind, labels in another order, a marker stream beside them), and as
    an .npz with the behaviour at the bins: the two calibrations score alike on the rest. With
    the other host's clock taken as it is (no ClockOffset chunks) the behaviour is 2.5 s off and
    the same calibration does not decode."""
    bundle, _, lfp, beh, _ = ridge_case
    names = list(bundle.output_names)
    shuffled = [names[i] for i in (4, 2, 0, 3, 1)]
    xdf = _lab_xdf(tmp_path / "day.xdf", lfp, beh, names, beh_names=shuffled)
    rec = tmp_path / "day.npz"
    Recording(lfp, 1000.0, behavior=beh, behavior_names=names, behavior_rate=100.0).save(rec)
    said = []
    rx = calibrate(bundle.path, xdf, tmp_path / "from_xdf", minutes=2, log=said.append)
    rn = calibrate(bundle.path, rec, tmp_path / "from_npz", minutes=2, log=lambda *a: None)
    assert rx["recording"]["lfp_stream"] == "Amp-LFP" and rx["recording"]["behavior_stream"] == "Kinematics"
    assert rx["recording"]["lfp_pauses"] == 0
    vel = [2, 3]
    x, n = np.take(rx["rest"]["recalibrated"], vel), np.take(rn["rest"]["recalibrated"], vel)
    assert n.mean() > 0.1, rn["rest"]
    np.testing.assert_allclose(x, n, atol=0.03)
    # the bins without kinematics (its first 0.7 s, its last second) are left out, not zero-filled
    assert rx["bins"]["used"][0] >= 70 and rx["recording"]["behavior_bins"] <= len(beh) - 170
    assert any("NaN or infinite behaviour" in str(m) for m in said)
    # the same file without its ClockOffset chunks: the task host's stamps taken as they are, 2.5 s off
    off = _lab_xdf(tmp_path / "off.xdf", lfp, beh, names, beh_names=shuffled, clock_offsets=False)
    ro = calibrate(bundle.path, off, tmp_path / "from_off", minutes=2, log=lambda *a: None)
    assert np.take(ro["rest"]["recalibrated"], vel).mean() < n.mean() - 0.1, (ro["rest"], rn["rest"])


def test_lost_samples_in_an_xdf_keep_the_behaviour_on_its_own_time(ridge_case, tmp_path):
    """2 s of LFP lost in transit (the recorder has nothing for them): the bins after the loss
    get the behaviour of their own time, from the stamps, not of the sample count; the pause is
    reported; positions alone give velocity by the backward difference over a bin."""
    from offline.calibrate import load_calibration

    bundle, _, lfp, beh, _ = ridge_case
    names = list(bundle.output_names)
    xdf = _lab_xdf(tmp_path / "lossy.xdf", lfp, beh, names, drop=(60_000, 2000), beh_rate=100.0)
    said = []
    lfp_x, beh_x, got_names, info = load_calibration(xdf, bundle, log=said.append)
    assert info["lfp_pauses"] == 1 and any("pause 1 time" in str(m) for m in said)
    assert len(lfp_x) == len(lfp) - 2000 - (len(lfp) - 2000) % 10
    before, after = slice(100, 5900), slice(6000, len(beh_x) - 200)  # bins of the LFP that remained
    err_b = np.abs(beh_x[before] - beh[before]).max(0)
    err_a = np.abs(beh_x[after] - beh[after.start + 200 : after.stop + 200]).max(0)
    scale = beh.std(0)
    assert (err_b < 0.05 * scale).all() and (err_a < 0.05 * scale).all(), (err_b / scale, err_a / scale)
    # by sample count they would be 2 s off
    assert (np.abs(beh_x[after] - beh[after]).max(0) > 0.5 * scale).all()
    # a tracker of positions only: velocity derived on the bin grid
    pos = _lab_xdf(tmp_path / "pos.xdf", lfp, beh, names, beh_rate=100.0, beh_names=["x", "y", "grip"])
    said = []
    _, beh_p, got, _ = load_calibration(pos, bundle, log=said.append)
    assert got == names and any("velocity derived" in str(m) for m in said)
    ok = np.isfinite(beh_p).all(1)
    ok[1:] &= ok[:-1]
    vx = np.diff(beh_p[:, 0], prepend=np.nan) / bundle.chain.bin_width_s
    np.testing.assert_allclose(beh_p[ok, 2], vx[ok], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case,match", [
    ("no kinematics", "no stream whose channel labels name the bundle's outputs"),
    ("two amplifiers", "2 streams of 32 channels at 1000 Hz"),
    ("stream not there", "no stream named or typed 'Hand'"),
    ("xdf flag on npz", "choose the streams of an XDF file"),
])  # fmt: skip
def test_an_xdf_that_cannot_be_calibrated_on_is_refused_with_the_fix(ridge_case, tmp_path, case, match):
    from tests.helpers import write_xdf

    bundle, _, lfp, beh, _ = ridge_case
    names = list(bundle.output_names)
    n = 20_000
    lf = {"id": 1, "name": "Amp-LFP", "type": "LFP", "rate": 1000.0, "fmt": "float32", "data": lfp[:n],
          "times": 100 + np.arange(n) / 1000.0}  # fmt: skip
    kin = {"id": 2, "name": "Kinematics", "type": "Mocap", "rate": 100.0, "fmt": "float32", "data": beh[: n // 10],
           "times": 100.005 + np.arange(n // 10) / 100.0, "labels": names}  # fmt: skip
    kw = {}
    if case == "no kinematics":
        path = write_xdf(tmp_path / "f.xdf", [lf, {**kin, "labels": ["a", "b", "c", "d", "e"]}])
    elif case == "two amplifiers":
        path = write_xdf(tmp_path / "f.xdf", [lf, {**lf, "id": 3, "name": "Amp-2"}, kin])
    elif case == "stream not there":
        path = write_xdf(tmp_path / "f.xdf", [lf, kin])
        kw = {"behavior_stream": "Hand"}
    else:
        path = tmp_path / "f.npz"
        Recording(lfp[:n], 1000.0, behavior=beh[: n // 10], behavior_names=names, behavior_rate=100.0).save(path)
        kw = {"xdf_stream": "Amp-LFP"}
    with pytest.raises(CalibrationError, match=match) as e:
        calibrate(bundle.path, path, tmp_path / "out", log=lambda *a: None, **kw)
    assert not (tmp_path / "out").exists()
    if case != "xdf flag on npz":
        assert "Amp-LFP" in str(e.value) and ("--behavior-stream" in str(e.value) or "--xdf-stream" in str(e.value)
                                                 or "the file has" in str(e.value))  # fmt: skip


def _stale_student(tmp_path, x, scope="session"):
    """A small real student bundle whose z-scoring does not fit day `x` (every feature 5 sd off,
    its spread a third of the day's), and behaviour that is what the same bundle decodes from
    `x` under the day's own statistics, plus noise: what a per-session-normalised bundle meets
    on a new day."""
    import dataclasses

    from rtdecode.dsp import compute_features
    from tests.export.students import student_bundle

    b = student_bundle(tmp_path / "student", "window")[0]
    f = compute_features(b.chain.without_normalization(), x)
    right = write_bundle(tmp_path / "right", chain=b.chain.with_normalization(f.mean(0), f.std(0)), model_file=b.model_path,
                         model=b.model, output_names=list(b.output_names))  # fmt: skip
    y = decode_recording(right, x)
    y = (y + 0.2 * y.std(0) * np.random.default_rng(7).standard_normal(y.shape)).astype(np.float32)
    stale = dataclasses.replace(b.chain.with_normalization(f.mean(0) + 5 * f.std(0), 0.3 * f.std(0)), norm_scope=scope)
    b = write_bundle(tmp_path / f"stale-{scope}", chain=stale, model_file=b.model_path, model=b.model,
                     output_names=list(b.output_names))  # fmt: skip
    return b, y


def test_label_free_renormalisation_refits_only_the_z_scoring_and_needs_no_behaviour(tmp_path):
    """`--label-free` on a day recorded without behaviour (.npz and an NWB file with nothing
    under processing/behavior): the new bundle's chain holds the block's own statistics (the
    first MINUTES, nothing after them), its graph is the source's byte for byte, and on the same
    day with behaviour the rest decodes far better than as shipped."""
    from rtdecode.dsp import compute_features

    rng = np.random.default_rng(0)  # stationary: the block's statistics are the day's
    t = np.arange(60_000)[:, None] / 1000.0
    x = (30 * np.sin(2 * np.pi * rng.uniform(0.5, 3, 8) * t + rng.uniform(0, 6, 8)) + 20 * rng.standard_normal((60_000, 8)))
    x = x.astype(np.float32)
    b, y = _stale_student(tmp_path, x)
    bare = tmp_path / "bare.npz"
    Recording(x, 1000.0).save(bare)
    said = []
    res = calibrate(b.path, bare, tmp_path / "lf", minutes=0.4, label_free=True, log=said.append)
    new = load_bundle(tmp_path / "lf")
    n_cal = res["bins"]["calibration"]
    assert n_cal == 2400 and res["label_free"] and "rest" not in res  # nothing to score without behaviour
    raw = compute_features(b.chain.without_normalization(), x)
    np.testing.assert_allclose(new.chain.norm_mean, raw[:n_cal].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.chain.norm_std, raw[:n_cal].std(0), rtol=1e-4)
    assert not np.allclose(new.chain.norm_mean, raw.mean(0), rtol=1e-3)  # the block only, not the whole day
    assert new.chain.norm_scope == "session" and new.files["model.onnx"] == b.files["model.onnx"]
    assert new.provenance["calibration"]["label_free"] and not any("WARNING" in str(s) for s in said)
    # the same day with behaviour: scored on the rest, after the block and its guard
    rec = tmp_path / "day.npz"
    Recording(x, 1000.0, behavior=y, behavior_names=["vel_x", "vel_y"], behavior_rate=100.0).save(rec)
    res = calibrate(b.path, rec, tmp_path / "lf2", minutes=0.4, label_free=True, log=lambda *a: None)
    lo, hi = res["rest"]["bins"]
    assert lo == n_cal + res["bins"]["guard"]
    assert np.mean(res["rest"]["recalibrated"]) > 0.8 and np.mean(res["rest"]["shipped"]) < 0.5, res["rest"]
    got = decode_recording(load_bundle(tmp_path / "lf2"), x)
    np.testing.assert_allclose(r2_score(y[lo:hi], got[lo:hi]), res["rest"]["recalibrated"], atol=2e-3)
    # an NWB file of the day with no behaviour at all reads as the .npz does
    pytest.importorskip("pynwb")
    nwb = _nwb_without_units(tmp_path / "bare.nwb", x.astype(np.float64), 1000.0, np.zeros((6000, 0)), [], 0.01)
    calibrate(b.path, nwb, tmp_path / "lf3", minutes=0.4, label_free=True, log=lambda *a: None)
    np.testing.assert_allclose(load_bundle(tmp_path / "lf3").chain.norm_mean, new.chain.norm_mean, rtol=1e-3, atol=0.05)


def test_label_free_on_a_pooled_bundle_warns_and_refuses_what_it_cannot_do(ridge_case, tmp_path, capsys):
    bundle, path, lfp, beh, tmp = ridge_case
    said = []
    calibrate(bundle.path, path, tmp_path / "pooled", minutes=2, label_free=True, log=said.append)
    assert any("chain.norm_scope = 'pooled'" in str(s) and "WARNING" in str(s) for s in said), said
    with pytest.raises(CalibrationError, match="label-free renormalisation needs at least 10 s"):
        calibrate(bundle.path, path, tmp_path / "short", minutes=0.1, label_free=True, log=lambda *a: None)
    with pytest.raises(CalibrationError, match="choose one"):
        calibrate(bundle.path, path, tmp_path / "both", minutes=2, label_free=True, renormalize=True)
    from rtdecode.cli import main

    assert main(["calibrate", str(bundle.path), str(path), "--out", str(tmp_path / "cli"), "--minutes", "1", "--label-free"]) == 0
    assert main(["info", str(tmp_path / "cli")]) == 0
    assert "the chain's z-scoring refit, label-free, on 1.0 min" in capsys.readouterr().out
