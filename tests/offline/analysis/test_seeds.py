"""The multi-seed runner (offline.analysis.seeds): configs per seed, tables from finished runs,
bad input. The training itself is offline.train.pipeline's (tests/offline/train)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from offline.analysis import seeds as S
from offline.analysis.stats import block_stats
from rtdecode.config import ConfigError

NAMES = ["x", "vx", "grip"]
MODELS = ("distilled", "lfp_multi_unsup", "lfp_multi", "ridge_lfp")


def _fake_run(root, seed: int, shift: float, n_sessions=6, held=6, shipped: str | None = None):
    """A finished run's report/metrics.json: per session, each model's R² per output, val_r2
    and test-block statistics; `shift` is distilled's advantage over lfp_multi_unsup."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_sessions + held):
        split = "held_out_time" if i < n_sessions else "held_out_sessions_zero_shot"
        y = rng.standard_normal((300, 3))
        for m in MODELS:
            pred = y + rng.uniform(0.5, 1.0) * rng.standard_normal(y.shape)
            r2 = [0.2 + 0.01 * k + (shift if m == "distilled" else 0.0) for k in range(3)]
            rows.append({"model": m, "split": split, "session": f"s{i}", "r2": r2, "val_r2": [0.1 * MODELS.index(m)] * 3,
                         "blocks": block_stats(y, pred)})  # fmt: skip
    d = root / f"seed{seed}"
    (d / "report").mkdir(parents=True)
    summ = {"rows": rows, "per_output": {"outputs": NAMES}}
    if shipped:  # the run's export choice: the row of the decoder its bundle ships
        summ["export_choice"] = {"chosen": shipped, "row": shipped}
    (d / "report" / "metrics.json").write_text(json.dumps(summ))
    (d / "seed.json").write_text(json.dumps({"seed": seed, "wall_s": 12.5, "git": {"head": "abc1234", "diff": "clean"}, "family": "linear"}))
    return d


def test_seed_config_replaces_the_seed_and_family_and_refuses_bad_ones(tmp_path):
    d = S.seed_config("configs/distill_tiny.toml", 7, "hga")
    assert d["seed"] == 7 and d["data"]["sim"]["family"] == "hga"
    from rtdecode.config import load_toml

    raw = load_toml("configs/distill_tiny.toml")
    assert {k: v for k, v in d.items() if k not in ("seed", "data")} == {k: v for k, v in raw.items() if k not in ("seed", "data")}
    assert S.seed_config("configs/distill_tiny.toml", 3)["data"]["sim"].get("family") is None
    with pytest.raises(ConfigError, match="not a simulator family; one of linear"):
        S.seed_config("configs/distill_tiny.toml", 0, "nope")
    with pytest.raises(ConfigError, match="only applies to simulated data"):
        S.seed_config("configs/distill_nwb_example.toml", 0, "hga")


def test_set_overrides_config_keys_as_toml_values():
    d = S.seed_config("configs/distill_tiny.toml", 1, "hga", ["chain.kind=lmp_bands", "teacher_train.steps=5", "eval.ridge_alpha=[1.0]"])
    assert d["chain"]["kind"] == "lmp_bands" and d["teacher_train"]["steps"] == 5 and d["eval"]["ridge_alpha"] == [1.0]
    with pytest.raises(ConfigError, match="expected TABLE.KEY=VALUE"):
        S.seed_config("configs/distill_tiny.toml", 1, None, ["chain.kind"])
    with pytest.raises(ConfigError, match="teacher_train"):  # a key the config does not have is refused by load_config
        S.seed_config("configs/distill_tiny.toml", 1, None, ["teacher_train.stepz=5"])


def test_tables_from_finished_runs_pool_seeds_by_session(tmp_path):
    dirs = [_fake_run(tmp_path, s, shift) for s, shift in ((0, 0.05), (1, 0.10), (2, 0.15))]
    rows, info, names = S.load_runs(dirs)
    assert names == NAMES and sorted(info) == [0, 1, 2] and {r["seed"] for r in rows} == {0, 1, 2}
    agg = S.aggregate(rows, names, S.StatsConfig(n_boot=500))
    assert list(agg["groups"]) == ["all outputs", "velocity and grip (vx, grip)"]
    cell = agg["table"]["all outputs"]["held_out_sessions_zero_shot"]["distilled"]
    assert sorted(cell["per_seed"]) == ["0", "1", "2"]
    assert cell["per_seed"]["1"]["mean"] == pytest.approx(0.21 + 0.10) and cell["per_seed"]["1"]["n"] == 6
    assert cell["across"]["n"] == 18 and cell["across"]["ci_over"] == "seeds_sessions"
    assert cell["across"]["mean"] == pytest.approx(0.21 + 0.10)
    t = next(t for t in agg["paired"]["groups"]["all outputs"]
             if (t["a"], t["b"], t["split"]) == ("distilled", "lfp_multi_unsup", "held_out_sessions_zero_shot"))  # fmt: skip
    assert t["n"] == 18 and t["n_seeds"] == 3 and t["mean_diff"] == pytest.approx(0.10)
    assert 0.05 - 1e-9 <= t["ci"][0] < 0.10 < t["ci"][1] <= 0.15 + 1e-9  # the seeds' own differences bound it
    assert t["p_sign_flip"] < 0.001 and t["a_wins"] == 18
    # best LFP by validation: ridge_lfp is not a candidate, lfp_multi has the highest val_r2
    assert agg["paired"]["best_lfp"] == {"0": "lfp_multi", "1": "lfp_multi", "2": "lfp_multi"}


def test_best_lfp_is_the_decoder_each_run_ships_where_it_says(tmp_path):
    dirs = [_fake_run(tmp_path, 0, 0.05, shipped="distilled"), _fake_run(tmp_path, 1, 0.05)]
    rows, info, names = S.load_runs(dirs)
    agg = S.aggregate(rows, names, S.StatsConfig(n_boot=200), shipped=S.shipped_rows(info))
    assert agg["paired"]["best_lfp"] == {"0": "distilled", "1": "lfp_multi"}  # seed 1 recorded no choice
    doc = S.family_doc(rows, info, names, "linear", "cmd", S.StatsConfig(n_boot=200))
    assert "the decoder each bundle ships" in doc and "seed 0: distilled" in doc


def test_cli_writes_the_table_with_ci_n_and_the_git_state(tmp_path, capsys):
    dirs = [_fake_run(tmp_path, s, 0.1) for s in (0, 1)]
    rc = S.main(["--runs", *map(str, dirs), "--out", str(tmp_path / "out"), "--n-boot", "500"])
    assert rc == 0
    md = (tmp_path / "out" / "seeds.md").read_text()
    assert "| model | seed 0 | seed 1 | across seeds (n) |" in md
    assert "(n=12) |" in md and "abc1234 (clean)" in md and "12 s wall clock" in md
    assert "seeds, then sessions" in md and "sign-flip p" in md
    js = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert js["seeds"] == [0, 1] and js["runs"]["0"]["dir"] == str(dirs[0])


@pytest.mark.parametrize("argv, msg", [
    (["--out", "X"], "give either --config"),
    (["--config", "configs/distill_tiny.toml", "--seeds", "1", "1", "--out", "X"], "names a seed twice"),
    (["--config", "configs/no_such.toml", "--out", "X"], "does not exist"),
    (["--runs", "no_such_run", "--out", "X"], "holds no finished distill run"),
])  # fmt: skip
def test_bad_input_is_one_error_line(argv, msg, capsys, tmp_path):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert S.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m offline.analysis.seeds: error: ") and msg in err[0]


def test_two_runs_of_one_seed_are_refused(tmp_path):
    a = _fake_run(tmp_path / "a", 0, 0.1)
    b = _fake_run(tmp_path / "b", 0, 0.1)
    with pytest.raises(ConfigError, match="are both seed 0"):
        S.load_runs([a, b])


def test_family_doc_states_the_goals_with_their_figures(tmp_path):
    dirs = [_fake_run(tmp_path, s, 0.1) for s in (0, 1)]
    doc = tmp_path / "docs" / "linear.md"
    rc = S.main(["--runs", *map(str, dirs), "--out", str(tmp_path / "out"), "--n-boot", "500", "--doc", str(doc),
                 "--command", "rtdecode distill --config C", "--note", "tiny, plumbing only"])  # fmt: skip
    assert rc == 0
    md = doc.read_text()
    assert md.startswith("# Family `linear`") and "tiny, plumbing only" in md and "`rtdecode distill --config C`" in md
    assert "seed 0: 0.2 min (12 s), wall clock of run_distill; git abc1234 + uncommitted: clean" in md
    assert "## R², velocity and grip (vx, grip)" in md
    goal1 = next(x for x in md.splitlines() if x.startswith("| 1: distilled vs LFP-only") and "zero-shot" in x)
    cells = [c.strip() for c in goal1.strip("|").split("|")]
    # velocity and grip: distilled 0.215 + 0.1 against 0.215: ratio 1.47 < 2, difference +0.1 over 12 units
    assert cells[2] == "0.315" and cells[3] == "0.215" and cells[4] == "1.47" and cells[5].startswith("+0.100 [")
    assert cells[5].endswith("(12)") and cells[6] == "NO"
    goal2 = next(x for x in md.splitlines() if x.startswith("| 2: best LFP") and "held-out time" in x)
    assert goal2.rstrip(" |").endswith("NO") and "+0.000" in goal2
    assert "seed 0: lfp_multi, seed 1: lfp_multi" in md


def test_family_doc_names_each_seeds_chosen_pretraining(tmp_path):
    """With loss.choose_masking the doc says, per seed, which objective each student kept and
    both validation scores; runs without it add no such line."""
    dirs = [_fake_run(tmp_path, s, 0.1) for s in (0, 1)]
    m = dirs[1] / "report" / "metrics.json"
    summ = json.loads(m.read_text())
    summ["objective_choice"] = {"distilled": {"chosen": "plain", "mask_ratio": 0.0, "val_r2": {"plain": 0.13, "masked": 0.1134}},
                                "lfp_only": {"chosen": "masked", "mask_ratio": 0.25, "val_r2": {"plain": 0.05, "masked": 0.13}}}  # fmt: skip
    m.write_text(json.dumps(summ))
    rows, info, names = S.load_runs(dirs)
    md = S.family_doc(rows, info, names, "linear", None)
    lines = [x for x in md.splitlines() if x.startswith("- seed 1: distilled")]
    assert lines == ["- seed 1: distilled **plain** (0.130 / 0.113), LFP-only **masked** (0.050 / 0.130)"]
    assert not any(x.startswith("- seed 0: distilled") for x in md.splitlines())
    plain = S.family_doc(*S.load_runs(dirs[:1]), "linear", None)
    assert "pre-training objective chosen" not in plain
