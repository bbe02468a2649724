"""The analysis report: analysis.json (every number), report.md (the tables a reader needs)
and PNG figures (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

LABELS = {
    "teacher": "spike teacher",
    "distilled": "distilled LFP (unsupervised)",
    "distilled_sup": "distilled LFP (supervised)",
    "lfp_multi": "LFP-only multi-session",
    "lfp_multi_unsup": "LFP-only multi-session (unsupervised)",
    "lfp_single": "LFP-only single-session",
    "initial": "student before distillation (init)",
    "features": "chain features (no model)",
}


def _plain(o):
    """JSON-plain: NaN/inf -> None, numpy -> python."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else round(float(o), 5)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _f(x, nd=3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def to_markdown(res: dict) -> str:
    meta, s = res["meta"], res["summary"]
    t = s["teacher"]
    lines = [
        "# Alignment analysis", "",
        f"Run `{meta['run']}` ({meta['design']} design, window {meta['window_bins']} bins of {meta['bin_s'] * 1000:g} ms); "
        f"training sessions {', '.join(meta['train_sessions'])}. Numbers are means over training sessions, measured on "
        "their held-out time; linear maps are fit on their training time. Latents are z-scored per dim first.", "",
        "## Alignment to the spike teacher (10 ms bins)", "",
        "| model | CKA | debiased CKA | mapped cosine | projection cosine [constant session-mean target] | teacher decoder subspace captured |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for m, r in t.items():
        lines.append(f"| {LABELS.get(m, m)} | {_f(r['cka'])} | {_f(r['cka_debiased'])} | {_f(r['cos_mapped'])} | "
                     f"{_f(r['cos_proj'])} [{_f(r['cos_proj_session_mean'])}] | {_f(r['subspace'])} (shifted: {_f(r['subspace_control'])}) |")  # fmt: skip
    lines += ["", "Controls (same metrics, pairing broken): debiased CKA / mapped cosine / standard CKA.", "",
              "| model | circular shift (>= 1 s) | block permutation | student session A vs teacher session B |", "|---|---|---|---|"]  # fmt: skip
    for m, r in t.items():
        cells = [f"{_f(r[f'{c}_cka_debiased'])} / {_f(r[f'{c}_cos_mapped'])} / {_f(r[f'{c}_cka'])}" for c in ("circular", "block", "session")]
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    ks = meta["scales_bins"]
    lines += ["", "## Temporal scales: debiased CKA to the teacher after pooling [circular-shift control mean]", "",
              "| model | " + " | ".join(f"{k * meta['bin_s'] * 1000:g} ms" for k in ks) + " |", "|---|" + "---|" * len(ks)]  # fmt: skip
    for m, per in res["teacher"].items():
        if not per:
            continue
        cells = []
        for k in ks:
            v = [p["scales"]["cka_debiased"][p["scales"]["k"].index(k)] for p in per.values() if k in p["scales"]["k"]]
            c = [p["scales"]["control_cka_debiased"][p["scales"]["k"].index(k)]["mean"] for p in per.values() if k in p["scales"]["k"]]
            cells.append(f"{_f(np.mean(v))} [{_f(np.mean(c))}]" if v else "–")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "## Per channel patch: debiased CKA of each patch's token outputs to the teacher's per-bin latents", "",
              "| model | per patch (mean over sessions) |", "|---|---|"]  # fmt: skip
    for m, per in res["teacher"].items():
        pp = [p["patches"]["cka_debiased"] for p in per.values() if "patches" in p]
        if pp:
            lines.append(f"| {LABELS.get(m, m)} | " + " ".join(_f(v, 2) for v in np.mean(pp, 0)) + " |")
    if s["truth"]:
        lines += ["", "## Recovery of the simulator's true latents", "",
                  "| model | sessions | CKA | debiased CKA | ridge R² | shifted R² (control) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for m, per in s["truth"].items():
            for split, r in per.items():
                lines.append(f"| {LABELS.get(m, m)} | {split.replace('_', ' ')}s (n={r['n']}) | {_f(r['cka'])} | "
                             f"{_f(r['cka_debiased'])} | {_f(r['r2'])} | {_f(r['control_r2'])} |")  # fmt: skip
    lines += ["", "## Expected ordering", ""]
    lines += [f"- {'yes' if v else 'NO'}: {k}" for k, v in s["checks"].items()]
    lines += ["", "## How the numbers are made", "",
              "- CKA: linear CKA (Kornblith et al. 2019); debiased CKA uses the unbiased HSIC estimator, which stays near 0 "
              "for independent bins even when pooling leaves few samples, where standard CKA is biased upwards. Bins of slowly "
              "varying latents are not independent: with few effective samples even the debiased controls sit above 0, so "
              "judge every number against its control band, not against 0.",
              "- Mapped cosine: teacher (dim T) and student (dim S) live in different spaces, so a ridge map from the model's "
              "latents to the teacher's is fit on training bins and the per-bin cosine is taken on held-out bins. Projection "
              "cosine: the distilled students' own alignment head (`LFPStudent.align`) against the standardised teacher "
              "latents, exactly what the cosine loss saw; in brackets, the cosine a constant (the session's mean training target) "
              "reaches: a projection cosine near it means the head mostly learned the session's offset, not its time course.",
              "- Subspace captured: the teacher's ridge decoder (latents -> z-scored behaviour) gives k directions; the "
              "fraction of the teacher latents' variance along them that a ridge map from the model explains on held-out bins.",
              "- Controls: circular shift of the model's bins (>= 1 s), block permutation (blocks of "
              f"{res['meta']['analysis']['block_s']:g} s), model session A vs teacher session B (truncated to equal length); "
              f"{res['meta']['analysis']['n_shuffles']} shuffles each.", ""]  # fmt: skip
    return "\n".join(lines)


def write_report(res: dict, traces: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "analysis.json", "markdown": out / "report.md", "scales": out / "cka_scales.png",
             "sessions": out / "per_session.png", "patches": out / "patches.png", "trace": out / "cosine_trace.png"}  # fmt: skip
    paths["json"].write_text(json.dumps(_plain(res), indent=1))
    paths["markdown"].write_text(to_markdown(res))
    _figures(res, traces, paths)
    return paths


def _figures(res: dict, traces: dict, paths: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in res["teacher"] if res["teacher"][m]]
    color = {m: f"C{i}" for i, m in enumerate(models)}
    bin_ms = res["meta"]["bin_s"] * 1000
    # 1. CKA and mapped cosine vs temporal scale, control bands
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("cka_debiased", "cos_mapped")):
        for m in models:
            per = list(res["teacher"][m].values())
            ks = per[0]["scales"]["k"]
            v = np.mean([p["scales"][key] for p in per], 0)
            lo = np.mean([[c["lo"] for c in p["scales"][f"control_{key}"]] for p in per], 0)
            hi = np.mean([[c["hi"] for c in p["scales"][f"control_{key}"]] for p in per], 0)
            x = np.asarray(ks) * bin_ms
            ax.plot(x, v, "o-", color=color[m], label=LABELS.get(m, m), ms=3)
            ax.fill_between(x, lo, hi, color=color[m], alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("pooling window (ms)")
        ax.set_ylabel({"cka_debiased": "debiased CKA to teacher", "cos_mapped": "mapped cosine to teacher"}[key])
        ax.axhline(0, color="grey", lw=0.5)
    axes[0].legend(fontsize=7)
    fig.suptitle("alignment vs temporal scale (bands: circular-shift control, 95%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths["scales"], dpi=110)
    plt.close(fig)
    # 2. per-session bars
    sess = res["meta"]["train_sessions"]
    all_sess = res["meta"]["sessions"]
    panels = [("debiased CKA to teacher", sess, lambda m, s: res["teacher"][m].get(s, {}).get("cka_debiased")),
              ("teacher decoder subspace captured", sess, lambda m, s: res["teacher"][m].get(s, {}).get("subspace", {}).get("fraction")),
              ("true-latent ridge R²", all_sess, lambda m, s: res["truth"].get(m, {}).get(s, {}).get("r2"))]  # fmt: skip
    if not res["meta"]["has_true_latents"]:
        panels = panels[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, ss, get) in zip(axes[0], panels):
        ms = [m for m in ["teacher", *models] if any(get(m, s) is not None for s in ss)] if "true" in title else models
        wd = 0.8 / max(1, len(ms))
        for j, m in enumerate(ms):
            v = [get(m, s) for s in ss]
            ax.bar(np.arange(len(ss)) + j * wd, [np.nan if x is None else x for x in v], wd,
                   color=color.get(m, "k"), label=LABELS.get(m, m))  # fmt: skip
        ax.set_xticks(np.arange(len(ss)) + 0.4 - wd / 2, ss, fontsize=7, rotation=20)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(paths["sessions"], dpi=110)
    plt.close(fig)
    # 3. per patch
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for m in models:
        pp = [p["patches"]["cka_debiased"] for p in res["teacher"][m].values() if "patches" in p]
        if pp:
            ax.plot(np.mean(pp, 0), "o-", color=color[m], ms=3, label=LABELS.get(m, m))
    ax.set_xlabel("channel patch")
    ax.set_ylabel("debiased CKA to teacher")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["patches"], dpi=110)
    plt.close(fig)
    # 4. per-bin mapped cosine, first held-out bins of session 0
    fig, ax = plt.subplots(figsize=(9, 3))
    for m, v in traces.items():
        ax.plot(np.arange(len(v)) * bin_ms / 1000, v, color=color.get(m, "k"), lw=0.6, label=LABELS.get(m, m))
    ax.set_xlabel(f"held-out time of {sess[0]} (s)")
    ax.set_ylabel("per-bin mapped cosine")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(paths["trace"], dpi=110)
    plt.close(fig)
