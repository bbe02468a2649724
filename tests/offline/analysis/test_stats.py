"""Paired tests and bootstrap CIs across sessions (offline.analysis.stats): known answers,
coverage on synthetic data, determinism, and the report showing CI and n."""

from __future__ import annotations

import numpy as np
import pytest

from offline.analysis.stats import (
    StatsConfig,
    block_stats,
    bootstrap_units,
    mean_ci,
    paired,
    paired_summary,
    percentile_ci,
    r2_blocks,
    sign_flip_p,
    stats_markdown,
    wilcoxon_p,
)
from rtdecode.batch import r2_score

FAST = StatsConfig(n_boot=2000, seed=0)


def _rows(r2_a, r2_b, split="held_out_sessions_zero_shot", a="distilled", b="lfp_multi_unsup", seed=None):
    rows = []
    for i, (x, y) in enumerate(zip(r2_a, r2_b)):
        for m, v in ((a, x), (b, y)):
            r = {"model": m, "split": split, "session": f"s{i}", "r2": [v, v]}
            if seed is not None:
                r["seed"] = seed
            rows.append(r)
    return rows


def _session(rng, n=600, noise_a=0.5, noise_b=0.5, n_out=2):
    """Smooth targets and two predictions with AR(1) errors of the given sizes."""
    t = np.arange(n)
    y = np.stack([np.sin(t / 17.0 + k) + 0.3 * rng.standard_normal(n) for k in range(n_out)], 1)

    def err(s):
        e = np.zeros((n, n_out))
        w = rng.standard_normal((n, n_out))
        for i in range(1, n):
            e[i] = 0.9 * e[i - 1] + w[i]
        return s * e / e.std(0)

    return y, y + err(noise_a), y + err(noise_b)


def test_block_stats_give_r2_score_when_every_block_is_drawn_once():
    rng = np.random.default_rng(1)
    y, pa, _ = _session(rng, n=503, n_out=3)
    b = block_stats(y, pa, 10)
    assert len(b["n"]) == 10 and sum(b["n"]) == 503
    np.testing.assert_allclose(r2_blocks(b, np.ones(10)), r2_score(y, pa).mean(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(r2_blocks(b, np.ones(10), [1]), r2_score(y, pa)[1], rtol=0, atol=1e-10)
    # drawing only block 0 twice: R² of block 0 alone (the duplicate does not change it)
    c = np.zeros(10)
    c[0] = 2
    np.testing.assert_allclose(r2_blocks(b, c), r2_score(y[:50], pa[:50]).mean(), rtol=0, atol=1e-10)


def test_constant_difference_gives_a_zero_width_ci_around_it():
    rows = _rows([0.5, 0.4, 0.6, 0.3, 0.55, 0.45, 0.7], [0.4, 0.3, 0.5, 0.2, 0.45, 0.35, 0.6])
    t = paired(rows, "distilled", "lfp_multi_unsup", "held_out_sessions_zero_shot", scfg=FAST)
    assert t["n"] == 7 and t["ci_over"] == "sessions"
    assert t["mean_diff"] == pytest.approx(0.1)
    assert t["ci"] == pytest.approx([0.1, 0.1], abs=1e-12)
    assert t["a_wins"] == 7
    # 7 positive differences: exact two-sided p = 2 / 2^7 for both tests
    assert t["p_wilcoxon"] == pytest.approx(2 / 128) and t["p_sign_flip"] == pytest.approx(2 / 128)


def test_symmetric_null_gives_p_one_and_a_ci_around_zero():
    d = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]) / 100
    assert wilcoxon_p(d) == pytest.approx(1.0)
    assert sign_flip_p(d) == pytest.approx(1.0)
    rows = _rows(0.5 + d, np.full(6, 0.5))
    t = paired(rows, "distilled", "lfp_multi_unsup", "held_out_sessions_zero_shot", scfg=FAST)
    assert t["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert t["ci"][0] < 0 < t["ci"][1]
    assert t["p_wilcoxon"] > 0.9 and t["p_sign_flip"] > 0.9


def test_wilcoxon_matches_scipy_exact_without_ties_and_its_approximation_beyond_16():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(8)
    for n in (5, 9, 14):
        d = rng.normal(0.2, 1.0, n)
        assert wilcoxon_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue, rel=1e-9)
    d = rng.normal(0.3, 1.0, 25)
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d, method="approx").pvalue, rel=1e-6)
    # zeros are dropped (zero_method "wilcox"): [0, 0, +, +, +] is three positive differences
    assert wilcoxon_p([0.0, 0.0, 0.1, 0.2, 0.3]) == pytest.approx(2 / 8)


def test_sign_flip_is_exact_and_monte_carlo_agrees_beyond_16():
    d = np.array([0.3, 0.2, 0.1, -0.05, 0.25, 0.15])
    # exact: patterns whose |mean| >= the observed one, counted by hand over all 64
    signs = np.array(np.meshgrid(*[[1, -1]] * 6)).reshape(6, -1).T
    want = float((np.abs(signs @ d) >= abs(d.sum()) - 1e-12).mean())
    assert sign_flip_p(d) == pytest.approx(want)
    rng = np.random.default_rng(3)
    d20 = rng.normal(0.3, 1.0, 20)
    mc = sign_flip_p(d20, 20000, np.random.default_rng(0))
    assert 0.0 < mc < 1.0
    assert sign_flip_p(d20[:16]) == pytest.approx(sign_flip_p(d20[:16], 20000, np.random.default_rng(0)))  # n <= 16: exact


def test_session_bootstrap_ci_covers_the_true_mean_at_about_its_level():
    rng = np.random.default_rng(7)
    hits, n_rep = 0, 300
    for _ in range(n_rep):
        d = rng.normal(0.2, 1.0, 30)
        lo, hi = percentile_ci(bootstrap_units(d, None, 1000, rng), 0.9)
        hits += lo <= 0.2 <= hi
    assert 0.84 <= hits / n_rep <= 0.95  # nominal 0.90 (the percentile bootstrap runs a little narrow)


def test_block_bootstrap_ci_covers_the_true_difference_over_fresh_sessions():
    """Two decoders whose true R² differ: the block CI of one session's difference covers the
    difference measured on a very long test block (the truth) about as often as its level."""
    rng = np.random.default_rng(11)
    y, pa, pb = _session(rng, n=200000, noise_a=0.5, noise_b=0.7)
    truth = float(r2_score(y, pa).mean() - r2_score(y, pb).mean())
    hits, n_rep = 0, 60
    for k in range(n_rep):
        rows = []
        for j in range(2):  # two sessions: disjoint stretches of the long recording
            s = slice((2 * k + j) * 1500, (2 * k + j + 1) * 1500)
            for m, p in (("a", pa), ("b", pb)):
                rows.append({"model": m, "split": "held_out_time", "session": f"s{j}", "r2": list(r2_score(y[s], p[s])),
                             "blocks": block_stats(y[s], p[s], 10)})  # fmt: skip
        t = paired(rows, "a", "b", "held_out_time", scfg=StatsConfig(n_boot=500, seed=k))
        assert t["ci_over"] == "time_blocks" and t["n"] == 2
        hits += t["ci"][0] <= truth <= t["ci"][1]
    assert 0.75 <= hits / n_rep <= 1.0  # nominal 0.95; 10 blocks: somewhat narrow
    assert truth > 0.1


def test_few_sessions_use_time_blocks_and_identical_predictions_give_zero():
    rng = np.random.default_rng(2)
    rows = []
    for i in range(3):
        y, pa, _ = _session(rng, n=400)
        for m in ("a", "b"):
            rows.append({"model": m, "split": "held_out_time", "session": f"s{i}", "r2": list(r2_score(y, pa)),
                         "blocks": block_stats(y, pa)})  # fmt: skip
    t = paired(rows, "a", "b", "held_out_time", scfg=FAST)
    assert t["ci_over"] == "time_blocks" and "sessions" in t["cis"]
    assert t["ci"] == pytest.approx([0.0, 0.0], abs=1e-12) and t["p_wilcoxon"] == 1.0
    # b's squared error 3x larger in every block of every session: the block CI excludes 0
    for r in rows:
        if r["model"] == "b":
            r["blocks"] = {**r["blocks"], "sse": (np.asarray(r["blocks"]["sse"]) * 3).tolist()}
            r["r2"] = [x - 0.2 for x in r["r2"]]
    t = paired(rows, "a", "b", "held_out_time", scfg=FAST)
    assert t["ci"][0] > 0 and t["mean_diff"] > 0


def test_deterministic_given_the_seed_and_independent_of_other_comparisons():
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0.2, 0.6, 8), rng.uniform(0.2, 0.6, 8)
    rows = _rows(a, b)
    one = paired_summary(rows, [("distilled", "lfp_multi_unsup")], scfg=FAST)
    two = paired_summary(rows, [("lfp_multi_unsup", "distilled"), ("distilled", "lfp_multi_unsup")], scfg=FAST)
    assert one["groups"]["all outputs"][0]["ci"] == two["groups"]["all outputs"][1]["ci"]
    again = paired_summary(rows, [("distilled", "lfp_multi_unsup")], scfg=FAST)
    assert again == one
    other = paired_summary(rows, [("distilled", "lfp_multi_unsup")], scfg=StatsConfig(n_boot=2000, seed=1))
    assert other["groups"]["all outputs"][0]["ci"] != one["groups"]["all outputs"][0]["ci"]


def test_seeds_pool_as_units_with_a_two_level_bootstrap():
    rows = _rows([0.5] * 6, [0.4] * 6, seed=0) + _rows([0.6] * 6, [0.4] * 6, seed=1) + _rows([0.3] * 6, [0.4] * 6, seed=2)
    t = paired(rows, "distilled", "lfp_multi_unsup", "held_out_sessions_zero_shot", scfg=FAST)
    assert t["n"] == 18 and t["n_seeds"] == 3 and t["n_sessions"] == 6
    assert t["ci_over"] == "seeds_sessions"
    assert t["mean_diff"] == pytest.approx(0.2 / 3)
    # the seed effect is all the spread: resampled means lie between the seeds' -0.1 and 0.2
    assert -0.1 - 1e-9 <= t["ci"][0] < 0.2 / 3 < t["ci"][1] <= 0.2 + 1e-9
    assert t["ci"][0] < 0  # a one-level bootstrap of the 18 units would exclude 0
    m = mean_ci(rows, "distilled", "held_out_sessions_zero_shot", scfg=FAST)
    assert m["n"] == 18 and m["mean"] == pytest.approx(0.4667, abs=1e-4) and m["ci_over"] == "seeds_sessions"


def _validation_vs_test_rows() -> list[dict]:
    """lfp_multi: better on test, worse on validation; distilled: the reverse; 6 sessions."""
    rows = []
    for i in range(6):
        rows += [{"model": "lfp_multi", "split": "held_out_time", "session": f"s{i}", "r2": [0.9], "val_r2": [0.1]},
                 {"model": "distilled", "split": "held_out_time", "session": f"s{i}", "r2": [0.2], "val_r2": [0.5]},
                 {"model": "ridge_lfp", "split": "held_out_time", "session": f"s{i}", "r2": [0.3], "val_r2": [0.3]}]  # fmt: skip
    return rows


def test_best_lfp_is_chosen_on_validation_not_on_test():
    rows = _validation_vs_test_rows()
    res = paired_summary(rows, [("best_lfp", "ridge_lfp")], scfg=FAST)
    assert res["best_lfp"] == {"None": "distilled"}
    t = res["groups"]["all outputs"][0]
    assert t["mean_diff"] == pytest.approx(-0.1)


def test_report_shows_ci_and_n_beside_every_p():
    rng = np.random.default_rng(4)
    rows = _rows(rng.uniform(0.3, 0.5, 6), rng.uniform(0.2, 0.4, 6))
    res = paired_summary(rows, [("distilled", "lfp_multi_unsup")], subsets={"velocity": [0]}, scfg=FAST)
    md = stats_markdown(res, {"distilled": "distilled LFP"})
    t = res["groups"]["velocity"][0]
    after = md.split("### velocity")[1]
    line = next(x for x in after.splitlines() if x.startswith("| distilled LFP vs lfp_multi_unsup"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "unseen sessions, zero-shot" and cells[2] == "6"
    assert cells[4] == f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]" and cells[5] == "sessions"
    assert cells[7] == f"{t['p_wilcoxon']:.3g}"
    assert "### velocity" in md and "95% percentile bootstrap" in md and "n = number of units" in md


def test_bad_stats_config_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="CI level must be in"):
        StatsConfig(level=95)
    with pytest.raises(ValueError, match="at least 100 bootstrap"):
        StatsConfig(n_boot=10)


def test_best_lfp_is_the_shipped_decoder_when_the_run_says_which():
    # the bundle's export choice (validation under export.choose_by, which may look at other
    # sessions than the training ones) wins over the training sessions' own validation, and it
    # may be a ridge: then goal 2's comparison with that ridge is exactly 0
    rows = _validation_vs_test_rows()
    res = paired_summary(rows, [("best_lfp", "ridge_lfp")], scfg=FAST, shipped={None: "lfp_multi"})
    assert res["best_lfp"] == {"None": "lfp_multi"} and res["best_lfp_by"] == "shipped"
    assert res["groups"]["all outputs"][0]["mean_diff"] == pytest.approx(0.6)
    res = paired_summary(rows, [("best_lfp", "ridge_lfp")], scfg=FAST, shipped={None: "ridge_lfp"})
    assert res["best_lfp"] == {"None": "ridge_lfp"} and res["groups"]["all outputs"][0]["mean_diff"] == pytest.approx(0.0)
    # a shipped row the run has no rows for (an older metrics file): the validation pick
    res = paired_summary(rows, [("best_lfp", "ridge_lfp")], scfg=FAST, shipped={None: "nope"})
    assert res["best_lfp"] == {"None": "distilled"}
