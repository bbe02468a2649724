"""offline.data: simulator statistics and determinism, NWB round trip and mapping, splits."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from offline.data.nwb import NWBMapping, NWBMappingError, read_session, write_session
from offline.data.session import Session, SessionError, SessionSet
from offline.data.simulate import SimConfig, simulate_dataset, simulate_session

TINY = SimConfig(duration_s=40.0, n_channels=16, lfp_rate=1000.0, unit_pool=60, n_units=40, n_units_jitter=8, block_s=7.0)


@pytest.fixture(scope="module")
def tiny():
    return simulate_session(TINY, session_index=1, seed=3)


def test_session_has_the_data_contract(tiny):
    s = tiny
    assert s.lfp.shape == (s.n_bins * 10, 16) and s.lfp.dtype == np.float32
    assert s.spikes.shape[0] == s.behavior.shape[0] == s.latents.shape[0] == 4000
    assert s.behavior_names == ["x", "y", "vx", "vy", "grip"]
    assert np.issubdtype(s.spikes.dtype, np.integer) and s.spikes.min() >= 0
    assert sorted(s.channel_ids.tolist()) == list(range(16))
    from rtdecode.dsp import compute_features
    from rtdecode.dsp.design import design_chain

    chain = design_chain("lfp", fs=s.lfp_rate, n_channels=16, bin_width_s=s.bin_width)
    assert compute_features(chain, s.lfp).shape[0] == s.n_bins


def test_same_seed_same_data_other_seed_other_data():
    a = simulate_session(TINY, 0, seed=5)
    b = simulate_session(TINY, 0, seed=5)
    c = simulate_session(TINY, 0, seed=6)
    for f in ("spikes", "lfp", "behavior", "latents", "unit_ids", "channel_ids"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert not np.array_equal(a.behavior, c.behavior) and not np.array_equal(a.lfp, c.lfp)
    # another recording of the same day: same units and channel order
    np.testing.assert_array_equal(a.unit_ids, c.unit_ids)
    np.testing.assert_array_equal(a.channel_ids, c.channel_ids)


def test_block_size_does_not_change_the_structure_only_the_noise():
    a = simulate_session(TINY, 0, seed=1)
    b = simulate_session(replace(TINY, block_s=11.0), 0, seed=1)
    np.testing.assert_array_equal(a.spikes, b.spikes)
    np.testing.assert_array_equal(a.behavior, b.behavior)


def test_sessions_differ_units_turn_over_and_channels_reorder():
    ss = simulate_dataset(replace(TINY, duration_s=12.0), 3, seed=0)
    assert [s.session_id for s in ss] == ["sim-s00", "sim-s01", "sim-s02"]
    u0, u2 = set(ss[0].unit_ids.tolist()), set(ss[2].unit_ids.tolist())
    assert 0 < len(u0 & u2) < min(len(u0), len(u2))  # some units shared, some new
    assert list(ss[0].channel_ids) == list(range(16))
    assert any(list(s.channel_ids) != list(range(16)) for s in ss[1:])


def test_behaviour_is_minimum_jerk_reaching_with_grip_pulses(tiny):
    x, y, vx, vy, grip = tiny.behavior.T
    bw = tiny.bin_width
    # velocity is the derivative of position
    dx = np.gradient(x, bw)
    assert np.corrcoef(dx, vx)[0, 1] > 0.99
    assert np.hypot(x, y).max() <= TINY.workspace_cm + 1e-3
    speed = np.hypot(vx, vy)
    still = speed < 1e-6
    assert 0.2 < still.mean() < 0.7  # holds and reaches alternate
    assert (grip[~still] == 0).all() and grip.max() > TINY.grip_n[0] * 0.9  # grip pulses only while holding


def test_rates_are_in_a_physiological_range(tiny):
    rates = tiny.spikes.mean(0) / tiny.bin_width
    assert 2.0 < np.median(rates) < 25.0
    assert rates.max() < np.exp(TINY.log_rate_clip[1]) * 1.2
    assert (rates > 0).all()


def _band_power(x, fs, lo, hi):
    from scipy import signal

    f, p = signal.welch(x, fs=fs, nperseg=512, axis=0)
    return p[(f >= lo) & (f <= hi)].mean()


def test_beta_drops_during_movement_and_spectrum_falls_like_1_over_f():
    s = simulate_session(replace(TINY, duration_s=120.0, beta_uv=25.0), 0, seed=2)
    fs, k = s.lfp_rate, s.samples_per_bin
    speed = np.hypot(s.behavior[:, 2], s.behavior[:, 3])
    from scipy import signal

    sos = signal.butter(4, [17, 29], "bandpass", fs=fs, output="sos")
    env = np.abs(signal.sosfiltfilt(sos, s.lfp, axis=0)).mean(1).reshape(-1, k).mean(1)
    moving, still = env[speed > 10.0].mean(), env[speed < 1e-6].mean()
    assert moving < 0.8 * still, (moving, still)
    low, mid = _band_power(s.lfp, fs, 2, 6).mean(), _band_power(s.lfp, fs, 80, 120).mean()
    assert low > 20 * mid  # power falls with frequency


def test_high_gamma_follows_pooled_spiking():
    s = simulate_session(replace(TINY, duration_s=60.0, hg_uv=6.0, hg_noise=0.2), 0, seed=4)
    from scipy import signal

    sos = signal.butter(4, [80, 180], "bandpass", fs=s.lfp_rate, output="sos")
    hg = (signal.sosfilt(sos, s.lfp, axis=0) ** 2).mean(1).reshape(-1, s.samples_per_bin).mean(1)
    pooled = s.spikes.sum(1).astype(float)
    ker = np.ones(10) / 10
    r = np.corrcoef(np.convolve(hg, ker, "same"), np.convolve(pooled, ker, "same"))[0, 1]
    assert r > 0.3, r


def test_bad_config_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="whole number"):
        SimConfig(lfp_rate=1234.5)
    with pytest.raises(ValueError, match="n_units"):
        SimConfig(n_units=300, unit_pool=200)
    from rtdecode.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="n_chanels"):
        from_dict(SimConfig, {"n_chanels": 3}, where="[data.sim]")


# ------------------------------------------------------------------------------------------
# NWB


def _assert_same(a: Session, b: Session):
    for f in ("spikes", "unit_ids", "channel_ids", "behavior", "latents"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype, f
        np.testing.assert_array_equal(x, y, err_msg=f)
    np.testing.assert_array_equal(np.asarray(a.lfp), np.asarray(b.lfp))
    for f in ("session_id", "subject", "bin_width", "lfp_rate", "t0", "behavior_names", "meta"):
        assert getattr(a, f) == getattr(b, f), f


def test_nwb_round_trip_is_exact_and_lfp_is_lazy(tiny, tmp_path):
    p = write_session(tiny, tmp_path / "s.nwb")
    back = read_session(p)
    assert type(back.lfp).__name__ == "LazyArray" and back.lfp.shape == tiny.lfp.shape
    np.testing.assert_array_equal(back.lfp[100:250, 3], tiny.lfp[100:250, 3])
    _assert_same(tiny, back)
    eager = read_session(p, lazy=False)
    assert isinstance(eager.lfp, np.ndarray)
    _assert_same(tiny, eager)
    from rtdecode.dsp import compute_features
    from rtdecode.dsp.design import design_chain

    chain = design_chain("lfp", fs=1000.0, n_channels=16)
    np.testing.assert_array_equal(compute_features(chain, back.lfp, block=777), compute_features(chain, tiny.lfp))


def _write_other_layout(path, s: Session, with_lfp=True, extra_samples=7):
    """Another lab's layout: LFP in processing/ecephys_lfp (FilteredEphys), in volts, longer
    than the spikes' last bin; behaviour as plain TimeSeries in module 'beh' at 50 Hz with
    timestamps; units added one by one."""
    import datetime as dt

    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries
    from pynwb.ecephys import ElectricalSeries, FilteredEphys

    nwb = NWBFile(session_description="other lab", identifier="x1", session_id="other-01",
                  session_start_time=dt.datetime(2023, 5, 1, tzinfo=dt.timezone.utc))  # fmt: skip
    dev = nwb.create_device(name="probe")
    grp = nwb.create_electrode_group(name="g", description="d", location="M1", device=dev)
    for c in range(s.lfp.shape[1]):
        nwb.add_electrode(group=grp, location="M1", id=100 + c)
    if with_lfp:
        reg = nwb.create_electrode_table_region(list(range(s.lfp.shape[1])), "all")
        fe = FilteredEphys(name="FilteredEphys")
        nwb.create_processing_module("ecephys_lfp", "lfp").add(fe)
        data = np.concatenate([s.lfp, s.lfp[:extra_samples]]) * 1e-6  # volts, conversion 1
        fe.add_electrical_series(ElectricalSeries(name="broadband_lfp", data=data.astype(np.float64),
                                                  electrodes=reg, starting_time=2.0, rate=s.lfp_rate))  # fmt: skip
    for u in range(s.spikes.shape[1]):
        n_bins = s.spikes.shape[0]
        b = np.repeat(np.arange(n_bins), s.spikes[:, u])
        nwb.add_unit(spike_times=2.0 + (b + 0.5) * s.bin_width, id=int(s.unit_ids[u]))
    mod = nwb.create_processing_module("beh", "behaviour")
    bts = BehavioralTimeSeries(name="kin")
    mod.add(bts)
    t = 2.0 + np.arange(0, s.duration_s, 0.02)
    tc = 2.0 + (np.arange(s.n_bins) + 0.5) * s.bin_width
    for j, name in ((2, "hand_vx"), (3, "hand_vy")):
        bts.add_timeseries(TimeSeries(name=name, data=np.interp(t, tc, s.behavior[:, j]), unit="cm/s", timestamps=t))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_another_layout_reads_through_the_mapping(tiny, tmp_path):
    p = tmp_path / "other.nwb"
    _write_other_layout(p, tiny)
    m = NWBMapping(lfp="processing/ecephys_lfp/FilteredEphys/broadband_lfp",
                   behavior=("processing/beh/kin/hand_vx", "processing/beh/kin/hand_vy"))  # fmt: skip
    s = read_session(p, m)
    assert s.session_id == "other-01" and s.t0 == 2.0 and s.n_bins == tiny.n_bins
    assert s.behavior_names == ["hand_vx", "hand_vy"]
    assert list(s.channel_ids) == list(range(100, 116))
    np.testing.assert_allclose(np.asarray(s.lfp), tiny.lfp, rtol=1e-5, atol=1e-3)  # volts -> microvolts, cropped
    np.testing.assert_array_equal(s.spikes, tiny.spikes)
    ok = slice(2, -2)  # 50 Hz behaviour interpolated at bin centres
    np.testing.assert_allclose(s.behavior[ok], tiny.behavior[ok, 2:4], atol=0.05 * np.abs(tiny.behavior[:, 2:4]).max())
    # the same through a config table and the defaults where they fit (a dict mapping)
    s2 = read_session(p, {"behavior_module": "beh"})
    assert s2.behavior_names == ["hand_vx", "hand_vy"]


def test_missing_lfp_says_so_and_lists_the_file(tiny, tmp_path):
    p = tmp_path / "nolfp.nwb"
    _write_other_layout(p, tiny, with_lfp=False)
    with pytest.raises(NWBMappingError) as e:
        read_session(p)
    msg = str(e.value)
    assert "no LFP" in msg and "processing/beh/kin/hand_vx (TimeSeries" in msg and f"units (Units, {tiny.spikes.shape[1]} units)" in msg
    with pytest.raises(NWBMappingError, match="mapping.lfp = 'acquisition/nope'"):
        read_session(p, NWBMapping(lfp="acquisition/nope"))


def test_unknown_mapping_key_is_refused():
    from rtdecode.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'lfp_path'"):
        NWBMapping.from_dict({"lfp_path": "x"})


# ------------------------------------------------------------------------------------------
# splits


def test_splits_do_not_leak(tiny):
    sessions = [tiny.time_slice(slice(0, 2000))]
    for i, sid in enumerate(("b", "c", "d")):
        s = tiny.time_slice(slice(i * 500, i * 500 + 1500))
        s.session_id = sid
        sessions.append(s)
    ds = SessionSet(sessions)
    sp = ds.split(held_out=1, test_fraction=0.25, guard_bins=40, min_bins=64)
    assert sp.train_sessions == (tiny.session_id, "b", "c") and sp.held_out_sessions == ("d",)
    for s in ds:
        tr, te = sp.time[s.session_id]
        train_bins, test_bins = set(range(tr.start, tr.stop)), set(range(te.start, te.stop))
        assert not train_bins & test_bins
        assert te.start - tr.stop >= 40 and te.stop == s.n_bins
        # every training window of 64 bins ends before the guard gap: none reaches test time
        assert max(range(tr.start, tr.stop - 64 + 1)) + 64 <= te.start - 40
    sp2 = ds.split(held_out=["b"], test_fraction=0.25, guard_bins=40, min_bins=64)
    assert "b" not in sp2.train_sessions
    with pytest.raises(SessionError, match="more than once"):
        SessionSet([sessions[0], sessions[0]])
    with pytest.raises(SessionError, match="not in the dataset"):
        ds.split(held_out=["zz"])
    bad = type(sp)(sp.train_sessions, sp.held_out_sessions, {**sp.time, "b": (slice(0, 900), slice(910, 1500))}, 40)
    with pytest.raises(SessionError, match="guard"):
        bad.check({s.session_id: s.n_bins for s in ds})


def test_align_channels_undoes_the_reordering():
    ss = simulate_dataset(replace(TINY, duration_s=5.0), 3, seed=0)
    al = SessionSet(ss).align_channels()
    for a, s in zip(al, ss):
        assert list(a.channel_ids) == list(ss[0].channel_ids)
        for j, c in enumerate(s.channel_ids):
            np.testing.assert_array_equal(a.lfp[:, list(a.channel_ids).index(c)], s.lfp[:, j])


def test_session_refuses_misaligned_arrays(tiny):
    with pytest.raises(SessionError, match="lfp samples"):
        Session("x", "s", 0.01, tiny.spikes, tiny.unit_ids, tiny.lfp[:-3], 1000.0, tiny.channel_ids, tiny.behavior,
                tiny.behavior_names)  # fmt: skip


def test_cli_writes_nwb_files_that_read_back(tmp_path):
    import argparse

    from offline.data.cli import main_simulate

    cfg = tmp_path / "sim.toml"
    cfg.write_text("[simulate]\nn_units = 20\nunit_pool = 30\nn_units_jitter = 4\nlfp_rate = 500.0\n")
    args = argparse.Namespace(out=str(tmp_path / "out"), sessions=2, minutes=0.2, channels=8, seed=1, config=str(cfg))
    assert main_simulate(args) == 0
    files = sorted((tmp_path / "out").glob("*.nwb"))
    assert [f.name for f in files] == ["sim-s00.nwb", "sim-s01.nwb"]
    s = read_session(files[1])
    assert s.lfp.shape == (1200 * 5, 8) and s.lfp_rate == 500.0 and s.spikes.shape[1] <= 20
    cfg.write_text("[simulate]\nn_unit = 20\n")
    assert main_simulate(args) == 2
