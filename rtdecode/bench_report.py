"""Write what `rtdecode.bench` measured: bench.json, bench.md and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _f(v, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _machine_line(m: dict) -> str:
    v = m.get("versions", {})
    load = m.get("loadavg_1_5_15", [None])[0]
    after = (m.get("loadavg_after") or [None])[0]
    return (f"{m.get('cpu', '?')}, {m.get('cpus')} CPUs, {m.get('mem_gb', '?')} GB; {m.get('platform')}; Python {m.get('python')}; "
            f"numpy {v.get('numpy')}, numba {v.get('numba')}, onnxruntime {v.get('onnxruntime')}, pylsl {v.get('pylsl')} "
            f"(liblsl {v.get('liblsl')}), pyzmq {v.get('zmq')} (libzmq {v.get('libzmq')}), torch {v.get('torch')}, "
            f"scipy {v.get('scipy')}, mne-lsl {v.get('mne_lsl')}; git {m.get('git', '?')}{' (dirty)' if m.get('git_dirty') else ''}; "
            f"load average (1 min) {_f(load)} before, {_f(after)} after")  # fmt: skip


def markdown(result: dict) -> str:
    cfg = result["config"]
    cons = result["consumers"]
    lines = [
        "# rtdecode latency benchmark",
        "",
        f"Command: `{result.get('command') or 'rtdecode bench (library call)'}`  ",
        f"Stream: {cfg['channels']} channels at {cfg['rate']:g} Hz, {cfg['chunk']}-sample chunks, {cfg['bin_ms']:g} ms bins, "
        f"{cfg['duration_s']:g} s per consumer (synthetic recording, looped), first {cfg['warmup_s']:g} s left out of the percentiles.  ",
        f"Stamping: {cfg.get('stamping', 'schedule')} "
        f"({'each chunk stamped with the clock at push time plus 0-3 ms jitter, as acquisition software does' if cfg.get('stamping') == 'arrival' else 'every sample stamped on its drift-free schedule'}).  ",
        f"Model: {result['bundle']['describe']}; backend `{cfg['backend']}`, {cfg['threads']} thread(s).  ",
        f"Machine: {_machine_line(result['machine'])}",
        "",
        "End to end = bin's last sample acquired (its time on the outlet's schedule, from the outlet's log; under schedule "
        "stamps this is the bin's LSL timestamp) -> message received by a subscriber on the same host. "
        "Consumers ran one after another on the same replayed recording"
        + (f", over ZeroMQ {cfg.get('transport', 'tcp')}" + (f"; rtdecode run options: `{'; '.join(cfg['run_options'])}`" if cfg.get("run_options") else "")) + ".",
        "",
        "| consumer | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | misses (proc > deadline) | e2e > deadline | bins recv / expected | dup | missing | CPU % of a core | RTF (CPU/data) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in cons.items():
        if "skipped" in r:
            lines.append(f"| {name} | not run: {r['skipped']} |" + " |" * 12)
            continue
        if "latency_ms" not in r:
            lines.append(f"| {name} | no bins received (exit code {r.get('returncode')}) |" + " |" * 12)
            continue
        e, b, m = r["latency_ms"]["e2e"], r["bins"], r["misses"]
        lines.append(
            f"| {name} | {_f(e['p50'])} | {_f(e['p90'])} | {_f(e['p99'])} | {_f(e['p99.9'])} | {_f(e['max'])} | "
            f"{m['processing_over_deadline_steady']} | {m['e2e_over_deadline_steady']} | {b['received']} / {_f(b['expected_from_replay'])} | "
            f"{b['duplicated']} | {b['missing_seq']} | {_f(r['cpu_percent_of_one_core'], 1)} | {_f(r['rtf_cpu'], 3)} | {_f(r['peak_rss_mb'], 0)} |"
        )  # fmt: skip
    lines += ["", "Latency split (p50 / p99, ms; transport in = outlet late (push after the sample was due) + LSL (push -> "
              "the consumer holds the chunk); stamp error = published t_lsl - acquisition):", "",
              "| consumer | transport in | outlet late | LSL | signal chain | inference | other | publish | end to end | stamp error | load after |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in cons.items():
        if "latency_ms" not in r:
            continue
        L = r["latency_ms"]
        cell = lambda k: f"{_f(L[k].get('p50'), 3)} / {_f(L[k].get('p99'), 3)}" if L.get(k, {}).get("n") else "-"  # noqa: E731
        keys = ("transport_in", "outlet_late", "lsl", "chain", "infer", "other", "publish", "e2e", "stamp_error")
        lines.append(f"| {name} | " + " | ".join(cell(k) for k in keys) + f" | {_f((r.get('loadavg_after') or [None])[0])} |")
    lines += ["", "Timestamps (what the consumer reported; flagged = bins with any flag but WARMUP, after warm-up):", "",
              "| consumer | gaps | filled samples | clock resets | flagged bins | t_lsl step min / max ms |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in cons.items():
        if "bins" not in r:
            continue
        b = r["bins"]
        st = b.get("t_lsl_step_ms") or {}
        lines.append(f"| {name} | {_f(b.get('consumer_gaps'))} | {_f(b.get('consumer_filled_samples'))} | "
                     f"{_f(b.get('consumer_clock_resets'))} | {_f(b.get('flagged_after_warmup'))} | "
                     f"{_f(st.get('min'), 4)} / {_f(st.get('max'), 4)} |")  # fmt: skip
    for name, r in cons.items():
        cr = r.get("consumer_runtime") or {}
        if cr.get("gc"):  # rtdecode's loop reports these; the peers do not
            g = cr.get("gc") or {}
            per = f"{cr['pulls'] / cr['bins']:.2f}" if cr.get("pulls") and cr.get("bins") else "-"
            lines += ["", f"{name} loop: garbage collector `{g.get('mode')}` ({g.get('collections')} collections in the loop, "
                      f"longest {_f(g.get('max_ms'), 3)} ms); real-time priority: {cr.get('rt_priority')}; "
                      f"{per} pulls per bin."]  # fmt: skip
    rat = result.get("ratios_to_rtdecode") or {}
    if rat:
        lines += ["", "Peers as a ratio to rtdecode (latency: > 1 means the peer is slower; throughput = bins per CPU second: < 1 means the peer needs more CPU per bin):", "",
                  "| peer | p50 | p99 | throughput |", "|---|---|---|---|"]  # fmt: skip
        for name, q in rat.items():
            lines.append(f"| {name} | {q['p50']:.2f}x | {q['p99']:.2f}x | {q['throughput']:.2f}x |")
    lines += ["", "Notes: `misses` counts bins whose processing (chunk in hand -> published) exceeded the deadline "
              "(the bin width), after warm-up; RTF is the consumer process's CPU time over the duration of the data "
              "it decoded (FALCON's real-time factor: compute time / data time). `transport in` for mne-lsl includes its "
              "acquisition thread and its online filter (which runs there); its `signal chain` is only CAR and binning.", ""]  # fmt: skip
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_plots(result: dict, out: Path) -> list[str]:
    plt = _plt()
    cons = {k: v for k, v in result["consumers"].items() if "series" in v}
    files = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    warm = result["config"].get("warmup_s", 0.0)
    for name, r in cons.items():  # the same bins as the table: after warm-up
        t = np.asarray(r["series"]["t_s"])
        x = np.sort(np.asarray(r["series"]["e2e_ms"])[t >= warm])
        y = np.arange(1, x.size + 1) / x.size
        ax.plot(x, 1 - y + 1 / x.size, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("end-to-end latency (ms): last sample acquired -> message received")
    ax.set_ylabel("fraction of bins above (1 - CDF)")
    ax.axvline(result["config"]["bin_ms"], color="k", ls=":", lw=1, label="deadline (bin width)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{result['config']['channels']} ch, {result['config']['rate']:g} Hz: latency tail (after {warm:g} s warm-up)")
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    files.append("latency_cdf.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, r in cons.items():
        ax.plot(r["series"]["t_s"], r["series"]["e2e_ms"], lw=0.6, label=name, alpha=0.9 if name == "rtdecode" else 0.6)
    ax.axvline(warm, color="k", ls=":", lw=1, label="end of warm-up")
    ax.set_yscale("log")
    ax.set_xlabel("stream time since the consumer's first bin (s)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_time.png", dpi=110)
    files.append("latency_time.png")
    plt.close(fig)
    return files


def write_report(result: dict, out: Path, plots: bool = True) -> None:
    """bench.json (everything, including per-bin series), bench.md, latency_cdf.png, latency_time.png."""
    out = Path(out)
    result["files"] = ["bench.json", "bench.md"] + (make_plots(result, out) if plots else [])
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "bench.md").write_text(markdown(result))


def scaling_markdown(result: dict) -> str:
    cfg = result["config"]
    lines = ["# rtdecode scaling: channels and window", "",
             f"Command: `{result.get('command') or 'rtdecode bench --scaling'}`  ",
             f"{cfg['rate']:g} Hz, {cfg['chunk']}-sample chunks, {cfg['bin_ms']:g} ms bins, {cfg['duration_s']:g} s per point, model `{cfg['model']}`.  ",
             f"Machine: {_machine_line(result['machine'])}", "",
             "| axis | channels | window (bins) | e2e p50 ms | e2e p99 ms | e2e max ms | chain p50 ms | infer p50 ms | infer p99 ms | misses | CPU % of a core | RTF | peak RSS MB | bins | dropped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(f"| {r['axis']} | {r['channels']} | {r['window']} | {_f(r['e2e_p50'])} | {_f(r['e2e_p99'])} | {_f(r['e2e_max'])} | "
                     f"{_f(r['chain_p50'], 3)} | {_f(r['infer_p50'], 3)} | {_f(r['infer_p99'], 3)} | {_f(r['misses'])} | "
                     f"{_f(r['cpu_percent'], 1)} | {_f(r['rtf_cpu'], 3)} | {_f(r['peak_rss_mb'], 0)} | {_f(r['bins'])} | {_f(r['dropped'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_scaling_report(result: dict, out: Path, plots: bool = True) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "scaling.md").write_text(scaling_markdown(result))
    if not plots:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, key in ((axes[0], "channels", "channels"), (axes[1], "window", "window")):
        rows = [r for r in result["rows"] if r["axis"] == axis]
        if not rows:
            continue
        x = [r[key] for r in rows]
        for k, lab in (("e2e_p50", "e2e p50"), ("e2e_p99", "e2e p99"), ("infer_p50", "inference p50")):
            ax.plot(x, [r[k] if r[k] is not None else np.nan for r in rows], "o-", label=lab)
        ax.set_xlabel("channels" if axis == "channels" else "window (bins)")
        ax.set_ylabel("ms")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(x, [r["cpu_percent"] for r in result["rows"] if r["axis"] == axis], "s--", color="gray", label="CPU %")
        ax2.set_ylabel("CPU % of one core")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)
