"""`rtdecode analyze RUN_DIR`: every alignment number of a finished distill run.

    res = analyze_run("runs/tiny")          # -> runs/tiny/analysis/{report.md, analysis.json, *.png}

Per training session, on its held-out time (linear maps are fit on its training time):
  teacher alignment   each model's latents vs the teacher's per-bin latents: linear CKA
                      (standard and debiased), the mean per-bin cosine after a ridge map into the
                      teacher's space, and for students with an alignment head the cosine of that
                      head's projection to the (standardised) teacher latents, as in the loss;
                      over temporal scales (10 ms to 1 s pools) and per channel patch (tokens);
  controls            the same with the student's bins circularly shifted (>= 1 s) or
                      block-permuted, and with student session A against teacher session B;
  subspace capture    fraction of the teacher's behaviour-decoder subspace a linear map from the
                      model explains (before distillation = 'initial' and the LFP-only models);
  truth recovery      CKA and ridge R² to the simulator's true latents (`session.latents`), on
                      every session (held-out sessions through the zero-shot embedding).
Latents are z-scored per dim with the session's training-bin statistics before comparing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from offline.train.distill import standardize_targets

from .compare import decoder_subspace, patch_metrics, scale_curve, subspace_capture, truth_recovery, with_controls
from .controls import shuffled_session_pairs, summarize, truncate_pair
from .latents import STUDENTS, LoadedRun, load_run, model_latents
from .metrics import cosine_per_bin, linear_cka, mapped_cosine, zscore_stats

LFP_ONLY = ("lfp_multi", "lfp_multi_unsup", "lfp_single")
DISTILLED = ("distilled", "distilled_sup")


@dataclass(frozen=True)
class AnalysisConfig:
    n_shuffles: int = 20  # shuffles per control
    scales_ms: tuple[float, ...] = (10, 20, 50, 100, 200, 500, 1000)
    min_shift_s: float = 1.0  # circular-shift control: shift at least this much
    block_s: float = 0.5  # block-permutation control: block length
    chance_tol: float = 0.05  # |control mean| below this counts as "near chance"
    trace_bins: int = 1000  # per-bin cosine trace in the figure (first held-out bins of session 0)
    seed: int = 0
    ridge_alpha: float = 1.0  # every map between latents (relative penalty; the shuffled controls use the same)


def _z(x, stats):
    return ((np.asarray(x, np.float64) - stats[0]) / stats[1]).astype(np.float64)


def _quiet(msg: str) -> None:
    pass  # the library default: no stage lines (the CLI prints them on stderr)


def compute(run: LoadedRun, acfg: AnalysisConfig = AnalysisConfig(), log=_quiet) -> dict:
    """Every number of the report; `log` gets one stage line per session (progress, not data)."""
    cfg, alpha = run.cfg, acfg.ridge_alpha
    w, bin_s = cfg.window_bins, float(run.sessions[0].bin_width)
    rng = np.random.default_rng(acfg.seed)
    n, min_shift, block = acfg.n_shuffles, max(1, round(acfg.min_shift_s / bin_s)), max(1, round(acfg.block_s / bin_s))
    ks = sorted({max(1, round(ms / 1000 / bin_s)) for ms in acfg.scales_ms})
    models = [m for m in STUDENTS if m in run.students] + ["features"]
    train = run.train_sessions
    # the pipeline's alignment target (standardised teacher latents) for the projection cosine
    tfull = {i: model_latents(run, "teacher", i, np.arange(run.data[i].n_bins))["latent"] for i in train}
    targets = standardize_targets(tfull, run.data, cfg.loss.standardize_targets)  # exactly as training

    res = {"teacher": {m: {} for m in models}, "truth": {m: {} for m in ["teacher", *models]}, "shuffled_session": {}}
    traces, keep, teach = {}, {}, {}
    log(f"[analyze] {run.root}: {len(run.data)} sessions ({len(train)} training), models {', '.join(models)}; "
        f"{n} shuffles per control")  # fmt: skip
    for i, d in enumerate(run.data):
        t_s = time.perf_counter()
        tr = np.arange(d.train.start + w - 1, d.train.stop, cfg.eval.fit_stride)
        te = np.arange(d.test.start, d.test.stop)
        both, ntr, sid = np.concatenate([tr, te]), len(tr), d.session_id
        zt = run.sessions[i].latents
        if zt is not None:
            zs = zscore_stats(zt[tr])
            z_tr, z_te = _z(zt[tr], zs), _z(zt[te], zs)
        if i < run.n_train:
            ts = zscore_stats(tfull[i][tr])
            t_tr, t_te = _z(tfull[i][tr], ts), _z(tfull[i][te], ts)
            teach[i] = (t_tr, t_te)
            basis = decoder_subspace(t_tr, d.behavior[tr], alpha)
            if zt is not None:
                res["truth"]["teacher"][sid] = truth_recovery(t_tr, z_tr, t_te, z_te, alpha, rng, n, min_shift)
        for m in models:
            out = model_latents(run, m, i, both)
            st = zscore_stats(out["latent"][:ntr])
            s_tr, s_te = _z(out["latent"][:ntr], st), _z(out["latent"][ntr:], st)
            if zt is not None:
                r = truth_recovery(s_tr, z_tr, s_te, z_te, alpha, rng, n, min_shift)
                res["truth"][m][sid] = {**r, "split": "train_session" if i < run.n_train else "held_out_session"}
            if i >= run.n_train:
                continue
            keep[(m, i)] = (s_tr, s_te)
            r = with_controls(s_tr, t_tr, s_te, t_te, alpha, rng, n, min_shift, block)
            cos_bins = mapped_cosine(s_tr, t_tr, s_te, t_te, alpha)
            r["cos_mapped_quantiles"] = [float(q) for q in np.quantile(cos_bins, [0.1, 0.5, 0.9])]
            r["scales"] = scale_curve(s_tr, t_tr, s_te, t_te, alpha, ks, rng, n, acfg.min_shift_s, bin_s)
            r["subspace"] = subspace_capture(s_tr, t_tr, s_te, t_te, basis, alpha, rng, n, min_shift)
            if "tokens" in out:
                tok = out["tokens"]
                ps = zscore_stats(tok[:ntr])
                r["patches"] = patch_metrics(_z(tok[:ntr], ps), t_tr, _z(tok[ntr:], ps), t_te, alpha)
            if "proj" in out:  # and what a constant (this session's mean target) would score
                tgt_te = targets[i][te]
                const = np.broadcast_to(targets[i][d.train].mean(0), tgt_te.shape)
                r["cos_proj"] = float(cosine_per_bin(out["proj"][ntr:], tgt_te).mean())
                r["cos_proj_session_mean"] = float(cosine_per_bin(const, tgt_te).mean())
            if i == 0:
                traces[m] = cos_bins[: acfg.trace_bins]
            res["teacher"][m][sid] = r
        what = "teacher alignment, controls and truth recovery" if i < run.n_train else "truth recovery only (unseen session)"
        log(f"[analyze] session {sid} ({i + 1}/{len(run.data)}): {what}, {time.perf_counter() - t_s:.1f} s")
    for m in models:  # student of session a against the teacher of session b
        vals = []
        for a, b in shuffled_session_pairs(train):
            (s_tr, s_te), (t_tr, t_te) = keep[(m, a)], teach[b]
            s_tr, t_tr = truncate_pair(s_tr, t_tr)
            s_te, t_te = truncate_pair(s_te, t_te)
            vals.append({"cka": linear_cka(s_te, t_te), "cka_debiased": linear_cka(s_te, t_te, debiased=True),
                         "cos_mapped": float(mapped_cosine(s_tr, t_tr, s_te, t_te, alpha).mean())})  # fmt: skip
        res["shuffled_session"][m] = {k: summarize([v[k] for v in vals]) for k in ("cka", "cka_debiased", "cos_mapped")} if vals else {}
    res["summary"] = summarize_results(res, models, acfg)
    res["meta"] = {"run": str(run.root), "models": models, "sessions": [d.session_id for d in run.data],
                   "train_sessions": [run.data[i].session_id for i in train], "bin_s": bin_s,
                   "scales_bins": ks, "design": cfg.design, "window_bins": w, "analysis": asdict(acfg),
                   "has_true_latents": any(s.latents is not None for s in run.sessions)}  # fmt: skip
    return res, traces


def _mean(xs) -> float:
    v = np.asarray([x for x in xs if x is not None and np.isfinite(x)], np.float64)
    return float(v.mean()) if len(v) else float("nan")


def summarize_results(res: dict, models: list[str], acfg: AnalysisConfig) -> dict:
    """Means over training sessions per model, and the expected orderings as booleans."""
    out = {"teacher": {}, "truth": {}}
    for m in models:
        per = list(res["teacher"][m].values())
        if not per:
            continue
        row = {k: _mean(p[k] for p in per) for k in ("cka", "cka_debiased", "cos_mapped")}
        row["cos_proj"] = _mean(p.get("cos_proj") for p in per)
        row["cos_proj_session_mean"] = _mean(p.get("cos_proj_session_mean") for p in per)
        row["subspace"] = _mean(p["subspace"]["fraction"] for p in per)
        row["subspace_control"] = _mean(p["subspace"]["control_circular"]["mean"] for p in per)
        for kind in ("circular", "block"):
            for k in ("cka", "cka_debiased", "cos_mapped"):
                row[f"{kind}_{k}"] = _mean(p["controls"][kind][k]["mean"] for p in per)
        for k in ("cka", "cka_debiased", "cos_mapped"):
            row[f"session_{k}"] = res["shuffled_session"][m].get(k, {}).get("mean", float("nan"))
        row["above_control"] = bool(all(p["cka_debiased"] > p["controls"]["circular"]["cka_debiased"]["hi"] for p in per))
        out["teacher"][m] = row
    for m, per in res["truth"].items():
        for split in ("train_session", "held_out_session"):
            rows = [p for p in per.values() if p.get("split", "train_session") == split]
            if rows:
                out["truth"].setdefault(m, {})[split] = {
                    "cka": _mean(p["cka"] for p in rows), "cka_debiased": _mean(p["cka_debiased"] for p in rows),
                    "r2": _mean(p["r2"] for p in rows), "control_r2": _mean(p["control_circular"]["r2"]["mean"] for p in rows),
                    "control_cka_debiased": _mean(p["control_circular"]["cka_debiased"]["mean"] for p in rows), "n": len(rows)}  # fmt: skip
    out["checks"] = _checks(out, models, acfg)
    return out


def _checks(s: dict, models: list[str], acfg: AnalysisConfig) -> dict:
    t, tr = s["teacher"], s["truth"]
    lfp = [m for m in LFP_ONLY if m in t]
    checks = {}
    for d in DISTILLED:
        if d not in t or not lfp:
            continue
        for k in ("cka", "cka_debiased", "cos_mapped", "subspace"):
            checks[f"{d} closer to teacher than LFP-only ({k})"] = bool(t[d][k] > max(t[m][k] for m in lfp))
            for m in lfp:  # and against each baseline alone (the unsupervised one is the like-for-like contrast)
                checks[f"{d} closer to teacher than {m} ({k})"] = bool(t[d][k] > t[m][k])
        if d in tr and all(m in tr for m in lfp):
            for k in ("r2", "cka_debiased"):
                a = tr[d]["train_session"][k]
                checks[f"{d} closer to true latents than LFP-only ({k}, train sessions' held-out time)"] = bool(
                    a > max(tr[m]["train_session"][k] for m in lfp))  # fmt: skip
    for k in ("cos_mapped", "cka_debiased"):
        ctl = [abs(t[m][f"{c}_{k}"]) for m in t for c in ("circular", "block", "session")]
        checks[f"controls near 0: {k} (|mean| < {acfg.chance_tol}, every model and control)"] = bool(max(ctl) < acfg.chance_tol)
    for m in t:
        checks[f"{m} above its circular-shift control (debiased CKA > control 97.5%, every session)"] = t[m]["above_control"]
    return checks


def analyze_run(run_dir: str | Path, out_dir: str | Path | None = None, *, sessions: list | None = None,
                acfg: AnalysisConfig = AnalysisConfig(), log=_quiet) -> dict:  # fmt: skip
    """Load a finished distill run, compute everything, write report.md, analysis.json and the
    figures under `out_dir` (default <run>/analysis). Returns the results and the file paths."""
    from .report import write_report

    log(f"[analyze] loading {run_dir}: its sessions, teacher and students")
    run = load_run(run_dir, sessions)
    res, traces = compute(run, acfg, log)
    out = Path(out_dir) if out_dir is not None else run.root / "analysis"
    log(f"[analyze] writing the report, analysis.json and figures to {out}")
    res["paths"] = {k: str(v) for k, v in write_report(res, traces, out).items()}
    return res


def main_analyze(run_dir: str, out: str | None) -> int:
    """CLI entry (`rtdecode analyze RUN_DIR [--out DIR]`): prints the report, 0 on success."""
    res = analyze_run(run_dir, out, log=lambda m: print(m, file=sys.stderr, flush=True))  # stdout: the report only
    print(Path(res["paths"]["markdown"]).read_text())
    print(f"analysis: {Path(res['paths']['markdown']).parent}")
    return 0
