"""Evaluation report: R² per output and session for every model and split, paired
Wilcoxon signed-rank tests across sessions, a markdown/JSON table and a PNG figure.

`results` rows are plain dicts:
    {"model": "distilled", "split": "held_out_time", "session": "s0", "r2": [..per output..]}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLITS = ("held_out_time", "held_out_sessions_zero_shot", "held_out_sessions_new_embedding")


def mean_r2(rows: list[dict], model: str, split: str, outputs: list[int] | None = None) -> dict[str, float]:
    """Per-session mean R² (over all outputs, or over the `outputs` indices) of one model on one split."""
    sel = (lambda v: v) if outputs is None else (lambda v: [v[k] for k in outputs])
    return {r["session"]: float(np.mean(sel(r["r2"]))) for r in rows if r["model"] == model and r["split"] == split}


def wilcoxon(rows: list[dict], a: str, b: str, split: str, outputs: list[int] | None = None) -> dict | None:
    """Paired two-sided Wilcoxon signed-rank of model a vs b across sessions (mean R² per session)."""
    from scipy.stats import wilcoxon as _w

    ra, rb = mean_r2(rows, a, split, outputs), mean_r2(rows, b, split, outputs)
    common = sorted(set(ra) & set(rb))
    if len(common) < 2:
        return None
    x, y = np.array([ra[s] for s in common]), np.array([rb[s] for s in common])
    d = x - y
    p = 1.0 if np.all(d == 0) else float(_w(x, y, alternative="two-sided").pvalue)
    return {"a": a, "b": b, "split": split, "n_sessions": len(common), "mean_diff": float(d.mean()),
            "a_wins": int((d > 0).sum()), "p": p}  # fmt: skip


def summarize(rows: list[dict], comparisons: list[tuple[str, str]], outputs: list[int] | None = None,
              subsets: dict[str, list[int]] | None = None, output_names: list[str] | None = None) -> dict:  # fmt: skip
    """Table (mean ± SEM over sessions of the per-session mean R² over `outputs`, default all) and
    paired tests; `subsets` ({title: output indices}) adds the same for output subsets (e.g.
    velocity and grip, which causal decoders of velocity-tuned activity get; position is an
    integral and much harder), and `output_names` a per-output mean table."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = {}
    for m in models:
        for s in SPLITS:
            per = mean_r2(rows, m, s, outputs)
            if per:
                v = np.array(list(per.values()))
                table.setdefault(m, {})[s] = {"mean": float(v.mean()), "sem": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0, "n": len(v)}
    tests = [t for a, b in comparisons for s in SPLITS if (t := wilcoxon(rows, a, b, s, outputs))]
    out = {"table": table, "tests": tests, "rows": rows}
    if subsets:
        out["subsets"] = {k: {kk: vv for kk, vv in summarize(rows, comparisons, v).items() if kk != "rows"} for k, v in subsets.items()}
    if output_names:
        out["per_output"] = {"outputs": list(output_names), "mean": {
            m: {s: np.mean([r["r2"] for r in rows if r["model"] == m and r["split"] == s], axis=0).round(4).tolist()
                for s in SPLITS if any(r["model"] == m and r["split"] == s for r in rows)} for m in models}}  # fmt: skip
    return out


# The export choice averages each output's validation R² floored here: an output that a
# candidate does not decode (R² <= 0, no better than the output's mean; typically an absolute
# position that drifts between days) scores 0 for it, so that how far below 0 the candidates
# fall there, by -1 or by -1000, does not outweigh the outputs they do decode (found on `hga`
# and by a new-user probe with camera positions in session 22: one output at R² -12307 decided
# the choice). The report gives the floored figures it chose by.
CHOICE_FLOOR = 0.0


def choice_mean(r2, outputs: list[int] | None = None) -> float:
    """The export choice's figure for one session: the mean over `outputs` (default all) of
    each output's R² floored at CHOICE_FLOOR."""
    r2 = np.asarray(r2, np.float64)
    return float(np.mean(np.maximum(r2 if outputs is None else r2[list(outputs)], CHOICE_FLOOR)))


def val_score(rows: list[dict], model: str, outputs: list[int] | None = None, floor: bool = False) -> float | None:
    """Validation R² of a model: mean over the training sessions' held-out-time rows of the
    mean "val_r2" over outputs (`outputs`: those columns only; default every output) (the
    validation block: never the test block); `floor`: each output's R² floored at
    CHOICE_FLOOR first (`choice_mean`), as the export choice scores it."""
    v = [choice_mean(r["val_r2"], outputs) if floor else float(np.mean(r["val_r2"] if not outputs else [r["val_r2"][k] for k in outputs]))
         for r in rows if r["model"] == model and r["split"] == "held_out_time" and "val_r2" in r]  # fmt: skip
    return float(np.mean(v)) if v else None


def choose_decoder(rows: list[dict], choose: str, candidates: dict[str, str], n_sessions: int | None = None,
                   outputs: list[str] | None = None, names: list[str] | None = None, transfer: dict | None = None,
                   by: str = "own", unseen: dict | None = None) -> dict:  # fmt: skip
    """The decoder for the bundle: `choose` "best" takes the candidate ({name: evaluation row
    model}) with the highest validation R² (on the outputs named in `outputs`, of `names`;
    default every output); a candidate name forces it. `by` "own" scores the evaluation rows
    (each session's readout fit on its own fit block), "transfer" the `transfer` figures ({name:
    validation R² as shipped on the other training sessions}, `shipped_scores`), "unseen" the
    `unseen` figures (as shipped on the unseen sessions' validation blocks). Returns the
    choice, every candidate's validation R² (both kinds), the margin of the chosen one over the
    best other (negative when a forced choice is not the best), and a warning when it is below
    the lagged ridge."""
    idx = [list(names).index(o) for o in outputs] if outputs else None
    own = {k: val_score(rows, m, idx, floor=True) for k, m in candidates.items()}
    own = {k: v for k, v in own.items() if v is not None}
    transfer = {k: float(v) for k, v in (transfer or {}).items() if v is not None and k in candidates}
    if by == "transfer" and not transfer:
        raise ValueError("export.choose_by = \"transfer\" needs at least 2 training sessions (the candidates are scored "
                         "as shipped on the training sessions other than export.session); use choose_by = \"own\"")  # fmt: skip
    unseen = {k: float(v) for k, v in (unseen or {}).items() if v is not None and k in candidates}
    if by == "unseen" and not unseen:
        raise ValueError("export.choose_by = \"unseen\" needs at least 1 unseen session (the candidates are scored "
                         "as shipped on the unseen sessions' validation blocks); use choose_by = \"own\"")  # fmt: skip
    val = {"transfer": transfer, "unseen": unseen}.get(by, own)
    if not val:
        raise ValueError("no validation R² for any exported-decoder candidate: the evaluation rows have no val_r2")
    if choose == "best":
        chosen = max(val, key=lambda k: val[k])
    elif choose in val:
        chosen = choose
    else:
        raise ValueError(f"export.choose = {choose!r} has no validation figure; candidates: {sorted(val)}")
    others = {k: v for k, v in val.items() if k != chosen}
    runner = max(others, key=lambda k: others[k]) if others else None
    out = {"choose": choose, "by": by, "chosen": chosen, "row": candidates[chosen], "val_r2": val, "runner_up": runner,
           "margin": None if runner is None else val[chosen] - val[runner], "n_sessions": n_sessions,
           "outputs": list(outputs) if outputs else "all", "val_r2_own": own, "val_r2_transfer": transfer or None,
           "val_r2_unseen": unseen or None, "floor": CHOICE_FLOOR}  # fmt: skip
    ridges = {k: val[k] for k in ("ridge", "ridge_pooled") if k in val}  # the lagged ridges on LFP features
    top = max(ridges, key=lambda k: ridges[k]) if ridges else None
    ridge = ridges.get(top)
    out["below_ridge"] = bool(top is not None and chosen != top and val[chosen] < ridge)  # a forced ridge below the other too
    out["warning"] = (f"the exported decoder ({chosen}, validation R² {val[chosen]:.3f}) is below the lagged ridge on LFP "
                      f"features ({top}, {ridge:.3f}) on validation: export.choose = {choose!r} forced it; set export.choose = "
                      f"\"best\" (or \"{top}\") to ship the better decoder") if out["below_ridge"] else None  # fmt: skip
    return out


def choice_markdown(c: dict) -> str:
    by = c.get("by", "own")
    kinds = {"own": ("val_r2_own", "With each session's own readout",
                     "mean over the training sessions' validation blocks, each with its own readout"),
             "transfer": ("val_r2_transfer", "As shipped on the other training sessions (choose_by = \"transfer\")",
                          "as shipped (the export session's readout, no refit) on the other training sessions' "
                          "validation blocks"),
             "unseen": ("val_r2_unseen", "As shipped on the unseen sessions (choose_by = \"unseen\")",
                        "as shipped (no refit) on the unseen sessions' validation blocks, which no candidate trained "
                        "on")}  # fmt: skip
    what = kinds[by][2]
    lines = ["", "### Exported decoder", "",
             f"**{c['chosen']}** (export.choose = \"{c['choose']}\", choose_by = \"{by}\"; row {c['row']}). Validation R² ({what}, "
             + ("all outputs" if c.get("outputs", "all") == "all" else "outputs " + ", ".join(c["outputs"]))
             + (f", each output's R² floored at {CHOICE_FLOOR:g}" if c.get("floor") is not None else "") + "): "
             + ", ".join(f"{k} {v:.3f}" for k, v in sorted(c["val_r2"].items(), key=lambda kv: -kv[1])) + "."]  # fmt: skip
    for kind, (key, label, _) in kinds.items():
        other = c.get(key)
        if kind != by and other:
            lines.append(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(other.items(), key=lambda kv: -kv[1])) + ".")
    if c["runner_up"] is not None:
        lines.append(f"Margin over the runner-up ({c['runner_up']}): {c['margin']:+.3f}.")
    if c.get("warning"):
        lines.append(f"WARNING: {c['warning']}.")
    return "\n".join(lines) + "\n"


def to_markdown(summary: dict, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    text = _tables(summary, labels)
    if summary.get("export_choice"):
        text += choice_markdown(summary["export_choice"])
    for title, sub in summary.get("subsets", {}).items():
        text += f"\n### {title}\n\n" + _tables(sub, labels)
    if "per_output" in summary:
        po = summary["per_output"]
        text += "\n### R² per output (mean over sessions)\n\n| model | split | " + " | ".join(po["outputs"]) + " |\n"
        text += "|---|---|" + "---|" * len(po["outputs"]) + "\n"
        for m, per in po["mean"].items():
            for s, v in per.items():
                text += f"| {labels.get(m, m)} | {s.replace('_', ' ')} | " + " | ".join(f"{x:.3f}" for x in v) + " |\n"
    return text


def _tables(summary: dict, labels: dict[str, str]) -> str:
    heads = {"held_out_time": "held-out time", "held_out_sessions_zero_shot": "held-out sessions, zero-shot",
             "held_out_sessions_new_embedding": "held-out sessions, new embedding"}  # fmt: skip
    lines = ["| model | " + " | ".join(heads[s] for s in SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
    for m, t in summary["table"].items():
        cells = [f"{t[s]['mean']:.3f} ± {t[s]['sem']:.3f} (n={t[s]['n']})" if s in t else "–" for s in SPLITS]
        lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    if summary["tests"]:
        lines += ["", "| comparison | split | n sessions | mean ΔR² | wins | Wilcoxon p |", "|---|---|---|---|---|---|"]
        for t in summary["tests"]:
            lines.append(f"| {t['a']} vs {t['b']} | {heads[t['split']]} | {t['n_sessions']} | {t['mean_diff']:+.3f} | "
                         f"{t['a_wins']}/{t['n_sessions']} | {t['p']:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(summary: dict, out_dir: str | Path, labels: dict[str, str] | None = None) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "metrics.json", "markdown": out_dir / "metrics.md", "figure": out_dir / "r2.png"}
    paths["json"].write_text(json.dumps(summary, indent=1))
    paths["markdown"].write_text(to_markdown(summary, labels))
    plot(summary, paths["figure"], labels)
    return paths


def plot(summary: dict, path: Path, labels: dict[str, str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    rows = summary["rows"]
    splits = [s for s in SPLITS if any(r["split"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.6), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], splits):
        models = [m for m in summary["table"] if s in summary["table"][m]]
        for i, m in enumerate(models):
            per = mean_r2(rows, m, s)
            v = np.array(list(per.values()))
            ax.bar(i, v.mean(), color=f"C{i}", alpha=0.6)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, s=10, color="k", zorder=3)
        ax.set_xticks(range(len(models)), [labels.get(m, m) for m in models], rotation=35, ha="right", fontsize=8)
        ax.set_title(s.replace("_", " "), fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("R² (mean over outputs, per session)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
