"""Paired statistics of decoders across sessions: bootstrap confidence intervals of the mean R²
difference next to every p-value, and the number of sessions they rest on.

    rows = json.load(open("runs/default/report/metrics.json"))["rows"]
    res = paired_summary(rows, [("distilled", "lfp_multi_unsup"), ("best_lfp", "ridge_lfp")],
                         subsets={"velocity and grip": [2, 3, 4]})
    print(stats_markdown(res))

A *unit* is one session (with several seeds: one (seed, session) pair). Per unit, a decoder's
score is the mean over outputs of its R² on the session's test block; a comparison a vs b is the
paired difference d = R²(a) - R²(b) per unit, on the same test bins.

- p-values: the two-sided Wilcoxon signed-rank test of d (zeros dropped, ties at their average
  rank; exact over every sign pattern up to 16 units, else the normal approximation)
  and the two-sided sign-flip permutation test of mean(d) (exact over all 2^n sign patterns up
  to n = 16 units, otherwise `n_perm` random patterns). Both treat the units as independent.
- CI of mean(d): a percentile bootstrap. With at least `min_sessions` units it resamples units
  ("sessions"; with seeds, two levels: seeds, then sessions within each drawn seed). With fewer,
  a unit bootstrap is degenerate (3 sessions have 10 distinct resamples), so it resamples the
  contiguous time blocks of every session's test block instead ("time blocks": each session's
  R² recomputed from the drawn blocks, sessions kept fixed). That CI is conditional on the
  sessions recorded: it measures the noise of the test time, not the spread between sessions.
  Both are computed when possible (JSON); the report shows the one chosen and says which.
- "best_lfp": per seed, the decoder the run's bundle ships (its export choice, by validation R²
  under `export.choose_by`; never the test block), or for runs that recorded none, the learned
  LFP decoder (LFP_DECODERS) with the highest validation R² on the training sessions'
  validation blocks; compared as a model.

Everything is a pure function of the rows and `StatsConfig.seed`: each comparison draws from
its own generator, seeded by (seed, comparison, split, outputs), so results do not depend on
which other comparisons are made.
"""

from __future__ import annotations

import functools
import itertools
import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np

N_BLOCKS = 10  # a session's test block is cut into this many contiguous time blocks (row "blocks")
LFP_DECODERS = ("distilled", "distilled_sup", "lfp_multi", "lfp_multi_unsup", "lfp_single")
SPLITS = ("held_out_time", "held_out_sessions_zero_shot", "held_out_sessions_new_embedding")
SPLIT_TITLES = {"held_out_time": "held-out time (training sessions)", "held_out_sessions_zero_shot": "unseen sessions, zero-shot",
                "held_out_sessions_new_embedding": "unseen sessions, new embedding"}  # fmt: skip
CI_OVER = {"sessions": "sessions", "seeds_sessions": "seeds, then sessions", "time_blocks": "time blocks within sessions"}


@dataclass(frozen=True)
class StatsConfig:
    n_boot: int = 10000  # bootstrap resamples
    level: float = 0.95  # CI level
    seed: int = 0
    min_sessions: int = 6  # fewer paired units than this: the CI resamples time blocks within sessions
    n_perm: int = 20000  # sign-flip patterns when n > 16 (exact enumeration below)

    def __post_init__(self):
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"the CI level must be in (0, 1), got {self.level}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot = {self.n_boot}: at least 100 bootstrap resamples are needed for a CI")


DEFAULT = StatsConfig()


# ------------------------------------------------------------------------------------------
# per-block sufficient statistics of R²


def block_stats(y_true: np.ndarray, y_pred: np.ndarray, n_blocks: int = N_BLOCKS) -> dict:
    """Per contiguous time block of a test block (n_bins, n_out): bin count, sum and sum of
    squares of the targets and the squared error, per output. R² of any multiset of blocks
    follows from them (`r2_blocks`); all blocks once gives exactly rtdecode.batch.r2_score."""
    y, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"targets and predictions must both be (bins, outputs), got {y.shape} and {p.shape}")
    nb = max(1, min(int(n_blocks), len(y)))
    edges = np.linspace(0, len(y), nb + 1).round().astype(int)
    sl = [slice(a, b) for a, b in itertools.pairwise(edges)]
    return {"n": [int(s.stop - s.start) for s in sl], "sy": [y[s].sum(0).tolist() for s in sl],
            "syy": [(y[s] ** 2).sum(0).tolist() for s in sl], "sse": [((y[s] - p[s]) ** 2).sum(0).tolist() for s in sl]}  # fmt: skip


def r2_blocks(blocks: dict, counts: np.ndarray, outputs: list[int] | None = None) -> np.ndarray:
    """Mean R² over `outputs` of the blocks drawn `counts` (..., n_blocks) times each (float)."""
    c = np.asarray(counts, np.float64)
    n = c @ np.asarray(blocks["n"], np.float64)
    sy, syy, sse = (c @ np.asarray(blocks[k], np.float64) for k in ("sy", "syy", "sse"))
    sst = syy - sy**2 / np.maximum(n, 1.0)[..., None]
    r2 = 1.0 - sse / np.maximum(sst, 1e-12)
    return (r2 if outputs is None else r2[..., list(outputs)]).mean(-1)


# ------------------------------------------------------------------------------------------
# tests and intervals on paired differences


@functools.cache
def _patterns(n: int) -> np.ndarray:
    """(2^n, n) every sign pattern as 0 (minus) / 1 (plus)."""
    return np.array(list(itertools.product((1.0, 0.0), repeat=n)))


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences: zeros dropped, tied |d| given
    their average rank; exact (every sign pattern of the ranks) up to 16 non-zero differences,
    else the normal approximation with the ties' variance. 1.0 when all are zero. Without ties
    it equals scipy.stats.wilcoxon's exact p (whose permutation path for ties is slow)."""
    from scipy.stats import rankdata

    d = np.asarray(d, np.float64)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    ranks = rankdata(np.abs(d))
    t, e = ranks[d > 0].sum(), ranks.sum() / 2
    dev = abs(t - e) - 1e-9
    if n <= 16:
        return float((np.abs(_patterns(n) @ ranks - e) >= dev).mean())
    return float(math.erfc(abs(t - e) / math.sqrt((ranks**2).sum() / 4) / math.sqrt(2)))


def sign_flip_p(d: np.ndarray, n_perm: int = 20000, rng: np.random.Generator | None = None) -> float:
    """Two-sided sign-flip permutation p of mean(d) = 0: exact (every sign pattern) for up to
    16 differences, else (1 + hits) / (1 + n_perm) over random patterns from `rng`."""
    d = np.asarray(d, np.float64)
    n = len(d)
    if n == 0 or np.all(d == 0):
        return 1.0
    obs = abs(d.mean()) - 1e-12 * np.abs(d).max()  # ties with the observed |mean| count (rounding aside)
    if n <= 16:
        return float((np.abs((2 * _patterns(n) - 1) @ d / n) >= obs).mean())
    rng = rng if rng is not None else np.random.default_rng(0)
    signs = rng.choice((1.0, -1.0), size=(n_perm, n))
    return float((1 + (np.abs(signs @ d / n) >= obs).sum()) / (1 + n_perm))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    q = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(samples, np.float64), [q, 1 - q])
    return float(lo), float(hi)


def bootstrap_units(d: np.ndarray, groups: np.ndarray | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) means of d over resampled units; with `groups` (e.g. the seed of each unit) two
    levels: groups with replacement, then units with replacement within each drawn group."""
    d = np.asarray(d, np.float64)
    if groups is None or len(set(groups)) < 2:
        return d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    per = [d[np.asarray(groups) == g] for g in dict.fromkeys(groups)]
    if len({len(x) for x in per}) == 1:  # equal group sizes (seeds x the same sessions): vectorised
        m, g = np.stack(per), len(per)
        ig = rng.integers(0, g, (n_boot, g))
        return m[ig[:, :, None], rng.integers(0, m.shape[1], (n_boot, g, m.shape[1]))].mean((1, 2))
    out = np.empty(n_boot)
    for k in range(n_boot):
        drawn = [per[j] for j in rng.integers(0, len(per), len(per))]
        out[k] = np.concatenate([x[rng.integers(0, len(x), len(x))] for x in drawn]).mean()
    return out


def bootstrap_blocks(pairs: list[tuple[dict, dict | None]], outputs, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) means over units of R²(a) - R²(b) (b None: R²(a)) with every unit's time blocks
    resampled with replacement (the same blocks for a and b: they share the test bins)."""
    tot = np.zeros(n_boot)
    for ba, bb in pairs:
        nb = len(ba["n"])
        counts = rng.multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot)
        tot += r2_blocks(ba, counts, outputs) - (0.0 if bb is None else r2_blocks(bb, counts, outputs))
    return tot / len(pairs)


def _rng(scfg: StatsConfig, *keys) -> np.random.Generator:
    return np.random.default_rng([scfg.seed, zlib.crc32("|".join(map(str, keys)).encode())])


# ------------------------------------------------------------------------------------------
# rows -> units


def _unit(r: dict):
    return (r.get("seed"), r["session"])


def unit_scores(rows: list[dict], model: str, split: str, outputs: list[int] | None = None) -> dict:
    """{unit: (mean R² over outputs, the row's blocks or None)} of one model on one split."""
    out = {}
    for r in rows:
        if r["model"] == model and r["split"] == split:
            v = r["r2"] if outputs is None else [r["r2"][k] for k in outputs]
            out[_unit(r)] = (float(np.mean(v)), r.get("blocks"))
    return out


def with_best_lfp(rows: list[dict], candidates: tuple[str, ...] = LFP_DECODERS,
                  shipped: dict | None = None) -> tuple[list[dict], dict]:  # fmt: skip
    """rows plus copies of the rows of each seed's best LFP decoder under the model name
    "best_lfp": the decoder the run's bundle ships (`shipped`: {seed: row name}, the export
    choice on validation, `export.choose_by`; it may be a ridge), else the learned LFP decoder
    with the highest validation R² (mean over the training sessions' validation blocks; runs
    that recorded no export choice). Returns (rows, {seed: chosen model})."""
    from offline.train.evaluate import val_score

    chosen, extra = {}, []
    for seed in dict.fromkeys(r.get("seed") for r in rows):
        rs = [r for r in rows if r.get("seed") == seed]
        best = (shipped or {}).get(seed)
        if not any(r["model"] == best for r in rs):  # no recorded choice (or no rows of it): by validation
            val = {m: v for m in candidates if (v := val_score(rs, m)) is not None}
            if not val:
                continue
            best = max(val, key=lambda m: val[m])
        chosen[seed] = best
        extra += [{**r, "model": "best_lfp", "chosen": best} for r in rs if r["model"] == best]
    return rows + extra, chosen


# ------------------------------------------------------------------------------------------
# comparisons


def paired(rows: list[dict], a: str, b: str, split: str, outputs: list[int] | None = None,
           scfg: StatsConfig = DEFAULT, tag: str = "") -> dict | None:  # fmt: skip
    """Paired comparison of models a and b on one split across the units both have: n, mean
    difference, wins, Wilcoxon and sign-flip p, and the bootstrap CI (see the module doc)."""
    sa, sb = unit_scores(rows, a, split, outputs), unit_scores(rows, b, split, outputs)
    units = [u for u in sa if u in sb]
    if len(units) < 2:
        return None
    d = np.array([sa[u][0] - sb[u][0] for u in units])
    seeds = [u[0] for u in units]
    multi_seed = len(set(seeds)) > 1
    rng = _rng(scfg, a, b, split, outputs, tag)
    res = {"a": a, "b": b, "split": split, "outputs": outputs, "n": len(units), "n_sessions": len({u[1] for u in units}),
           "n_seeds": len(set(seeds)), "mean_diff": float(d.mean()), "a_wins": int((d > 0).sum()),
           "p_wilcoxon": wilcoxon_p(d), "p_sign_flip": sign_flip_p(d, scfg.n_perm, rng), "level": scfg.level,
           "diffs": {f"{u[0]}:{u[1]}" if multi_seed else str(u[1]): float(x) for u, x in zip(units, d)}}  # fmt: skip
    boot = bootstrap_units(d, seeds if multi_seed else None, scfg.n_boot, rng)
    cis = {"seeds_sessions" if multi_seed else "sessions": percentile_ci(boot, scfg.level)}
    blocks = [(sa[u][1], sb[u][1]) for u in units]
    if all(x is not None and y is not None and x["n"] == y["n"] for x, y in blocks):
        cis["time_blocks"] = percentile_ci(bootstrap_blocks(blocks, outputs, scfg.n_boot, rng), scfg.level)
    over = next(iter(cis)) if len(units) >= scfg.min_sessions or "time_blocks" not in cis else "time_blocks"
    res.update(ci=list(cis[over]), ci_over=over, cis={k: list(v) for k, v in cis.items()})
    return res


def mean_ci(rows: list[dict], model: str, split: str, outputs: list[int] | None = None,
            scfg: StatsConfig = DEFAULT) -> dict | None:  # fmt: skip
    """One model's mean R² over units with its bootstrap CI (chosen as for `paired`)."""
    s = unit_scores(rows, model, split, outputs)
    if not s:
        return None
    units = list(s)
    v = np.array([s[u][0] for u in units])
    seeds = [u[0] for u in units]
    rng = _rng(scfg, model, split, outputs, "mean")
    out = {"mean": float(v.mean()), "n": len(units), "n_sessions": len({u[1] for u in units}), "n_seeds": len(set(seeds))}
    blocks = [s[u][1] for u in units]
    if len(units) >= scfg.min_sessions or any(b is None for b in blocks):
        if len(units) >= 2:
            out["ci"] = list(percentile_ci(bootstrap_units(v, seeds if len(set(seeds)) > 1 else None, scfg.n_boot, rng), scfg.level))
            out["ci_over"] = "seeds_sessions" if len(set(seeds)) > 1 else "sessions"
    else:
        out["ci"] = list(percentile_ci(bootstrap_blocks([(b, None) for b in blocks], outputs, scfg.n_boot, rng), scfg.level))
        out["ci_over"] = "time_blocks"
    return out


def paired_summary(rows: list[dict], comparisons: list[tuple[str, str]], subsets: dict[str, list[int]] | None = None,
                   scfg: StatsConfig = DEFAULT, shipped: dict | None = None) -> dict:  # fmt: skip
    """Every comparison on every split (where both models have rows), for all outputs and for
    each output subset; "best_lfp" may be named (see `with_best_lfp`; `shipped`: {seed: the
    row of the decoder each run's bundle ships})."""
    rows, chosen = with_best_lfp(rows, shipped=shipped)
    groups = {"all outputs": None, **(subsets or {})}
    out = {"config": asdict(scfg), "best_lfp": {str(k): v for k, v in chosen.items()},
           "best_lfp_by": "shipped" if shipped else "validation", "groups": {}}  # fmt: skip
    for title, outs in groups.items():
        tests = [t for s in SPLITS for a, b in comparisons if (t := paired(rows, a, b, s, outs, scfg, title))]
        out["groups"][title] = tests
    return out


# ------------------------------------------------------------------------------------------
# markdown


def _f(x, nd=3, sign=False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def tests_table(tests: list[dict], labels: dict[str, str] | None = None) -> list[str]:
    labels = labels or {}
    lines = ["| comparison (a vs b) | split | n | mean ΔR² (a − b) | CI | CI over | a wins | Wilcoxon p | sign-flip p |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in tests:
        n = f"{t['n']} ({t['n_seeds']} seeds × {t['n_sessions']} sessions)" if t["n_seeds"] > 1 else str(t["n"])
        lines.append(f"| {labels.get(t['a'], t['a'])} vs {labels.get(t['b'], t['b'])} | {SPLIT_TITLES[t['split']]} | {n} | "
                     f"{_f(t['mean_diff'], sign=True)} | [{_f(t['ci'][0], sign=True)}, {_f(t['ci'][1], sign=True)}] | "
                     f"{CI_OVER[t['ci_over']]} | {t['a_wins']}/{t['n']} | {t['p_wilcoxon']:.3g} | {t['p_sign_flip']:.3g} |")  # fmt: skip
    return lines


def stats_markdown(res: dict, labels: dict[str, str] | None = None) -> str:
    """The paired tests as markdown: one table per output group."""
    c = res["config"]
    lines = ["", "## Paired tests with bootstrap confidence intervals", "",
             (f"Per unit (session; with several seeds, seed × session) the difference of the mean R² over outputs on the "
             f"test block; n = number of units. CI: {c['level'] * 100:g}% percentile bootstrap of the mean difference "
             f"({c['n_boot']} resamples, seed {c['seed']}) over sessions when n >= {c['min_sessions']}, else over the "
             f"{N_BLOCKS} contiguous time blocks of each session's test block (sessions fixed: the noise of the test time, "
             "not the spread between sessions). p: two-sided Wilcoxon signed-rank and sign-flip permutation of the mean.")]  # fmt: skip
    if res.get("best_lfp"):
        picks = ", ".join(f"{v}" if k == "None" else f"seed {k}: {v}" for k, v in res["best_lfp"].items())
        if res.get("best_lfp_by") == "shipped":
            lines.append(f"best_lfp = the decoder the bundle ships, chosen on validation R² (export.choose_by; {picks}).")
        else:
            lines.append(f"best_lfp = the learned LFP decoder with the highest validation R² ({picks}).")
    for title, tests in res["groups"].items():
        if tests:
            lines += ["", f"### {title}", "", *tests_table(tests, labels)]
    return "\n".join(lines) + "\n"


def means_table(rows: list[dict], models: list[str], outputs: list[int] | None = None, scfg: StatsConfig = DEFAULT,
                labels: dict[str, str] | None = None) -> list[str]:  # fmt: skip
    """| model | split... | with 'mean [CI] (n=.., CI over ..)' cells."""
    labels = labels or {}
    splits = [s for s in SPLITS if any(r["split"] == s for r in rows)]
    lines = ["| model | " + " | ".join(SPLIT_TITLES[s] for s in splits) + " |", "|---|" + "---|" * len(splits)]
    for m in models:
        cells = []
        for s in splits:
            r = mean_ci(rows, m, s, outputs, scfg)
            if r is None:
                cells.append("–")
            elif "ci" in r:
                cells.append(f"{_f(r['mean'])} [{_f(r['ci'][0])}, {_f(r['ci'][1])}] (n={r['n']}, {CI_OVER[r['ci_over']]})")
            else:
                cells.append(f"{_f(r['mean'])} (n={r['n']})")
        if any(c != "–" for c in cells):
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    return lines
