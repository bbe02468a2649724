"""`rtdecode replay` of other tools' files: an NWB file written by pynwb and an XDF file
written here (pyxdf only reads), each played by the CLI in another process as a real LSL
outlet and pulled with a real inlet; and every bad input refused in one line, exit 2."""

from __future__ import annotations

import datetime as dt
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

try:
    from pylsl.util import LostError
except ImportError:  # older pylsl
    LostError = pylsl.LostError

from rtdecode.cli import main
from tests.helpers import write_xdf

def xdf_file(path: Path, n: int = 3000) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    lfp = rng.standard_normal((n, 4)).astype(np.float32) * 50
    lfp[:, 0] = np.arange(n)  # the sample index: aligns what the inlet got with the file
    aux = rng.standard_normal((n // 4, 2)).astype(np.float32)
    streams = [
        {"id": 1, "name": "Markers", "type": "Markers", "rate": 0, "fmt": "string", "data": [["go"], ["stop"]],
         "times": [10.0, 12.0]},
        {"id": 2, "name": "Aux", "type": "EMG", "rate": 250, "fmt": "float32", "data": aux, "times": 10 + np.arange(len(aux)) / 250},
        {"id": 3, "name": "Probe-LFP", "type": "LFP", "rate": 1000, "fmt": "float32", "data": lfp,
         "times": 10 + np.arange(n) / 1000, "labels": ["e1", "e2", "e3", "e4"]},
    ]  # fmt: skip
    return write_xdf(path, streams), lfp


# ------------------------------------------------------------------------------------------
# an NWB file: LFP as int16 counts in acquisition, and a float copy in processing/ecephys


def nwb_file(path: Path, n: int = 3000) -> tuple[Path, np.ndarray]:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import LFP, ElectricalSeries

    rng = np.random.default_rng(1)
    counts = rng.integers(-3000, 3000, (n, 4)).astype(np.int16)
    counts[:, 0] = np.arange(n)
    nwb = NWBFile(session_description="replay", identifier=uuid.uuid4().hex, session_start_time=dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
    dev = nwb.create_device(name="amp")
    grp = nwb.create_electrode_group(name="g", description="d", location="M1", device=dev)
    for c in range(4):
        nwb.add_electrode(group=grp, location="M1", id=300 + c)
    reg = nwb.create_electrode_table_region([0, 1, 2, 3], "all")
    nwb.add_acquisition(ElectricalSeries(name="raw", data=counts, electrodes=reg, rate=1000.0, conversion=0.195e-6))
    lfp = LFP(name="LFP")
    nwb.create_processing_module("ecephys", "lfp").add(lfp)
    lfp.add_electrical_series(ElectricalSeries(name="lfp", data=-counts[:, ::-1].astype(np.float32), electrodes=reg, rate=1000.0,
                                               conversion=1e-6))  # fmt: skip
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path, counts


# ------------------------------------------------------------------------------------------


def play_and_pull(args: list[str], n_channels: int, timeout: float = 30.0) -> tuple[np.ndarray, list[str]]:
    """`rtdecode replay ARGS --name <unique>` in another process; everything a real inlet
    receives until the outlet goes, and the channel labels of its stream."""
    name = f"RF-{uuid.uuid4().hex[:10]}"
    cmd = [sys.executable, "-m", "rtdecode.cli", "replay", *args, "--name", name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("READY"), f"no READY line from {cmd}: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        found = pylsl.resolve_byprop("name", name, 1, 10.0)
        assert found, f"stream {name} not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=60, recover=False)
        info = inlet.info(5.0)
        assert info.channel_count() == n_channels
        ch, labels = info.desc().child("channels").child("channel"), []
        while not ch.empty():
            labels.append(ch.child_value("label"))
            ch = ch.next_sibling()
        rows, t_end = [], time.monotonic() + timeout
        while time.monotonic() < t_end:
            try:
                data, _ = inlet.pull_chunk(timeout=0.2, max_samples=4096)
            except LostError:
                break
            if data:
                rows.append(np.asarray(data, np.float32))
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout) == 0, proc.stderr.read()
        return np.concatenate(rows), labels
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _check_contiguous(got: np.ndarray, want: np.ndarray, index_of_first: int, **tol) -> None:
    k0 = index_of_first
    assert got.shape[0] > 0.7 * want.shape[0], f"only {got.shape[0]} of {want.shape[0]} samples arrived"
    assert k0 + got.shape[0] <= want.shape[0]
    if tol:
        np.testing.assert_allclose(got, want[k0 : k0 + got.shape[0]], **tol)
    else:
        np.testing.assert_array_equal(got, want[k0 : k0 + got.shape[0]])


def test_replay_plays_an_xdf_stream_sample_for_sample(tmp_path):
    path, lfp = xdf_file(tmp_path / "session.xdf")
    got, labels = play_and_pull([str(path), "--xdf-stream", "Probe-LFP", "--speed", "2"], 4)
    assert labels == ["e1", "e2", "e3", "e4"]
    _check_contiguous(got, lfp, int(got[0, 0]))
    assert got[-1, 0] == len(lfp) - 1  # played to the end
    import gzip

    from rtdecode.recording import load_any

    z = tmp_path / "session.xdfz"
    z.write_bytes(gzip.compress(path.read_bytes()))
    rec = load_any(z, xdf_stream="LFP")  # by type; compressed
    np.testing.assert_array_equal(rec.data, lfp)
    assert rec.sampling_rate == 1000.0 and rec.channel_names == ["e1", "e2", "e3", "e4"]


def test_replay_plays_the_nwb_series_the_mapping_chooses(tmp_path):
    path, counts = nwb_file(tmp_path / "rec.nwb")
    toml = tmp_path / "map.toml"
    toml.write_text('[data.nwb]\nlfp = "raw"          # acquisition/raw, not the default processing/ecephys/LFP/lfp\n')
    got, labels = play_and_pull([str(path), "--mapping", str(toml), "--speed", "2"], 4)
    assert labels == ["300", "301", "302", "303"]  # electrode ids, as the bundle's channel names
    want = counts.astype(np.float64) * 0.195  # microvolts
    _check_contiguous(got, want, int(round(got[0, 0] / 0.195)), rtol=1e-6, atol=1e-4)
    # without a mapping, the LFP as `rtdecode distill` finds it; --nwb-lfp picks another
    from rtdecode.recording import load_any, nwb_mapping_for

    rec = load_any(path)
    assert rec.meta["series"] == "processing/ecephys/LFP/lfp" and rec.n_samples == 3000
    np.testing.assert_array_equal(rec.data, -counts[:, ::-1].astype(np.float32))
    short = load_any(path, nwb_mapping=nwb_mapping_for(path, None, "acquisition/raw"), max_seconds=0.5)
    assert short.meta["series"] == "acquisition/raw" and short.n_samples == 500


BAD_FILES = {
    "missing.npz": (None, "missing.npz: no such file; rtdecode replay reads rtdecode recordings (.npz), NWB files (.nwb) and XDF"),
    "folder.npz": ("dir", "is a folder; rtdecode replay plays one file"),
    "foreign.npz": ("foreign", "an .npz, but not an rtdecode recording (rtdecode replay reads"),
    "text.npz": ("text", "text.npz: not an .npz (zip) archive (it does not start like one); rtdecode replay reads"),
    "pickled.npz": ("pickle", "it holds Python objects, which rtdecode never unpickles"),
    "text.nwb": ("text", "text.nwb: not an NWB (HDF5) file"),
    "text.xdf": ("text", "text.xdf: not an XDF file"),
    "notes.csv": ("text", "unknown file type '.csv'; rtdecode replay reads rtdecode recordings (.npz), NWB files (.nwb)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_the_formats(name, tmp_path, capsys):
    kind, want = BAD_FILES[name]
    p = tmp_path / name
    if kind == "dir":
        p.mkdir()
    elif kind == "foreign":
        np.savez(p, x=np.arange(3))
    elif kind == "text":
        p.write_text("time,value\n0,1\n")
    elif kind == "pickle":
        np.savez(p, format=np.array("rtdecode-recording"), data=np.array([{"a": 1}], dtype=object))
    assert main(["replay", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtdecode replay: error: ") and want in err, err
    assert "Traceback" not in err and "allow_pickle" not in err and err.count("\n") == 1, err


def test_bad_choices_inside_good_files_are_refused(tmp_path, capsys):
    xdf, _ = xdf_file(tmp_path / "s.xdf", n=400)
    nwb, _ = nwb_file(tmp_path / "r.nwb", n=400)
    cases = [
        (["replay", str(xdf)], "2 streams could be played; the file has: 'Markers'"),
        (["replay", str(xdf), "--xdf-stream", "EEG"], "no stream named or typed 'EEG'; the file has:"),
        (["replay", str(xdf), "--xdf-stream", "Markers"], "cannot be replayed: it needs numeric samples at a nominal rate"),
        (["replay", str(nwb), "--nwb-lfp", "nope"], "mapping.lfp = 'nope' is not an ElectricalSeries in this file"),
        (["replay", str(nwb), "--xdf-stream", "LFP"], "--xdf-stream chooses a stream of an XDF file"),
        (["replay", str(xdf), "--nwb-lfp", "raw"], "--mapping and --nwb-lfp choose the series of an NWB file"),
        (["replay", str(nwb), "--mapping", str(tmp_path / "none.toml")], "none.toml does not exist"),
    ]
    for argv, want in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("rtdecode replay: error: ") and want in err and "Traceback" not in err, (argv, err)
    bad = tmp_path / "typo.toml"
    bad.write_text("[data.nwb]\nlpf = 'raw'\n")
    assert main(["replay", str(nwb), "--mapping", str(bad)]) == 2
    assert "unknown key 'lpf' (did you mean 'lfp'?)" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,want", [
    ("--speed", "0", "argument --speed: must be a number > 0, got '0'"),
    ("--speed", "-2", "argument --speed: must be a number > 0, got '-2'"),
    ("--chunk", "0", "argument --chunk: must be a whole number >= 1, got '0'"),
    ("--chunk", "-5", "argument --chunk: must be a whole number >= 1, got '-5'"),
    ("--duration", "0", "argument --duration: must be a number > 0, got '0'"),
    ("--duration", "-1", "argument --duration: must be a number > 0, got '-1'"),
])  # fmt: skip
def test_bad_numbers_are_refused_before_anything_plays(flag, value, want, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["replay", str(tmp_path / "any.npz"), f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert want in err and "Traceback" not in err, err


def test_the_library_refuses_them_too():
    from rtdecode.recording import Recording
    from rtdecode.replay import replay

    rec = Recording(np.zeros((10, 1), np.float32), 100.0)
    for kw, want in (({"duration": 0.0}, "duration must be > 0"), ({"duration": -1.0}, "duration must be > 0"),
                     ({"speed": 0.0}, "speed must be"), ({"speed": float("inf")}, "speed must be"),
                     ({"chunk_size": 0}, "chunk_size must be")):  # fmt: skip
        with pytest.raises(ValueError, match=want):
            replay(rec, **kw)
