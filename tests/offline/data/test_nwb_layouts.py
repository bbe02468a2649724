"""NWB files in layouts unlike the simulator's, read through a distill config's [data.nwb]
table (load_config -> load_sessions): values, channel ids, units, derived velocity, per-file
overrides, refused typos, and output units carried into a bundle's manifest.

Layout A: LFP as int16 counts in `acquisition` (conversion to volts), electrodes in reverse
order, behaviour in a BehavioralTimeSeries of module "tracking": position only ("hand_position",
metres, 2 columns) and "grip_force" (N, timestamps): velocity is derived.
Layout B: two ElectricalSeries in module "ephys_preproc" (the LFP must be named), cursor
position in a Position container and velocities as TimeSeries of module "task", and the units
table inside a processing module with the ids in a "cluster_id" column and a "quality" column
to keep only the good units.
Layout C: an Intan-like recording: uint16 counts with an offset and per-channel gains, stamped
sample by sample by a clock that drifts from the nominal rate (the bins follow the stamps).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pytest

N_BINS, FS, CH, BW, T0 = 900, 1000.0, 8, 0.01, 3.0
SPB = int(FS * BW)


def truth(seed: int, n_units: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    t = np.arange(N_BINS) * BW
    counts = rng.integers(-2000, 2000, (N_BINS * SPB, CH)).astype(np.int16)
    pos = np.stack([0.05 * np.sin(2 * np.pi * 0.4 * t + seed), 0.03 * np.cos(2 * np.pi * 0.3 * t)], 1)
    pos += 0.002 * rng.standard_normal(pos.shape)
    grip = np.abs(3 * np.sin(2 * np.pi * 0.5 * t)) + 0.1 * rng.random(N_BINS)
    spikes = rng.poisson(0.3, (N_BINS, n_units)).astype(np.int64)
    return {"counts": counts, "pos": pos.astype(np.float32), "grip": grip.astype(np.float32), "spikes": spikes,
            "vel": rng.standard_normal((N_BINS, 2)).astype(np.float32)}  # fmt: skip


def _nwb(session_id: str):
    from pynwb import NWBFile

    nwb = NWBFile(session_description="another lab", identifier=f"id-{session_id}", session_id=session_id,
                  session_start_time=dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc))  # fmt: skip
    dev = nwb.create_device(name="probe")
    grp = nwb.create_electrode_group(name="shank0", description="d", location="M1", device=dev)
    for c in range(CH):
        nwb.add_electrode(group=grp, location="M1", id=200 + c)
    return nwb


def _spike_times(spikes: np.ndarray, u: int) -> np.ndarray:
    b = np.repeat(np.arange(spikes.shape[0]), spikes[:, u])
    return T0 + (b + 0.5) * BW


def _write(nwb, path: Path) -> Path:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def write_layout_a(path: Path, d: dict, lfp_name: str = "ElectricalSeries", grip_times: np.ndarray | None = None) -> Path:
    from pynwb import TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.ecephys import ElectricalSeries

    nwb = _nwb(path.stem)
    reg = nwb.create_electrode_table_region(list(range(CH))[::-1], "reversed")  # column k is electrode 207 - k
    nwb.add_acquisition(ElectricalSeries(name=lfp_name, data=d["counts"], electrodes=reg, starting_time=T0, rate=FS,
                                         conversion=0.195e-6))  # fmt: skip  (0.195 uV per count)
    for u in range(d["spikes"].shape[1]):
        nwb.add_unit(spike_times=_spike_times(d["spikes"], u), id=10 + u)
    bts = BehavioralTimeSeries(name="kinematics")
    nwb.create_processing_module("tracking", "video tracking").add(bts)
    centres = T0 + (np.arange(N_BINS) + 0.5) * BW
    bts.add_timeseries(TimeSeries(name="hand_position", data=d["pos"], unit="m", starting_time=centres[0], rate=1 / BW))
    bts.add_timeseries(TimeSeries(name="grip_force", data=d["grip"], unit="N",
                                  timestamps=centres if grip_times is None else grip_times))  # fmt: skip
    return _write(nwb, path)


def write_layout_b(path: Path, d: dict, quality: list[str]) -> Path:
    from pynwb import TimeSeries
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.ecephys import LFP, ElectricalSeries
    from pynwb.misc import Units

    nwb = _nwb(path.stem)
    reg = nwb.create_electrode_table_region(list(range(CH)), "all")
    lfp = LFP(name="LFP")
    nwb.create_processing_module("ephys_preproc", "preprocessed").add(lfp)
    uv = d["counts"].astype(np.float32) * 0.25  # microvolts, conversion 1e-6
    lfp.add_electrical_series(ElectricalSeries(name="lfp_1khz", data=uv, electrodes=reg, starting_time=T0, rate=FS, conversion=1e-6))
    lfp.add_electrical_series(ElectricalSeries(name="highpass", data=uv[:, ::-1].copy(), electrodes=reg, starting_time=T0, rate=FS,
                                               conversion=1e-6))  # fmt: skip
    units = Units(name="sorted_units", description="kilosort")
    units.add_column("cluster_id", "the sorter's cluster id")
    units.add_column("quality", "good or mua")
    for u in range(d["spikes"].shape[1]):
        units.add_unit(spike_times=_spike_times(d["spikes"], u), cluster_id=f"c{100 + 7 * u}", quality=quality[u])
    nwb.create_processing_module("spike_sorting", "sorted units").add(units)
    task = nwb.create_processing_module("task", "cursor task")
    centres = T0 + (np.arange(N_BINS) + 0.5) * BW
    pos = Position(name="Position")
    pos.add_spatial_series(SpatialSeries(name="cursor", data=d["pos"] * 100, reference_frame="screen centre", unit="cm",
                                         starting_time=centres[0], rate=1 / BW))  # fmt: skip
    task.add(pos)
    for j, name in enumerate(("cursor_vel_x", "cursor_vel_y")):
        task.add(TimeSeries(name=name, data=d["vel"][:, j], unit="cm/s", starting_time=centres[0], rate=1 / BW))
    return _write(nwb, path)


CONFIG_A = """
[data]
source = "nwb"
nwb_paths = [{paths}]
held_out_sessions = 1
guard_bins = 10

[data.nwb]
lfp = "ElectricalSeries"            # a bare name: the one object of that name in the file
[data.nwb.outputs]
x = "hand_position[0]"
y = "hand_position[1]"
grip = "processing/tracking/kinematics/grip_force"
{extra}
"""


def _config(tmp_path: Path, paths: list[Path], extra: str = "", name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(CONFIG_A.format(paths=", ".join(f'"{q}"' for q in paths), extra=extra))
    return p


def _load(cfg_path):
    from offline.train.config import load_config
    from offline.train.pipeline import load_sessions

    return load_sessions(load_config(cfg_path))


def test_layout_a_acquisition_lfp_behavioral_time_series_and_derived_velocity(tmp_path):
    da, db = truth(1), truth(2)
    pa, pb = write_layout_a(tmp_path / "a.nwb", da), write_layout_a(tmp_path / "b.nwb", db)
    sa, sb = _load(_config(tmp_path, [pa, pb]))
    for s, d, sid in ((sa, da, "a"), (sb, db, "b")):
        assert s.session_id == sid and s.t0 == T0 and s.n_bins == N_BINS and s.lfp_rate == FS
        assert s.channel_ids.tolist() == list(range(207, 199, -1))
        np.testing.assert_allclose(np.asarray(s.lfp), d["counts"].astype(np.float64) * 0.195, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(s.spikes, d["spikes"])
        assert s.unit_ids.tolist() == list(range(10, 16))
        assert s.behavior_names == ["x", "y", "vx", "vy", "grip"]
        assert s.behavior_units == ["m", "m", "m/s", "m/s", "N"]
        np.testing.assert_array_equal(s.behavior[:, :2], d["pos"])
        np.testing.assert_allclose(s.behavior[:, 4], d["grip"], rtol=1e-6)
        # velocity: backward difference of position on the bin grid, computed here independently
        p = d["pos"].astype(np.float64)
        v = np.vstack([np.zeros((1, 2)), (p[1:] - p[:-1]) / BW])
        np.testing.assert_allclose(s.behavior[:, 2:4], v, rtol=1e-5, atol=1e-5)
        assert np.abs(v).max() > 0.1  # not trivially zero


def test_layout_b_named_lfp_mapped_names_and_units_table_columns(tmp_path):
    from offline.train.config import load_config
    from offline.train.pipeline import load_sessions
    from rtdecode.config import ConfigError

    d = truth(3, n_units=5)
    quality = ["good", "mua", "good", "good", "mua"]
    p = write_layout_b(tmp_path / "b1.nwb", d, quality)
    base = {"source": "nwb", "nwb_paths": [str(p)], "held_out_sessions": 0}
    # the defaults do not fit: two ElectricalSeries in one module, and the error lists the file
    with pytest.raises(ConfigError) as e:
        load_sessions(load_config({"data": base}))
    msg = str(e.value)
    assert "several ElectricalSeries" in msg and "processing/ephys_preproc/LFP/highpass (ElectricalSeries, shape (9000, 8)" in msg
    assert "processing/spike_sorting/sorted_units (Units, 5 units) columns: cluster_id, quality, spike_times" in msg
    assert "processing/task/cursor_vel_x (TimeSeries, shape (900,), 100 Hz, unit 'cm/s')" in msg
    nwb = {"lfp": "processing/ephys_preproc/LFP/lfp_1khz", "units": "sorted_units", "unit_ids": "cluster_id",
           "unit_filter": {"quality": ["good"]},
           "outputs": {"x": "cursor[0]", "y": "cursor[1]", "vx": "cursor_vel_x", "vy": "cursor_vel_y"}}  # fmt: skip
    (s,) = load_sessions(load_config({"data": {**base, "nwb": nwb}}))
    assert s.channel_ids.tolist() == list(range(200, 208))
    np.testing.assert_array_equal(np.asarray(s.lfp), d["counts"].astype(np.float32) * 0.25)
    good = [i for i, q in enumerate(quality) if q == "good"]
    np.testing.assert_array_equal(s.spikes, d["spikes"][:, good])
    assert [str(u) for u in s.unit_ids] == [f"c{100 + 7 * u}" for u in good]
    assert s.behavior_names == ["x", "y", "vx", "vy"] and s.behavior_units == ["cm", "cm", "cm/s", "cm/s"]
    np.testing.assert_allclose(s.behavior[:, :2], d["pos"] * 100, rtol=1e-6)
    np.testing.assert_array_equal(s.behavior[:, 2:], d["vel"])  # the file's velocity, not a derived one
    # a column that does not exist, and a 2-column series without a column
    for bad, want in (({"unit_ids": "cluster"}, "names column 'cluster', which the units table has not"),
                      ({"outputs": {"x": "cursor"}}, "cursor has 2 columns")):  # fmt: skip
        with pytest.raises(ConfigError, match=want):
            load_sessions(load_config({"data": {**base, "nwb": {**nwb, **bad}}}))


def test_per_file_override_and_its_error_without_it(tmp_path):
    from rtdecode.config import ConfigError

    da, db = truth(4), truth(5)
    pa = write_layout_a(tmp_path / "day1.nwb", da)
    pb = write_layout_a(tmp_path / "day2-rig2.nwb", db, lfp_name="raw_voltage")
    with pytest.raises(ConfigError) as e:
        _load(_config(tmp_path, [pa, pb]))
    msg = str(e.value)
    assert "day2-rig2.nwb: mapping.lfp = 'ElectricalSeries' is not an ElectricalSeries in this file" in msg
    assert "acquisition/raw_voltage (ElectricalSeries, shape (9000, 8), 1000 Hz" in msg
    assert '[data.nwb.files."' in msg  # says where a per-file fix goes
    over = '[data.nwb.files."*-rig2.nwb"]   # a glob on the file name\nlfp = "raw_voltage"\n'
    sa, sb = _load(_config(tmp_path, [pa, pb], over))
    np.testing.assert_allclose(np.asarray(sb.lfp), db["counts"] * 0.195, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(np.asarray(sa.lfp), da["counts"] * 0.195, rtol=1e-6, atol=1e-4)
    assert sb.behavior_names == sa.behavior_names == ["x", "y", "vx", "vy", "grip"]


def test_typos_and_stray_overrides_are_refused_with_the_closest_key(tmp_path, capsys):
    from offline.train.config import load_config
    from rtdecode.cli import main
    from rtdecode.config import ConfigError

    paths = [tmp_path / "a.nwb"]
    with pytest.raises(ConfigError, match=r"unknown key 'lpf' \(did you mean 'lfp'\?\)"):
        load_config(_config(tmp_path, paths, "[data.nwb.files.\"a.nwb\"]\nlpf = 'x'\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'outptus' \(did you mean 'outputs'\?\)"):
        load_config({"data": {"source": "nwb", "nwb_paths": ["a.nwb"], "nwb": {"outptus": {}}}})
    with pytest.raises(ConfigError, match='data.nwb.files."b.nwb" matches none of data.nwb_paths'):
        load_config(_config(tmp_path, paths, "[data.nwb.files.\"b.nwb\"]\nlfp = 'x'\n"))
    with pytest.raises(ConfigError, match="set either behavior"):
        load_config({"data": {"nwb": {"behavior": ["p"], "outputs": {"x": "p"}}}})
    bad = _config(tmp_path, paths, "[data.nwb.files.\"a.nwb\"]\nderive_velocty = false\n", name="typo.toml")
    assert main(["distill", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'derive_velocty' (did you mean 'derive_velocity'?)" in err and "Traceback" not in err


def test_simulator_units_round_trip_through_nwb():
    from offline.data.nwb import read_session, write_session
    from offline.data.simulate import SimConfig, simulate_session

    s = simulate_session(SimConfig(duration_s=3.0, n_channels=4, unit_pool=20, n_units=10, n_units_jitter=2), 0, seed=0)
    assert s.behavior_units == ["cm", "cm", "cm/s", "cm/s", "N"]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        back = read_session(write_session(s, Path(tmp) / "s.nwb"))
        assert back.behavior_units == s.behavior_units and back.behavior_names == s.behavior_names


def test_output_units_from_nwb_reach_the_bundle_manifest(tmp_path):
    """Units read from NWB files go into the bundle (outputs.units) that `rtdecode run` loads
    and announces in its `hello` message (rtdecode/runtime.py: units = bundle.output_units)."""
    import json

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from test_distill_pipeline import tiny_cfg  # noqa: E402

    from offline.train.pipeline import load_sessions, run_distill
    from offline.train.config import load_config
    from rtdecode.bundle import load_bundle

    torch.set_num_threads(1)
    paths = [write_layout_a(tmp_path / f"s{i}.nwb", truth(10 + i)) for i in range(3)]
    cfg = tiny_cfg("window", eval={"single_session": False, "new_embedding_steps": 1, "new_embedding_bins": 200})
    cfg["data"] = {**cfg["data"], "source": "nwb", "nwb_paths": [str(p) for p in paths],
                   "nwb": {"lfp": "ElectricalSeries", "outputs": {"x": "hand_position[0]", "y": "hand_position[1]", "grip": "grip_force"}}}  # fmt: skip
    cfg["export"] = {"choose": "distilled"}
    cfg["chain"] = {"line_freq": 0, "lowpass_hz": 40.0}
    c = load_config(cfg)
    path = run_distill(c, tmp_path / "run", sessions=load_sessions(c))
    b = load_bundle(path)
    assert b.output_names == ("x", "y", "vx", "vy", "grip")
    assert b.output_units == ("m", "m", "m/s", "m/s", "N")
    assert json.loads((path / "manifest.json").read_text())["outputs"]["units"] == ["m", "m", "m/s", "m/s", "N"]
    from rtdecode.runtime import RunConfig, Runtime

    hello = Runtime(b, None, None, None, RunConfig(bundle=str(path))).hello()  # what `rtdecode run` publishes first
    assert hello["names"] == ["x", "y", "vx", "vy", "grip"] and hello["units"] == ["m", "m", "m/s", "m/s", "N"]


def test_the_shipped_example_config_reads_its_layout(tmp_path):
    """configs/distill_nwb_example.toml, with its files written here in the layout it describes."""
    from offline.train.config import load_config
    from offline.train.pipeline import load_sessions
    from rtdecode.config import load_toml

    d = load_toml(Path(__file__).parents[3] / "configs" / "distill_nwb_example.toml")
    names = [Path(p).name for p in d["data"]["nwb_paths"]]
    truths = [truth(20 + i) for i in range(len(names))]
    paths = [write_layout_a(tmp_path / n, t, lfp_name="raw_voltage" if "rig2" in n else "ElectricalSeries")
             for n, t in zip(names, truths)]  # fmt: skip
    d["data"]["nwb_paths"] = [str(p) for p in paths]
    sessions = load_sessions(load_config(d))
    assert [s.session_id for s in sessions] == [Path(n).stem for n in names]
    for s, t in zip(sessions, truths):
        assert s.behavior_names == ["x", "y", "vx", "vy", "grip"] and s.behavior_units == ["m", "m", "m/s", "m/s", "N"]
        np.testing.assert_allclose(np.asarray(s.lfp[:500]), t["counts"][:500] * 0.195, rtol=1e-6, atol=1e-4)


def test_info_lists_a_file_and_says_what_the_mapping_reads_or_what_to_set(tmp_path):
    """`rtdecode info FILE.nwb [--config C]`: the file's objects, then what the default mapping
    (or the config's [data.nwb]) reads from it: LFP in microvolts, units, outputs with units;
    exit 2 with the mapping's fix when it cannot read the file."""
    import subprocess
    import sys

    d = truth(7)
    pa = write_layout_a(tmp_path / "day1.nwb", d)  # grip as a BehavioralTimeSeries in a 'tracking' module

    def info(*args):
        r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "info", *map(str, args)], capture_output=True, text=True)
        info.err = r.stderr
        return r.returncode, r.stdout + r.stderr

    rc, out = info(pa)  # the default mapping looks for behaviour under processing/behavior: there is none
    assert rc == 2, out
    assert info.err.startswith("rtdecode info: error: ") and "no behaviour" in info.err  # on stderr too, one line
    assert "acquisition/ElectricalSeries (ElectricalSeries, shape (9000, 8), 1000 Hz" in out
    assert "the default mapping cannot read it" in out and "no behaviour" in out
    rc, out = info(pa, "--config", _config(tmp_path, [pa]))
    assert rc == 0, out
    assert "LFP      acquisition/ElectricalSeries: 8 channels at 1000 Hz" in out and "read in microvolts (x 0.195)" in out
    assert f"spikes   {d['spikes'].shape[1]} units" in out
    assert "x [m], y [m], vx [m/s], vy [m/s], grip [N]" in out  # velocity derived (the config says so)
    rc, out = info(tmp_path / "missing.nwb")
    assert rc == 2 and "is not a readable NWB" in out


def write_layout_c(path: Path, d: dict, *, ppm: float = 800.0, pause_at: int | None = None) -> tuple[Path, dict]:
    """Layout C, as an Intan recording converted to NWB arrives: uint16 counts with a
    conversion, an offset and per-channel gains (channel_conversion), stamped sample by sample
    by a clock `ppm` fast of the amplifier's; spikes and behaviour on that clock; position
    stored as integer millimetres with conversion 0.001 and an offset. Returns the expected."""
    from pynwb import TimeSeries
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.ecephys import ElectricalSeries

    nwb = _nwb(path.stem)
    reg = nwb.create_electrode_table_region(list(range(CH)), "all")
    counts = (d["counts"].astype(np.int32) + 32768).astype(np.uint16)
    gains = np.linspace(0.8, 1.2, CH)
    stamps = T0 + np.arange(counts.shape[0]) / (FS * (1 + ppm * 1e-6))
    if pause_at is not None:
        stamps[pause_at:] += 0.5
    nwb.add_acquisition(ElectricalSeries(name="ElectricalSeries", data=counts, electrodes=reg, timestamps=stamps,
                                         conversion=0.195e-6, offset=-32768 * 0.195e-6, channel_conversion=gains))  # fmt: skip
    # spikes in bin b at the stamp of that bin's middle sample
    for u in range(d["spikes"].shape[1]):
        b = np.repeat(np.arange(N_BINS), d["spikes"][:, u])
        nwb.add_unit(spike_times=stamps[b * SPB + SPB // 2], id=10 + u)
    centres = 0.5 * (stamps[::SPB] + np.append(stamps[SPB::SPB], stamps[-1] + 1 / FS))
    mm = np.round(d["pos"] * 1000).astype(np.int32) + 500  # millimetres, offset by 0.5 m
    pos = Position(name="Position")
    pos.add_spatial_series(SpatialSeries(name="hand", data=mm, reference_frame="table", unit="m", conversion=1e-3,
                                         offset=-0.5, timestamps=centres))  # fmt: skip
    nwb.create_processing_module("behavior", "tracking").add(pos)
    nwb.processing["behavior"].add(TimeSeries(name="grip", data=d["grip"], unit="N", timestamps=centres))
    # NWB: volts = data x conversion x channel_conversion + offset (the offset after the gains)
    want = {"lfp": counts.astype(np.float64) * 0.195 * gains - 32768 * 0.195, "pos": (mm - 500) * 1e-3}
    return _write(nwb, path), want


def test_layout_c_unsigned_counts_offset_channel_gains_and_a_drifting_clock(tmp_path):
    """Per-channel conversion and the offset give microvolts; the bins follow the file's own
    stamps (800 ppm from the nominal 1 kHz: 7 ms, most of a bin, by the end), so spikes and
    behaviour stay in their bins where the nominal grid would misplace them."""
    from offline.data.nwb import read_session

    d = truth(5)
    p, want = write_layout_c(tmp_path / "c.nwb", d)
    s = read_session(p)
    assert s.lfp_rate == FS and s.n_bins == N_BINS
    np.testing.assert_allclose(np.asarray(s.lfp), want["lfp"], rtol=1e-5, atol=2e-3)
    from offline.data.nwb import read_lfp  # `rtdecode replay FILE.nwb` plays it at the nominal rate, as trained

    x, info = read_lfp(p, max_samples=100)
    assert info.rate == FS and np.allclose(x, want["lfp"][:100], rtol=1e-5, atol=2e-3)
    np.testing.assert_array_equal(s.spikes, d["spikes"])
    assert s.behavior_names[:2] == ["hand_x", "hand_y"] and "grip" in s.behavior_names
    np.testing.assert_allclose(s.behavior[:, :2], want["pos"], atol=1e-6)
    np.testing.assert_allclose(s.behavior[:, s.behavior_names.index("grip")], d["grip"], rtol=1e-6)
    # the nominal grid (t0 + k x 10 ms) would put many of the late spikes a bin early: the test can tell
    b = np.repeat(np.arange(N_BINS), d["spikes"][:, 0])
    assert (np.floor((b * SPB + SPB // 2) / (1 + 800e-6) / SPB) != b).sum() > 20


def test_an_lfp_with_a_pause_in_its_stamps_is_refused_with_where(tmp_path):
    from offline.data.nwb import NWBMappingError, read_session

    p, _ = write_layout_c(tmp_path / "p.nwb", truth(6), ppm=0.0, pause_at=4321)
    with pytest.raises(NWBMappingError) as e:
        read_session(p)
    msg = str(e.value)
    assert "a pause of 0.501 s after sample 4320" in msg and "own file" in msg, msg
    from offline.data.nwb import describe_file

    text, ok = describe_file(p)  # `rtdecode info`: the problem once, not its sentence twice
    assert not ok and text.count("a pause of 0.501 s") == 1, text


def test_behaviour_dropouts_are_interpolated_with_a_warning_and_an_empty_output_refused(tmp_path, caplog):
    from offline.data.nwb import NWBMappingError, read_session

    d = truth(7)
    d["grip"][100:130] = np.nan  # a 30-bin tracking dropout
    d["pos"][500, 0] = np.inf
    p = write_layout_a(tmp_path / "drop.nwb", d)
    mapping = {"lfp": "ElectricalSeries", "outputs": {"x": "hand_position[0]", "grip": "grip_force"}}
    with caplog.at_level("WARNING"):
        s = read_session(p, mapping)
    g = s.behavior[:, s.behavior_names.index("grip")]
    np.testing.assert_allclose(g[100:130], np.interp(np.arange(100, 130), [99, 130], g[[99, 130]]), rtol=1e-6)
    assert np.isfinite(s.behavior).all() and s.meta["behavior_filled_bins"] == {"x": 1, "grip": 30}
    assert any("'grip' is NaN or infinite at 30 of 900 bins" in r.getMessage() and "longest run 30" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    d["grip"][:] = np.nan
    with pytest.raises(NWBMappingError, match="'grip' is NaN or infinite at 900 of 900 bins"):
        read_session(write_layout_a(tmp_path / "none.nwb", d), mapping)


def test_behaviour_on_another_clock_or_with_stamps_out_of_order_is_refused(tmp_path, caplog):
    """Found by a new-user probe (session 22): a camera whose stamps were 60 s off the LFP's
    (a third of the session covered) trained on held end values with no word, and one with
    repeated and swapped frames made a 20-SD velocity spike. Now: refused with the series, the
    spans and the fix; a small uncovered edge (the camera started late) is read and said."""
    from offline.data.nwb import NWBMappingError, read_session

    d = truth(9)
    mapping = {"lfp": "ElectricalSeries", "outputs": {"x": "hand_position[0]", "grip": "grip_force"}}
    centres = T0 + (np.arange(N_BINS) + 0.5) * BW
    shifted = write_layout_a(tmp_path / "shifted.nwb", d, grip_times=centres + 0.6 * N_BINS * BW)
    with pytest.raises(NWBMappingError, match=r"grip_force covers t = .*\(60\.0 %; 540 before .* different clocks or epochs"):
        read_session(shifted, mapping)
    t = centres.copy()
    t[300] = t[299]  # a repeated frame
    t[[500, 501]] = t[[501, 500]]  # two frames swapped
    with pytest.raises(NWBMappingError, match=r"grip_force's timestamps do not increase: 2 of its 899 steps .* after sample 299"):
        read_session(write_layout_a(tmp_path / "dup.nwb", d, grip_times=t), mapping)
    late = write_layout_a(tmp_path / "late.nwb", {**d, "grip": d["grip"][45:]}, grip_times=centres[45:])  # 5 % missing
    with caplog.at_level("WARNING"):
        s = read_session(late, mapping)
    msgs = [r.getMessage() for r in caplog.records if "grip_force covers" in r.getMessage()]
    assert len(msgs) == 1 and "45 of 900 bins (5.0 %; 45 before its first sample, 0 after its last)" in msgs[0], msgs
    g = s.behavior[:, s.behavior_names.index("grip")]
    assert np.all(g[:45] == d["grip"][45])  # held, as said
    caplog.clear()
    with caplog.at_level("WARNING"):
        read_session(write_layout_a(tmp_path / "ok.nwb", d), mapping)  # the control: covered, in order
    assert not [r for r in caplog.records if "covers" in r.getMessage()]


def test_a_position_container_gets_its_velocity_derived_under_the_default_mapping(tmp_path):
    """A DANDI-style Position/SpatialSeries read by the default mapping (names hand_x, hand_y)
    gets hand_vx, hand_vy: the backward difference, as for outputs named x and y."""
    from offline.data.nwb import read_session

    d = truth(8)
    p, want = write_layout_c(tmp_path / "v.nwb", d, ppm=0.0)
    s = read_session(p)
    assert s.behavior_names == ["hand_x", "hand_y", "hand_vx", "hand_vy", "grip"]
    assert s.behavior_units[2:4] == ["m/s", "m/s"]
    v = np.vstack([np.zeros((1, 2)), np.diff(want["pos"], axis=0) / BW])
    np.testing.assert_allclose(s.behavior[:, 2:4], v, rtol=1e-4, atol=1e-4)
    assert read_session(p, {"derive_velocity": False}).behavior_names == ["hand_x", "hand_y", "grip"]


def test_a_file_from_pynwbs_own_mock_generator_reads_by_the_default_mapping(tmp_path):
    """pynwb.testing.mock (pynwb's generator, not ours): an ElectricalSeries in volts in
    acquisition (conversion 1.0), units added with add_unit, a 60 Hz SpatialSeries in a Position
    container. The default mapping reads microvolts, the spike counts, position and its velocity."""
    from pynwb import NWBHDF5IO
    from pynwb.behavior import Position
    from pynwb.testing.mock.behavior import mock_SpatialSeries
    from pynwb.testing.mock.ecephys import mock_ElectricalSeries
    from pynwb.testing.mock.file import mock_NWBFile

    from offline.data.nwb import read_session

    rng = np.random.default_rng(9)
    volts = (rng.standard_normal((20000, 5)) * 50e-6).astype(np.float32)
    spikes = [np.sort(rng.uniform(0, 20, 100)) for _ in range(3)]
    hand = np.cumsum(rng.standard_normal((1200, 2)), 0) * 1e-3
    nwb = mock_NWBFile(session_id="mock", identifier="mock-1")
    mock_ElectricalSeries(name="ElectricalSeries", data=volts, rate=1000.0, nwbfile=nwb)
    for st in spikes:
        nwb.add_unit(spike_times=st)
    pos = Position(name="Position")
    pos.add_spatial_series(mock_SpatialSeries(name="hand", data=hand, rate=60.0, starting_time=0.0))
    nwb.create_processing_module("behavior", "tracking").add(pos)
    with NWBHDF5IO(str(tmp_path / "mock.nwb"), "w") as io:
        io.write(nwb)
    s = read_session(tmp_path / "mock.nwb")
    np.testing.assert_allclose(np.asarray(s.lfp), volts * 1e6, rtol=1e-5)
    assert s.n_bins == 2000 and s.spikes.sum(0).tolist() == [int((st < 20.0).sum()) for st in spikes]
    assert s.behavior_names == ["hand_x", "hand_y", "hand_vx", "hand_vy"]
    t = (np.arange(2000) + 0.5) * 0.01  # bin centres; position linearly interpolated from 60 Hz
    np.testing.assert_allclose(s.behavior[:, 0], np.interp(t, np.arange(1200) / 60.0, hand[:, 0]), rtol=1e-5, atol=1e-7)


def _damage(src: Path, dst: Path, where: str) -> Path:
    """A copy of `src` with bytes overwritten as an interrupted copy leaves them: its last
    third zeroed ("tail"), or a block of 0xff past the superblock ("middle")."""
    b = bytearray(src.read_bytes())
    if where == "tail":
        b[len(b) - len(b) // 3 :] = bytes(len(b) // 3)
    else:
        b[2000:2000 + 60000] = b"\xff" * 60000
    dst.write_bytes(bytes(b))
    return dst


@pytest.mark.parametrize("where", ["tail", "middle"])
def test_a_damaged_file_is_refused_in_one_line_by_info_distill_and_replay(tmp_path, where):
    """A file that still opens as HDF5 but whose objects are damaged: `rtdecode info`, the
    distill config's loader and replay's reader each refuse it naming the file and the fix
    (copy it again), never with an h5py traceback; an undamaged copy reads."""
    import subprocess
    import sys

    from offline.data.nwb import NWBReadError, read_lfp, read_session
    from rtdecode.config import ConfigError

    good = write_layout_a(tmp_path / "good.nwb", truth(3))
    bad = _damage(good, tmp_path / "bad.nwb", where)
    r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "info", str(bad)], capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out and str(bad) in out and ("damaged" in out or "not a readable NWB" in out), out
    with pytest.raises(NWBReadError, match="damaged") as e:
        read_session(bad, {"behavior_module": "tracking"})
    assert str(bad) in str(e.value)
    with pytest.raises((NWBReadError, ConfigError), match="damaged"):
        _load(_config(tmp_path, [good, bad]))
    if where == "tail":
        with pytest.raises(NWBReadError, match="copy or export it again"):
            read_lfp(bad)
    assert read_session(good, {"behavior_module": "tracking"}).lfp.shape[1] == CH  # the same reader, undamaged


def test_sessions_recorded_differently_are_refused_naming_their_files(tmp_path):
    """Sessions that differ in channel count: the message names both files (a lab finds the odd
    one out by its path, not by its session id)."""
    from offline.train.config import load_config
    from offline.train.pipeline import prepare
    from rtdecode.config import ConfigError

    a = write_layout_a(tmp_path / "day1.nwb", truth(1))
    b = write_layout_a(tmp_path / "day2.nwb", truth(2))
    cfg = _config(tmp_path, [a, b])
    sessions = _load(cfg)
    sessions[1].lfp = np.asarray(sessions[1].lfp)[:, : CH - 2]  # as if day2 had been recorded on fewer channels
    with pytest.raises(ConfigError, match="One bundle serves one channel layout") as e:
        prepare(sessions, load_config(cfg))
    assert str(a) in str(e.value) and str(b) in str(e.value), str(e.value)
