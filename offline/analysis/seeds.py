"""One distill config under several seeds: per-seed and across-seed R² with bootstrap CIs, and
the paired tests across sessions x seeds.

    python -m offline.analysis.seeds --config configs/distill_default.toml --seeds 0 1 2 --out runs/seeds
    python -m offline.analysis.seeds --config configs/distill_tiny.toml --seeds 0 1 --family hga --out runs/s_hga
    python -m offline.analysis.seeds --runs runs/seeds/seed0 runs/seeds/seed1 --out runs/seeds   # tables only

Each seed is a whole `rtdecode distill` run (offline.train.pipeline.run_distill: the seed draws
the simulated sessions and every initialisation and batch), one after the other, into
<out>/seed<k>; a seed whose run finished before (its report exists, with that seed) is reused
and an interrupted one resumes from its checkpoints. `--family` sets [data.sim] family.
Writes <out>/seeds.md and <out>/seeds.json (offline.analysis.stats for the numbers):
  - per split, every model's mean R² over sessions per seed [its CI] and across seeds: the mean
    over all seed x session units with a two-level bootstrap CI (seeds, then sessions);
  - the paired tests of the pipeline's comparisons over the seed x session units.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .stats import (
    DEFAULT,
    SPLIT_TITLES,
    SPLITS,
    StatsConfig,
    _f,
    mean_ci,
    paired_summary,
    stats_markdown,
)

KIN = ("vx", "vy", "grip")


def git_state(root: str | Path = ".") -> dict:
    """HEAD and a one-line summary of uncommitted changes: what the figures were made with."""

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    stat = git("diff", "--stat").splitlines()
    return {"head": git("rev-parse", "--short", "HEAD") or None, "diff": stat[-1].strip() if stat else "clean"}


def _set(d: dict, item: str) -> None:
    """--set TABLE.KEY=VALUE: VALUE read as TOML (a bare word as a string)."""
    import tomllib

    from rtdecode.config import ConfigError

    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {item}: expected TABLE.KEY=VALUE, e.g. --set chain.kind=lmp_bands")
    try:
        v = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        v = value
    *tables, last = key.strip().split(".")
    for t in tables:
        d = d.setdefault(t, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {item}: {t} is a value, not a table")
    d[last] = v


def seed_config(config: str | Path, seed: int, family: str | None = None, sets: list[str] = ()) -> dict:
    """The config file's tables with `seed` (and [data.sim] family, and every --set
    TABLE.KEY=VALUE) replaced, checked."""
    from offline.train.config import load_config
    from rtdecode.config import ConfigError, load_toml

    d = load_toml(config)
    d["seed"] = int(seed)
    for item in sets:
        _set(d, item)
    if family is not None:
        data = d.setdefault("data", {})
        if data.get("source", "simulate") != "simulate":
            raise ConfigError(f"--family {family}: {config} reads NWB files ([data] source = {data.get('source')!r}); "
                              "--family only applies to simulated data: drop --family")  # fmt: skip
        from offline.data.families import FAMILIES

        if family not in FAMILIES:
            raise ConfigError(f"--family {family}: not a simulator family; one of {', '.join(FAMILIES)}")
        data.setdefault("sim", {})["family"] = family
    load_config(d)  # refuse a bad config before any run starts
    return d


def _finished(run_dir: Path, seed: int) -> bool:
    info = run_dir / "seed.json"
    return (run_dir / "report" / "metrics.json").is_file() and info.is_file() and json.loads(info.read_text()).get("seed") == seed


def run_seeds(config: str | Path, seeds: list[int], out: str | Path, family: str | None = None, log=print,
              sets: list[str] = ()) -> list[Path]:  # fmt: skip
    """run_distill for every seed in turn (finished ones reused); returns the run folders."""
    from offline.train.pipeline import run_distill

    cfgs = {s: seed_config(config, s, family, sets) for s in seeds}  # every seed's config checked first
    out = Path(out)
    dirs = []
    for s in seeds:
        run_dir = out / f"seed{s}"
        dirs.append(run_dir)
        if _finished(run_dir, s):
            log(f"seed {s}: reusing the finished run in {run_dir}")
            continue
        log(f"seed {s}: running {config} into {run_dir}")
        t0 = time.perf_counter()
        run_distill(cfgs[s], run_dir, resume=(run_dir / "checkpoints").is_dir())
        wall = round(time.perf_counter() - t0, 1)
        fam = family or cfgs[s].get("data", {}).get("sim", {}).get("family", "linear")
        (run_dir / "seed.json").write_text(json.dumps({"seed": s, "config": str(config), "family": fam, "wall_s": wall, "set": list(sets),
                                                       "git": git_state(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))  # fmt: skip
        log(f"seed {s}: {wall:.0f} s")
    return dirs


def load_runs(dirs: list[str | Path]) -> tuple[list[dict], dict, list[str]]:
    """Rows of every run's report/metrics.json tagged with its seed (seed.json, else the
    bundle's provenance), the runs' info by seed, and the output names."""
    from rtdecode.config import ConfigError

    rows, info, names = [], {}, None
    for d in map(Path, dirs):
        m = d / "report" / "metrics.json"
        if not m.is_file():
            raise ConfigError(f"{d} holds no finished distill run ({m} is missing): run it first, or drop it from --runs")
        summ = json.loads(m.read_text())
        meta = json.loads((d / "seed.json").read_text()) if (d / "seed.json").is_file() else {}
        if "seed" not in meta:
            man = d / "bundle" / "manifest.json"
            prov = json.loads(man.read_text()).get("provenance", {}) if man.is_file() else {}
            if "seed" not in prov.get("config", {}):
                raise ConfigError(f"{d}: no seed.json and no bundle provenance to tell its seed")
            tim = d / "timings.json"
            meta = {"seed": prov["config"]["seed"], "git": {"head": (prov.get("git_revision") or "")[:7] or None,
                                                             "diff": "not recorded (the bundle has HEAD only)"},
                    "finished": prov.get("date"), "wall_src": "the run's own timer (timings.json)",
                    "wall_s": json.loads(tim.read_text()).get("total") if tim.is_file() else None,
                    "family": prov["config"].get("data", {}).get("sim", {}).get("family", "linear")}  # fmt: skip
        s = int(meta["seed"])
        if s in info:
            raise ConfigError(f"{d} and {info[s]['dir']} are both seed {s}: pass each seed's run once")
        info[s] = {**meta, "dir": str(d), "objective_choice": summ.get("objective_choice"),
                   "shipped_row": (summ.get("export_choice") or {}).get("row")}  # fmt: skip
        names_d = summ.get("per_output", {}).get("outputs")
        if names is not None and names_d != names:
            raise ConfigError(f"{d} has outputs {names_d}, the other runs {names}: runs of one config are needed")
        names = names_d
        rows += [{**r, "seed": s} for r in summ["rows"]]
    return rows, info, names or []


def shipped_rows(info: dict) -> dict:
    """{seed: the row of the decoder its run's bundle ships} for the runs that recorded it."""
    return {s: i["shipped_row"] for s, i in info.items() if i.get("shipped_row")}


def aggregate(rows: list[dict], names: list[str], scfg: StatsConfig = DEFAULT, shipped: dict | None = None) -> dict:
    """Per-seed and across-seed mean R² with CIs per output group, split and model, and the
    paired tests over the seed x session units (best_lfp: `shipped`, {seed: the row of the
    decoder each run's bundle ships}, where known)."""
    from offline.train.pipeline import COMPARISONS

    kin = [k for k, nm in enumerate(names) if nm in KIN]
    groups = {"all outputs": None, **({f"velocity and grip ({', '.join(names[k] for k in kin)})": kin} if kin else {})}
    seeds = sorted({r["seed"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = {}
    for title, outs in groups.items():
        for split in SPLITS:
            for m in models:
                per = {}
                for s in seeds:
                    r = mean_ci([x for x in rows if x["seed"] == s], m, split, outs, scfg)
                    if r is not None:
                        per[str(s)] = r
                if per:
                    table.setdefault(title, {}).setdefault(split, {})[m] = {"per_seed": per, "across": mean_ci(rows, m, split, outs, scfg)}
    paired = paired_summary(rows, COMPARISONS + [("best_lfp", "ridge_lfp"), ("best_lfp", "ridge_pooled")],
                            {k: v for k, v in groups.items() if v is not None}, scfg, shipped=shipped)  # fmt: skip
    return {"seeds": seeds, "groups": groups, "table": table, "paired": paired}


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    ci = f" [{_f(r['ci'][0])}, {_f(r['ci'][1])}]" if "ci" in r else ""
    return f"{_f(r['mean'])}{ci}"


def to_markdown(agg: dict, info: dict, config: str | None, labels: dict | None = None) -> str:
    labels = labels or {}
    seeds = agg["seeds"]
    lines = ["# Seeds", "", f"Config `{config}`; seeds {', '.join(map(str, seeds))}." if config else f"Seeds {', '.join(map(str, seeds))}.", ""]
    for s in seeds:
        i = info.get(s, {})
        g = i.get("git") or {}
        wall = f"{i['wall_s']:.0f} s wall clock" if i.get("wall_s") else "wall clock not recorded"
        lines.append(f"- seed {s}: `{i.get('dir')}`, {wall}, git {g.get('head')} ({g.get('diff', '?')}), family {i.get('family', '?')}")
    lines += ["", ("Cells: mean over sessions of the per-session mean R² [95% bootstrap CI: over sessions with >= "
              f"{agg['paired']['config']['min_sessions']} sessions, else over time blocks within sessions]. Across seeds: the "
              "mean over every seed x session unit, CI by a two-level bootstrap (seeds, then sessions within them).")]  # fmt: skip
    for title, per_split in agg["table"].items():
        for split, per_model in per_split.items():
            lines += ["", f"## {title}: {SPLIT_TITLES[split]}", "",
                      "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds (n) |", "|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
            for m, r in per_model.items():
                a = r["across"]
                lines.append(f"| {labels.get(m, m)} | " + " | ".join(_cell(r["per_seed"].get(str(s))) for s in seeds)
                             + f" | {_cell(a)} (n={a['n']}) |")  # fmt: skip
    lines.append(stats_markdown(agg["paired"], labels))
    return "\n".join(lines) + "\n"


def write(agg: dict, info: dict, out: str | Path, config: str | None, labels: dict | None = None) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "seeds.json", "markdown": out / "seeds.md"}
    paths["json"].write_text(json.dumps({"config": config, "runs": {str(k): v for k, v in info.items()}, **agg}, indent=1))
    paths["markdown"].write_text(to_markdown(agg, info, config, labels))
    return paths


GOAL_RATIO, GOAL_MARGIN = 2.0, 0.1  # issue 13, item 5: distilled >= 2x LFP-only (frozen, lagged); best LFP >= ridge + 0.1
DOC_MODELS = ("ridge_spikes", "teacher", "teacher_1bin", "ridge_lfp", "ridge_pooled", "distilled", "distilled_1bin", "lfp_multi_unsup",
              "lfp_multi_unsup_1bin", "distilled_sup", "lfp_multi", "lfp_single", "best_lfp")  # fmt: skip


def family_doc(rows: list[dict], info: dict, names: list[str], family: str, command: str | None,
               scfg: StatsConfig = DEFAULT, labels: dict | None = None, note: str = "") -> str:  # fmt: skip
    """docs/distill/<family>.md: the command, its wall time and git state, the velocity-and-grip
    table (every model and split, mean [CI] (n)), and the two goals of issue 13 item 5 with the
    paired tests behind them. Only the runs' own numbers."""
    from .stats import tests_table, with_best_lfp

    labels = labels or {}
    shipped = shipped_rows(info)
    agg = aggregate(rows, names, scfg, shipped=shipped)
    group = next((g for g in agg["groups"] if g != "all outputs"), "all outputs")
    rows_b, _ = with_best_lfp(rows, shipped=shipped)
    lines = [f"# Family `{family}`: the distill comparisons", ""]
    if note:
        lines += [note, ""]
    lines += [f"Command: `{command}`" if command else "Command: not recorded", ""]
    for s_, i in sorted(info.items()):
        g = i.get("git") or {}
        wall = (f"{i['wall_s'] / 60:.1f} min ({i['wall_s']:.0f} s), {i.get('wall_src', 'wall clock of run_distill')}"
                if i.get("wall_s") else "wall clock not recorded")  # fmt: skip
        lines.append(f"- seed {s_}: {wall}; git {g.get('head')} + uncommitted: {g.get('diff', '?')}; finished {i.get('finished', '?')}")
    lines += ["", f"## R², {group}: mean over sessions [95% bootstrap CI] (n)", "",
              ("CI over sessions when n >= 6, else over 10 time blocks within each session's test block "
              "(offline.analysis.stats; docs/distill.md, Statistics)."), ""]  # fmt: skip
    splits = [sp for sp in SPLITS if any(r["split"] == sp for r in rows)]
    lines += ["| model | " + " | ".join(SPLIT_TITLES[sp] for sp in splits) + " |", "|---|" + "---|" * len(splits)]
    outs = agg["groups"][group]
    for m in DOC_MODELS:
        cells = []
        for sp in splits:
            r = mean_ci(rows_b, m, sp, outs, scfg)
            cells.append("–" if r is None else f"{_cell(r)} ({r['n']})")
        if any(c != "–" for c in cells):
            lines.append(f"| {labels.get(m, m)} | " + " | ".join(cells) + " |")
    tests = {(t["a"], t["b"], t["split"]): t for t in agg["paired"]["groups"][group]}
    lines += ["", "## Goals (issue 13, item 5)", "",
              (f"1. distilled, ridge on frozen latents, at least {GOAL_RATIO:g}x the multi-session LFP-only model read out the "
              "same way (met when distilled >= 2 x max(LFP-only, 0) and distilled > 0);"),
              (f"2. the best LFP decoder (chosen on validation) at least {GOAL_MARGIN} above the lagged ridge on LFP features "
              "(met when the mean difference is; 'CI' says whether the CI's lower end is too)."), "",
              "| goal | split | distilled | LFP-only | ratio | ΔR² [CI] (n) | met |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for sp in splits:
        d, l = mean_ci(rows_b, "distilled", sp, outs, scfg), mean_ci(rows_b, "lfp_multi_unsup", sp, outs, scfg)
        t = tests.get(("distilled", "lfp_multi_unsup", sp))
        if d and l and t:
            ratio = d["mean"] / l["mean"] if l["mean"] > 0 else float("nan")
            met = d["mean"] > 0 and d["mean"] >= GOAL_RATIO * max(l["mean"], 0.0)
            lines.append(f"| 1: distilled vs LFP-only, frozen, lagged | {SPLIT_TITLES[sp]} | {_f(d['mean'])} | {_f(l['mean'])} | "
                         f"{_f(ratio, 2)}{'' if l['mean'] > 0 else ' (LFP-only <= 0)'} | {_f(t['mean_diff'], sign=True)} "
                         f"[{_f(t['ci'][0], sign=True)}, {_f(t['ci'][1], sign=True)}] ({t['n']}) | {'yes' if met else 'NO'} |")  # fmt: skip
    for (b, what), sp in ((bw, sp) for bw in (("ridge_lfp", "lagged ridge on LFP"),
                                                   ("ridge_pooled", "pooled lagged ridge on LFP")) for sp in splits):  # fmt: skip
        t = tests.get(("best_lfp", b, sp))
        if t:
            met = t["mean_diff"] >= GOAL_MARGIN
            lines.append(f"| 2: best LFP vs {what} | {SPLIT_TITLES[sp]} | – | – | – | {_f(t['mean_diff'], sign=True)} "
                         f"[{_f(t['ci'][0], sign=True)}, {_f(t['ci'][1], sign=True)}] ({t['n']}) | "
                         f"{'yes' if met else 'NO'}{' (CI too)' if t['ci'][0] >= GOAL_MARGIN else ''} |")  # fmt: skip
    picks = agg["paired"]["best_lfp"]
    how = ("the decoder each bundle ships (its export choice on validation, export.choose_by)" if shipped
           else "the learned LFP decoder with the highest validation R²")  # fmt: skip
    lines += ["", f"best LFP decoder = {how}: {', '.join(f'seed {k}: {v}' for k, v in picks.items())}."]
    objs = [(s_, i["objective_choice"]) for s_, i in sorted(info.items()) if i.get("objective_choice")]
    if objs:  # loss.choose_masking: which pre-training each student kept, with both validation scores
        lines += ["", "pre-training objective chosen on validation (loss.choose_masking; validation R² of every output, plain / masked):"]
        for s_, oc in objs:
            parts = [f"{lab} **{c['chosen']}** ({c['val_r2']['plain']:.3f} / {c['val_r2']['masked']:.3f})"
                     for k, lab in (("distilled", "distilled"), ("lfp_only", "LFP-only")) if (c := oc.get(k))]  # fmt: skip
            lines.append(f"- seed {s_}: " + ", ".join(parts))
    lines += ["",
              f"## Paired tests, {group}", "", *tests_table(agg["paired"]["groups"][group], labels)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from rtdecode.cli import error_message
    from rtdecode.config import ConfigError

    ap = argparse.ArgumentParser(prog="python -m offline.analysis.seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="distill config (TOML) to run under every seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--family", default=None, help="[data.sim] family to simulate (default: the config's own)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override a config key for every seed (VALUE in TOML; repeatable), e.g. chain.kind=lmp_bands")
    ap.add_argument("--runs", nargs="+", default=None, help="finished run folders: tables only, nothing is trained")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-boot", type=int, default=10000)
    ap.add_argument("--doc", default=None, help="also write the per-family table (docs/distill/<family>.md) here")
    ap.add_argument("--command", default=None, help="--doc: the command that made the runs, quoted in the table")
    ap.add_argument("--note", default="", help="--doc: a line under the title (e.g. what config it is)")
    a = ap.parse_args(argv)
    try:
        if (a.config is None) == (a.runs is None):
            raise ConfigError("give either --config (run every seed) or --runs (finished runs), not both or neither")
        if len(set(a.seeds)) != len(a.seeds):
            raise ConfigError(f"--seeds {' '.join(map(str, a.seeds))} names a seed twice: list each seed once")
        dirs = a.runs if a.runs is not None else run_seeds(a.config, a.seeds, a.out, a.family, sets=a.sets)
        rows, info, names = load_runs(dirs)
        if len(info) < 2:
            print("warning: one seed only: the across-seed CI is the session CI of that seed", file=sys.stderr)
        from offline.train.pipeline import BEST_LFP_LABEL, LABELS as PIPELINE_LABELS

        labels = {**PIPELINE_LABELS, "best_lfp": BEST_LFP_LABEL}

        agg = aggregate(rows, names, StatsConfig(n_boot=a.n_boot), shipped=shipped_rows(info))
        paths = write(agg, info, a.out, a.config, labels)
        if a.doc:
            fams = {i.get("family") for i in info.values()} - {None}
            fam = a.family or (fams.pop() if len(fams) == 1 else "?")
            cmd = a.command or (f"python -m offline.analysis.seeds --config {a.config} --seeds {' '.join(map(str, a.seeds))}"
                                + (f" --family {a.family}" if a.family else "") + "".join(f" --set {x}" for x in a.sets)
                                + f" --out {a.out}" if a.config else None)  # fmt: skip
            Path(a.doc).parent.mkdir(parents=True, exist_ok=True)
            Path(a.doc).write_text(family_doc(rows, info, names, fam, cmd, StatsConfig(n_boot=a.n_boot), labels, a.note))
            print(f"doc: {a.doc}")
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        print(f"python -m offline.analysis.seeds: error: {error_message(e)}", file=sys.stderr)
        return 2
    print(paths["markdown"].read_text())
    print(f"seeds: {paths['markdown']}")
    return 0


if __name__ == "__main__":  # the runs spawn worker processes (jobs > 1) that import this module
    sys.exit(main())
