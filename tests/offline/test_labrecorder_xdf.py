"""An XDF file written by LabRecorder itself (tests/data/labrecorder/README.md says how), read
by `rtdecode calibrate` and `rtdecode replay`: the layout is the recorder's, not this project's
test writer's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_bundle, synthetic_recording

pytest.importorskip("pyxdf")

DAY = Path(__file__).resolve().parents[1] / "data" / "labrecorder" / "day.xdf"
N_SAMPLES, SEED = 60_000, 11  # tools/labrecorder/record_day.py


def _truth():
    lfp, _ = synthetic_recording(n_samples=N_SAMPLES, n_channels=4, seed=SEED)
    return lfp


def _behaviour_at(k):
    t = np.asarray(k, np.float64) / 1000.0 + SEED * 7.3
    return np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t)], -1)


@pytest.fixture(scope="module")
def session_bundle(tmp_path_factory):
    from rtdecode.bundle import write_bundle

    tmp = tmp_path_factory.mktemp("labrec")
    b0 = make_bundle(tmp / "b0", n_channels=4, window_bins=10)
    return write_bundle(tmp / "b", chain=dataclasses.replace(b0.chain, norm_scope="session"), model_file=b0.model_path,
                        model=b0.model, output_names=list(b0.output_names))  # fmt: skip


def test_labrecorders_file_reads_as_the_samples_pushed_with_the_behaviour_on_their_time(session_bundle):
    from offline.calibrate import load_calibration

    said = []
    lfp, beh, names, info = load_calibration(DAY, session_bundle, log=said.append)
    assert info["lfp_stream"] == "Amp-LFP" and info["behavior_stream"] == "Kinematics" and info["lfp_pauses"] == 0
    assert names == ["vel_x", "vel_y"]
    truth = _truth()
    k0 = np.flatnonzero((truth == lfp[0]).all(1))
    assert len(k0) == 1, "the file's first sample is not one of the pushed ones"
    k0 = int(k0[0])
    # every sample the recorder got, once, in order, as pushed (the reader keeps whole bins)
    assert len(lfp) >= 23_000 and np.array_equal(lfp, truth[k0 : k0 + len(lfp)])
    # the kinematics (another stream, 60 Hz, stamped at push) land on the LFP's bins: bin b ends
    # at sample k0 + 10 (b + 1) - 1
    ok = np.isfinite(beh).all(1)
    assert ok.mean() > 0.95
    b = np.flatnonzero(ok)
    want = _behaviour_at(k0 + 10 * (b + 1) - 1)
    err = np.abs(beh[ok] - want).max(0)
    assert (err < 0.05 * want.std(0)).all(), err / want.std(0)
    # one bin (10 ms) later would be wrong by more than that: the test can tell
    late = np.abs(beh[ok] - _behaviour_at(k0 + 10 * (b + 2) - 1)).max(0)
    assert (late > err).all()


def test_labrecorders_file_calibrates_with_and_without_behaviour(session_bundle, tmp_path):
    from offline.calibrate import calibrate, load_calibration
    from rtdecode.bundle import load_bundle
    from rtdecode.dsp import compute_features
    from rtdecode.recording import Recording

    lfp, beh, names, _ = load_calibration(DAY, session_bundle, log=lambda *a: None)
    res = calibrate(session_bundle.path, DAY, tmp_path / "cal", minutes=0.2, log=lambda *a: None)
    assert res["recording"]["lfp_stream"] == "Amp-LFP"
    assert np.mean(res["rest"]["recalibrated"]) > 0.8, res["rest"]
    # the same samples and behaviour as an .npz calibrate alike
    npz = tmp_path / "day.npz"
    Recording(lfp, 1000.0, behavior=beh, behavior_names=names, behavior_rate=100.0).save(npz)
    rn = calibrate(session_bundle.path, npz, tmp_path / "cal_npz", minutes=0.2, log=lambda *a: None)
    np.testing.assert_allclose(res["rest"]["recalibrated"], rn["rest"]["recalibrated"], atol=0.02)
    # label-free: the chain's statistics are the block's, from the recorder's samples
    lf = calibrate(session_bundle.path, DAY, tmp_path / "lf", minutes=0.2, label_free=True, log=lambda *a: None)
    n_cal = lf["bins"]["calibration"]
    assert n_cal == 1200
    raw = compute_features(session_bundle.chain.without_normalization(), lfp)[:n_cal]
    new = load_bundle(tmp_path / "lf")
    np.testing.assert_allclose(new.chain.norm_mean, raw.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.chain.norm_std, raw.std(0), rtol=1e-4)


def test_labrecorders_file_replays_its_lfp(tmp_path):
    """`rtdecode replay day.xdf --xdf-stream Amp-LFP` plays the recorder's LFP; without the
    flag, two streams with a rate (the LFP and the 60 Hz kinematics) are refused with the fix."""
    from rtdecode.recording import RecordingError, load_any

    with pytest.raises(RecordingError, match="2 streams could be played.*'Amp-LFP'.*--xdf-stream NAME"):
        load_any(DAY)
    rec = load_any(DAY, xdf_stream="Amp-LFP")
    truth = _truth()
    k0 = int(np.flatnonzero((truth == rec.data[0]).all(1))[0])
    assert rec.sampling_rate == 1000.0 and rec.n_channels == 4
    assert np.array_equal(rec.data, truth[k0 : k0 + len(rec.data)])
