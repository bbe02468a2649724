"""Generative families (offline.data.families): each generates, writes NWB (pynwb) and reads
back; the "hga" layout is not found by the default mapping and is by the family's mapping;
what reaches what (lead, high gamma, nuisances) holds; `rtdecode simulate --family`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offline.data.families import FAMILIES, FamilyConfig, family, simulate_family, write_family

SMALL = FamilyConfig(duration_s=20.0, n_channels=16, n_units=30, unit_pool=60)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_generates_writes_and_reads_back_nwb(name, tmp_path):
    from offline.data.nwb import NWBMappingError, read_session

    s = family(name).simulate(SMALL, 1, 0)
    assert s.n_bins == 2000 and s.lfp.shape == (20000, 16) and s.spikes.shape[1] > 10
    assert list(s.behavior_names) == ["x", "y", "vx", "vy", "grip"] and np.isfinite(s.behavior).all()
    assert s.spikes.sum() > 1000 and np.asarray(s.lfp).std() > 1.0
    paths = write_family(name, 1, 0, tmp_path, SMALL, log=None)
    meta = json.loads((tmp_path / "simulation.json").read_text())
    assert meta["family"] == name and meta["nwb_mapping"] == FAMILIES[name].mapping
    if FAMILIES[name].layout == "task":
        with pytest.raises(NWBMappingError, match="no behaviour"):
            read_session(paths[0])  # the default mapping does not find it ...
    back = read_session(paths[0], FAMILIES[name].mapping or None, lazy=False)  # ... the family's mapping does
    ref = family(name).simulate(SMALL, 0, 0)
    np.testing.assert_array_equal(back.spikes, ref.spikes)
    np.testing.assert_allclose(back.lfp, np.asarray(ref.lfp), rtol=1e-6, atol=1e-4)
    if FAMILIES[name].layout == "task":  # names from the series, as a lab's own file gives them
        rename = {"position_x": "x", "position_y": "y", "velocity_x": "vx", "velocity_y": "vy", "grip": "grip"}
        assert sorted(back.behavior_names) == sorted(rename)
        cols = [list(back.behavior_names).index(k) for k in ("position_x", "position_y", "velocity_x", "velocity_y", "grip")]
    else:
        assert back.behavior_names == ["x", "y", "vx", "vy", "grip"]
        cols = list(range(5))
    np.testing.assert_allclose(back.behavior[:, cols], ref.behavior, rtol=1e-5, atol=1e-5)


def test_dynamics_behaviour_follows_the_state_by_the_sessions_lead():
    """Behaviour is caused by the latent state `lead` (50-150 ms) earlier: the state predicts
    velocity best at that lag, not at zero."""
    from offline.train.decode import fit_ridge

    s = family("dynamics").simulate(FamilyConfig(duration_s=60.0, n_channels=8, n_units=20, unit_pool=40), 0, 0)
    lead_bins = int(round(s.meta["lead_s"] / s.bin_width))
    assert 5 <= lead_bins <= 15
    z, v = s.latents, s.behavior[:, 2:4]

    def r2_at(lag):
        x, y = z[: len(z) - lag], v[lag:]
        r = fit_ridge(x, y, 1e-3)
        return 1 - ((y - r.predict(x)) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()

    scores = {lag: r2_at(lag) for lag in range(0, 25)}
    assert abs(max(scores, key=scores.get) - lead_bins) <= 1
    assert scores[lead_bins] > scores[0] + 0.1


def test_hga_behaviour_is_in_high_gamma_power_not_in_the_low_frequencies():
    """The hga family's LFP carries behaviour in 70-200 Hz power (the lmp_bands chain finds it)
    and almost none below 50 Hz (the lfp chain does not)."""
    from rtdecode.dsp import compute_features
    from rtdecode.dsp.design import design_chain, fit_normalization

    from offline.train.decode import fit_ridge_val, lagged_features
    from rtdecode.batch import r2_score

    s = family("hga").simulate(FamilyConfig(duration_s=60.0, n_channels=32, n_units=20, unit_pool=40), 0, 0)
    n = s.n_bins
    fi, vi, ti = np.arange(10, int(0.6 * n)), np.arange(int(0.65 * n), int(0.75 * n)), np.arange(int(0.8 * n), n)
    out = {}
    for kind in ("lfp", "lmp_bands"):
        ch = design_chain(kind, fs=s.lfp_rate, n_channels=32, bin_width_s=0.01, line_freq=60.0)
        f = compute_features(ch, s.lfp)
        m, sd = fit_normalization(f[fi])
        f = ((f - m) / sd).astype(np.float32)
        x = {k: lagged_features(f, i, 10) for k, i in (("f", fi), ("v", vi), ("t", ti))}
        r, _, _ = fit_ridge_val(x["f"], s.behavior[fi, 2:], x["v"], s.behavior[vi, 2:], [1e-2, 1e-1, 1.0, 10.0, 100.0])
        out[kind] = float(r2_score(s.behavior[ti, 2:], r.predict(x["t"])).mean())  # vx, vy, grip
    assert out["lmp_bands"] > 0.3 and out["lfp"] < 0.1, out


def test_nuisances_dead_and_noisy_channels_gains_and_unit_turnover():
    cfg = FamilyConfig(duration_s=10.0, n_channels=32, n_units=30, unit_pool=60, dead_channels=0.1, noisy_channels=0.1)
    a, b = simulate_family("dynamics", 2, 0, cfg)
    lfp = np.asarray(a.lfp)
    dead, noisy = a.meta["dead_channels"], a.meta["noisy_channels"]
    assert len(dead) == 3 and len(noisy) == 3 and not set(dead) & set(noisy)
    assert dead == b.meta["dead_channels"] and noisy != b.meta["noisy_channels"]  # the subject's dead set; noisy per day
    sd = lfp.std(0)
    live = np.setdiff1d(np.arange(32), dead + noisy)
    assert sd[dead].max() < 0.1 < sd[live].min() and sd[noisy].min() > 2 * np.median(sd[live])
    # common-mode: the channels share a large common component (CAR removes it)
    c = np.corrcoef(lfp[:, live].T)
    assert np.median(c[np.triu_indices(len(live), 1)]) > 0.2
    shared = len(set(a.unit_ids.tolist()) & set(b.unit_ids.tolist()))
    assert 0 < shared < len(a.unit_ids)  # unit turnover across sessions


def test_simulate_cli_takes_a_family(tmp_path, capsys):
    from rtdecode.cli import main

    rc = main(["simulate", "--family", "dynamics", "--out", str(tmp_path / "d"), "--sessions", "1", "--minutes", "0.2",
               "--channels", "8"])  # fmt: skip
    assert rc == 0
    meta = json.loads((tmp_path / "d" / "simulation.json").read_text())
    assert meta["family"] == "dynamics" and meta["config"]["n_channels"] == 8 and meta["config"]["duration_s"] == 12.0
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--family", "nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_distill_on_hga_files_says_which_data_nwb_keys_read_them(tmp_path, capsys):
    """`rtdecode distill` (and the torchrun entry) on real hga NWB files with the default
    mapping: exit 2, one message without a traceback that names the problem and the
    [data.nwb] keys that fix it; each fix it prints, pasted into the config, reads the files."""
    import re

    from offline.train.config import load_config
    from offline.train.pipeline import main_distill
    from rtdecode.cli import main

    cfg = FamilyConfig(duration_s=12.0, n_channels=8, n_units=20, unit_pool=40)
    paths = write_family("hga", 2, 0, tmp_path / "hga", cfg, log=None)
    head = f'[data]\nsource = "nwb"\nnwb_paths = [{", ".join(repr(str(p)) for p in paths)}]\n'
    (tmp_path / "plain.toml").write_text(head)
    assert main(["distill", "--config", str(tmp_path / "plain.toml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtdecode distill: error: ") and "Traceback" not in err
    assert "no behaviour: nothing under processing/behavior" in err and "processing/task/Position/position" in err
    assert '[data.nwb] table\n    behavior_module = "task"\n' in err and "    [data.nwb.outputs]\n" in err
    assert main_distill(str(tmp_path / "plain.toml"), str(tmp_path / "run"), False) == 2  # torchrun's path: the same line
    assert capsys.readouterr().err.startswith("rtdecode distill: error: ")

    module_fix = re.search(r"\n    (behavior_module = .*)\n", err).group(1)
    outputs_fix = re.search(r"\n    \[data\.nwb\.outputs\]\n((?:    .*\n)+)", err).group(1).replace("    ", "")
    ref = family("hga").simulate(cfg, 0, 0)
    for fix, names in ((f"[data.nwb]\n{module_fix}\n", ["grip", "velocity_x", "velocity_y", "position_x", "position_y"]),
                       (f"[data.nwb.outputs]\n{outputs_fix}", ["x", "y", "vx", "vy", "grip"])):  # fmt: skip
        (tmp_path / "fixed.toml").write_text(head + fix)
        s = load_config(tmp_path / "fixed.toml").data.load_nwb()[0]
        assert list(s.behavior_names) == names, fix
        order = {"position_x": "x", "position_y": "y", "velocity_x": "vx", "velocity_y": "vy"}
        cols = [[order.get(n, n) for n in names].index(k) for k in ("x", "y", "vx", "vy", "grip")]
        np.testing.assert_allclose(s.behavior[:, cols], ref.behavior, rtol=1e-5, atol=1e-5)
