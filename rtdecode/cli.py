"""`rtdecode` command line: argument parsing and one library call per command.

The online commands (`run`, `streams`, `replay`, `info`) import neither torch nor scipy;
the offline ones (`distill`, `simulate`, `demo`) import `offline` lazily.

Exit codes (kept stable, also in README.md "Command line"): 0 done; 1 failed while
running (an unexpected error: its traceback is printed); 2 bad usage or bad input (a flag,
file, bundle, config or stream that does not fit: one line `rtdecode <command>: error:
<message>`, no traceback; -v adds the traceback); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from .checks import int_list, nonneg_float, nonneg_int, positive_float, positive_int, rt_priority, stream_name, zmq_address
from .config import ConfigError
from .lsl_config import quiet_liblsl

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = (
    "exit codes: 0 done; 1 failed while running (unexpected error, with its traceback); "
    "2 bad usage or bad input (one line 'rtdecode <command>: error: ...'); 130 interrupted"
)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rtdecode")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


# -- help formatting --------------------------------------------------------------------------
class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one (not for None, switches or hand-written defaults)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "(default" in h or "%(default)" in h or any(action.default is x for x in (None, False, argparse.SUPPRESS)):
            return h
        if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
            return h
        return super()._get_help_string(action)


class _SubParser(argparse.ArgumentParser):
    """Every subcommand: the help formatter, the exit codes and `-v` after the subcommand."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        kw.setdefault("epilog", EXIT_CODES)
        super().__init__(*a, **kw)
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="debug logging, and tracebacks for errors")  # fmt: skip


# -- run ------------------------------------------------------------------------------------
# RunConfig's defaults, shown in --help without importing the runtime (tests/cli check they agree)
RUN_DEFAULTS = {
    "stream": "LFP", "address": "tcp://127.0.0.1:5556", "backend": "auto", "threads": 1, "stall_policy": "all",
    "status_interval_s": 1.0, "max_chunk": 1024, "pull_timeout_s": 0.05, "stall_timeout_s": 0.5,
    "resolve_timeout_s": 10.0, "max_fill_s": 0.5,
}  # fmt: skip
# the numeric flags' checks, applied to a --config file's values as well: RUN_CHECKS in rtdecode/run_config.py


def cmd_run(args) -> int:
    from .run_config import load_run_config
    from .runtime import run

    cfg = load_run_config(args.config, vars(args), args._flags)
    summary = run(cfg)
    print(json.dumps(summary, indent=1))  # the final summary, also with --quiet (which hides the status line)
    return 0


def cmd_streams(args) -> int:
    from .sources.discover import list_streams, summary_line, table, to_json, wants_labels

    bundle = None
    if args.bundle:
        from .bundle import load_bundle

        bundle = load_bundle(args.bundle)
    entries = list_streams(timeout=args.timeout, labels_for=wants_labels(bundle))
    if args.json:
        print(to_json(entries, bundle))
        return 0
    if entries:
        print(table(entries, bundle))
    print(summary_line(entries, bundle, timeout=args.timeout), file=sys.stderr if not entries else sys.stdout)
    return 0


def cmd_replay(args) -> int:
    from .recording import load_for_replay
    from .replay import replay

    max_s = None if args.loop or args.duration is None else args.duration * args.speed  # recording time played
    rec = load_for_replay(args.recording, mapping=args.mapping, nwb_lfp=args.nwb_lfp, xdf_stream=args.xdf_stream,
                          max_seconds=max_s)  # fmt: skip

    def ready(info: dict) -> None:  # one machine-readable line: scripts and tests wait for it
        print(f"READY {info['t0']:.6f} {info['source_id']}", flush=True)

    def hold(n: int) -> None:  # --hold: say so, keep the outlet until stdin closes
        print(f"END {n}", flush=True)
        try:
            while sys.stdin.readline():
                pass
        except KeyboardInterrupt:
            pass

    n = replay(rec, name=args.name, type=args.type, source_id=args.source_id, chunk_size=args.chunk,
               loop=args.loop, speed=args.speed, duration=args.duration, on_start=ready,
               on_end=hold if args.hold else None)  # fmt: skip
    print(f"replayed {n} samples", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from .bundle import load_bundle

    if Path(args.bundle).suffix.lower() == ".nwb":  # an NWB file: what is in it, and what a distill run reads
        return _info_nwb(args)
    if args.config:
        raise ConfigError("--config goes with an NWB file (rtdecode info FILE.nwb --config DISTILL.toml), not a bundle")
    b = load_bundle(args.bundle)
    if args.json:  # JSON only: scripts parse stdout
        print(json.dumps({k: v for k, v in b.manifest.items() if k != "chain"}, indent=1))
        return 0
    print(b.describe())
    print(repr(b.chain))
    names = b.channel_names
    print(f"channels ({b.n_channels}), the order it decodes: " + (", ".join(names) if names else
          "not named (manifest input.channel_names is null): the stream's order must be the training order"))  # fmt: skip
    cal = b.provenance.get("calibration") if isinstance(b.provenance, dict) else None
    if isinstance(cal, dict) and cal.get("label_free"):  # `rtdecode calibrate --label-free`
        rec = cal.get("recording", {})
        print(f"calibrated: the chain's z-scoring refit, label-free, on {cal.get('minutes')} min of {rec.get('file')} "
              f"(from {cal.get('from_bundle')}); the readout as trained")  # fmt: skip
    elif isinstance(cal, dict):  # a bundle from `rtdecode calibrate`
        rec = cal.get("recording", {})
        vr = cal.get("cv_r2", {})
        print(f"calibrated: readout refit on {cal.get('minutes')} min of {rec.get('file')} (from {cal.get('from_bundle')}); "
              f"cross-validated R² shipped {vr.get('shipped')}, refit {vr.get('recalibrated')}; per output: {cal.get('choice')}")  # fmt: skip
    for e in b.engines:
        print(f"engine {e.file}: {e.gpu_name} sm{e.compute_capability} TensorRT {e.tensorrt_version} {e.precision}")
    return 0


def _info_nwb(args) -> int:
    from offline.data.nwb import describe_file

    mapping, where = None, "the default mapping"
    if args.config:
        from offline.train.config import load_config

        mapping, where = load_config(args.config).data.mapping_for(args.bundle), f"{args.config} [data.nwb]"
    if args.json:
        raise ConfigError("--json describes a bundle; for an NWB file drop --json")
    try:
        text, ok = describe_file(args.bundle, mapping, where)
    except OSError as e:
        raise ConfigError(f"{args.bundle} is not a readable NWB (HDF5) file ({e})") from None
    print(text)
    if not ok:  # the report stays on stdout; what is wrong goes to stderr as well, as every refusal does
        why = next((ln for ln in text.splitlines() if ln.startswith(f"{where} cannot read it:")), "")
        print(f"rtdecode info: error: {args.bundle}: {why}" if why else "rtdecode info: error: see above", file=sys.stderr)
    return EXIT_OK if ok else EXIT_USAGE


def cmd_compile(args) -> int:
    from .compile import compile_bundle

    eng = compile_bundle(args.bundle, fp16=args.fp16, int8=args.int8, calib=args.calib,
                         workspace_mb=args.workspace_mb, timing_cache=args.timing_cache, check=not args.no_check)  # fmt: skip
    print(json.dumps(eng.to_dict(), indent=1))
    return 0


def cmd_distill(args) -> int:
    from offline.train.pipeline import init_distributed, load_config, run_distill

    cfg = load_config(args.config)  # ConfigError: exit 2 in main()
    out_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    path = run_distill(cfg, out_dir, resume=args.resume)
    if init_distributed().main:
        print((out_dir / "report" / "metrics.md").read_text())
        print(f"bundle: {path}")
    return 0


def cmd_simulate(args) -> int:
    from offline.data.cli import main_simulate

    return main_simulate(args)


def cmd_demo(args) -> int:
    from .demo import main_demo

    return main_demo(args)


def cmd_bench(args) -> int:
    import importlib.util

    from .bench import PEERS, main_bench

    missing = [m for m in ("psutil", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"rtdecode bench needs {' and '.join(missing)} (its CPU and memory figures, its plots), which "
                          "come with the bench extra: python -m pip install -e '.[bench]'")  # fmt: skip
    bad = [p for p in (args.peers or "").split(",") if p and p != "none" and p not in PEERS]
    if bad:
        raise ConfigError(f"--peers: unknown peer(s) {', '.join(bad)}; choose from {', '.join(PEERS)} or none")
    if args.channels > 4096:
        raise ConfigError(f"--channels must be at most 4096, got {args.channels}")
    spb = args.rate * args.bin_ms / 1e3
    if abs(spb - round(spb)) > 1e-6 or round(spb) < 1:
        raise ConfigError(f"--bin-ms {args.bin_ms:g} is not a whole number of samples at --rate {args.rate:g} Hz "
                          f"({spb:g} samples): choose a bin of k / rate seconds, e.g. --bin-ms {1e3 * max(1, round(spb)) / args.rate:g}")  # fmt: skip
    return main_bench(args)


def cmd_calibrate(args) -> int:
    from offline.calibrate import main_calibrate

    return main_calibrate(args)


def cmd_analyze(args) -> int:
    from offline.analysis.run import main_analyze

    return main_analyze(args.run, args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtdecode", description="Real-time BCI decoding: distil a spike-informed LFP decoder "
                                "into a bundle offline, decode a live LSL stream with it and publish over ZeroMQ.", epilog=EXIT_CODES,
                                formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--version", action="version", version=f"rtdecode {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubParser)

    D = RUN_DEFAULTS
    r = sub.add_parser("run", help="decode a live LSL stream and publish over ZeroMQ",
                       description="Decode a live LSL stream with a bundle and publish the decoded values over ZeroMQ. "
                                   "Every flag can also be set in a TOML file (--config, a [run] table; "
                                   "configs/run.toml lists them all); flags win over the file.")  # fmt: skip
    r.add_argument("--config", metavar="FILE", help="TOML file with a [run] table (flags override it)")
    r.add_argument("--stream", metavar="NAME_OR_TYPE", help=f"LSL stream name or type (default: {D['stream']})")
    r.add_argument("--bundle", metavar="DIR", help="decoder bundle folder (required, here or in --config)")
    r.add_argument("--address", type=zmq_address, metavar="ADDRESS", help=f"ZeroMQ PUB address (default: {D['address']})")
    r.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], help=f"inference backend (default: {D['backend']})")
    r.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="with --backend tensorrt: fall back to ONNX Runtime if the engine cannot run (default: no)")  # fmt: skip
    r.add_argument("--threads", type=positive_int, metavar="N", help=f"inference threads (default: {D['threads']})")
    r.add_argument("--deadline-ms", dest="deadline_ms", type=positive_float, metavar="MS",
                   help="per-bin deadline in milliseconds (default: the bundle's bin width)")  # fmt: skip
    r.add_argument("--stall-policy", dest="stall_policy", choices=["all", "newest"],
                   help=f"after a stall: decode every bin, or only the newest (default: {D['stall_policy']})")  # fmt: skip
    r.add_argument("--source-id", dest="source_id", metavar="ID",
                   help="also require this LSL source_id (`rtdecode streams` lists them) (default: any)")  # fmt: skip
    r.add_argument("--resolve-timeout", dest="resolve_timeout_s", type=positive_float, metavar="SECONDS",
                   help=f"how long to look for the stream at start (default: {D['resolve_timeout_s']:g})")  # fmt: skip
    r.add_argument("--duration", dest="duration_s", type=positive_float, metavar="SECONDS",
                   help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)")  # fmt: skip
    r.add_argument("--summary", dest="summary_path", metavar="FILE", help="also write the shutdown summary (JSON) here")
    r.add_argument("--quiet", action=argparse.BooleanOptionalAction, default=None,
                   help="no status line (the final summary is still printed) (default: no)")  # fmt: skip
    r.add_argument("--status-interval", dest="status_interval_s", type=positive_float, metavar="SECONDS",
                   help=f"status line and `status` message period (default: {D['status_interval_s']:g})")  # fmt: skip
    r.add_argument("--max-chunk", dest="max_chunk", type=positive_int, metavar="SAMPLES",
                   help=f"most samples taken per pull (default: {D['max_chunk']})")  # fmt: skip
    r.add_argument("--pull-timeout", dest="pull_timeout_s", type=positive_float, metavar="SECONDS",
                   help=f"longest wait for the first sample of a pull (default: {D['pull_timeout_s']:g})")  # fmt: skip
    r.add_argument("--stall-timeout", dest="stall_timeout_s", type=positive_float, metavar="SECONDS",
                   help=f"no sample for this long: the stream is stalled, look for it again (default: {D['stall_timeout_s']:g})")  # fmt: skip
    r.add_argument("--max-fill", dest="max_fill_s", type=nonneg_float, metavar="SECONDS",
                   help=f"gaps up to this long are filled (bin cadence kept); longer ones reset the chain (default: {D['max_fill_s']:g})")  # fmt: skip
    r.add_argument("--lsl-out", dest="lsl_out", type=stream_name, metavar="NAME",
                   help="also publish the decoded values on an LSL outlet of this name (default: none)")  # fmt: skip
    r.add_argument("--gc", dest="gc_mode", choices=["tick", "python"],
                   help="garbage collection: once per status tick between bins, start-up objects frozen (tick), "
                        "or Python's automatic collector (default: tick)")  # fmt: skip
    r.add_argument("--spin", dest="spin_s", type=nonneg_float, metavar="SECONDS",
                   help="poll for the next chunk this long either side of when it is due, instead of sleeping "
                        "(at most 5 %% of a chunk's span; costs up to twice that of CPU per chunk; 0: off; "
                        "default: 0.0005)")  # fmt: skip
    r.add_argument("--input-scale", dest="input_scale", type=positive_float, metavar="FACTOR",
                   help="multiply every sample by this before the chain: the bundle expects microvolts (manifest "
                        "input.unit), so a stream in volts needs 1e6, in millivolts 1e3 (default: 1). Bins carry "
                        "INPUT_SCALE when the amplitude looks wrong")  # fmt: skip
    r.add_argument("--renormalize", dest="renormalize_s", type=positive_float, metavar="SECONDS",
                   help="once the filters settle, refit the chain's z-scoring on SECONDS of the stream, label-free, "
                        "and decode on it from then on (a new day for a bundle trained with [chain] normalize = "
                        "\"session\"; 60-180 s is typical); bins carry WARMUP until then")  # fmt: skip
    r.add_argument("--rt-priority", dest="rt_priority", type=rt_priority, metavar="N",
                   help="run the loop and its liblsl and ZeroMQ threads SCHED_FIFO at priority N (needs root, "
                        "CAP_SYS_NICE or an rtprio limit; without, a warning and normal priority; default: 0, off)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    st = sub.add_parser("streams", help="list the visible LSL streams; with --bundle, which of them fit",
                        description="List the LSL streams visible from this machine (name, type, channels, rate, "
                                    "format, source_id, host). With --bundle, mark which fit its input "
                                    "(channel count, rate, sample format) and why the others do not; for a bundle that names its "
                                    "channels, also whether the labels of each stream that fits are its names, in "
                                    "its order or another (which `run` reorders), or other names (decoded by "
                                    "position, with a warning).")  # fmt: skip
    st.add_argument("--timeout", type=positive_float, default=2.0, metavar="SECONDS", help="how long to listen for streams")
    st.add_argument("--bundle", metavar="DIR", help="decoder bundle: mark the streams that fit it")
    st.add_argument("--json", action="store_true", help="print JSON only (a list of streams)")
    st.set_defaults(func=cmd_streams)

    rp = sub.add_parser("replay", help="play a recording (.npz), an NWB or an XDF file as an LSL outlet at its real rate",
                        description="Play a file as an LSL outlet at its sampling rate: an rtdecode recording (.npz), "
                                    "the LFP ElectricalSeries of an NWB file (.nwb; chosen as `rtdecode distill` does, "
                                    "or by --nwb-lfp / --mapping; microvolts, channels labelled by electrode id) or one "
                                    "numeric stream of an XDF file (.xdf, .xdfz; needs pyxdf: pip install "
                                    "'rtdecode[replay]'). Prints `READY <t0> <source_id>` once the outlet exists.")  # fmt: skip
    rp.add_argument("recording", metavar="FILE", help="the file to play: .npz, .nwb, .xdf or .xdfz")
    rp.add_argument("--name", default="LFP", help="LSL stream name")
    rp.add_argument("--type", default="LFP", help="LSL stream type")
    rp.add_argument("--source-id", dest="source_id", metavar="ID", help="LSL source_id (default: a new random one)")
    rp.add_argument("--chunk", type=positive_int, default=10, metavar="SAMPLES", help="samples per push")
    rp.add_argument("--loop", action="store_true", help="start again at the end (default: stop at the end)")
    rp.add_argument("--speed", type=positive_float, default=1.0, metavar="FACTOR", help="playback rate relative to real time")
    rp.add_argument("--duration", type=positive_float, metavar="SECONDS", help="stop after this many seconds of wall time (default: the whole file)")
    rp.add_argument("--hold", action="store_true",
                    help="at the end, print `END <samples>` and keep the stream open until stdin closes (or Ctrl-C), "
                         "so that a script can stop its consumer before the stream goes (default: close at the end)")  # fmt: skip
    rp.add_argument("--nwb-lfp", dest="nwb_lfp", metavar="SERIES",
                    help="NWB: the ElectricalSeries to play, a path in the file or its name (default: as `rtdecode distill` finds the LFP)")  # fmt: skip
    rp.add_argument("--mapping", metavar="TOML",
                    help="NWB: a distill config (its [data.nwb] table, per-file overrides applied) or a TOML with an [nwb] "
                         "table: the same mapping as training; --nwb-lfp wins (default: none)")  # fmt: skip
    rp.add_argument("--xdf-stream", dest="xdf_stream", metavar="NAME_OR_TYPE",
                    help="XDF: the stream to play, by name or type (default: the only numeric stream with a sampling rate)")  # fmt: skip
    rp.set_defaults(func=cmd_replay)

    i = sub.add_parser("info", help="validate a bundle and describe it; or list an NWB file and what a distill run reads from it")
    i.add_argument("bundle", metavar="DIR|FILE.nwb", help="decoder bundle folder, or an NWB file")
    i.add_argument("--json", action="store_true", help="print the manifest (without the chain coefficients) as JSON only")
    i.add_argument("--config", metavar="DISTILL.toml",
                   help="with an NWB file: read it with this distill config's [data.nwb] mapping (default: the default mapping)")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("compile", help="build a TensorRT engine into a bundle (needs a GPU and the gpu extra)")
    c.add_argument("bundle", metavar="DIR", help="decoder bundle folder")
    c.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    c.add_argument("--int8", action="store_true", help="INT8 with calibration (needs --calib)")
    c.add_argument("--calib", metavar="FILE", help=".npz of feature windows for INT8 calibration")
    c.add_argument("--workspace-mb", dest="workspace_mb", type=positive_int, default=1024, metavar="MB",
                   help="TensorRT builder workspace, MiB")  # fmt: skip
    c.add_argument("--timing-cache", dest="timing_cache", metavar="FILE", help="TensorRT timing cache to read and update")
    c.add_argument("--no-check", dest="no_check", action="store_true", help="skip the parity check against ONNX Runtime")
    c.set_defaults(func=cmd_compile)

    d = sub.add_parser("distill", help="teacher -> distilled LFP student -> bundle (needs the train extra)")
    d.add_argument("--config", required=True, metavar="FILE", help="distill config (e.g. configs/distill_tiny.toml)")
    d.add_argument("--out", metavar="DIR", help="run folder (default: runs/<config name>)")
    d.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    d.set_defaults(func=cmd_distill)

    s = sub.add_parser("simulate", help="simulate multi-session recordings (NWB) with the built-in simulator")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty, or see --overwrite)")
    s.add_argument("--overwrite", action="store_true", help="write into a non-empty --out, replacing an earlier simulation's files")
    s.add_argument("--sessions", type=positive_int, default=4, metavar="N", help="number of sessions")
    s.add_argument("--minutes", type=positive_float, default=2.0, metavar="MINUTES", help="length of each session")
    s.add_argument("--channels", type=positive_int, default=96, metavar="N", help="LFP channels")
    s.add_argument("--seed", type=nonneg_int, default=0, metavar="N", help="random seed")
    s.add_argument("--config", metavar="FILE", help="TOML with a [simulate] table of SimConfig knobs")
    s.add_argument("--family", default="linear", choices=("linear", "dynamics", "hga"),
                   help="generative family (offline.data.families, docs/families.md); linear: the simulator above")  # fmt: skip
    s.set_defaults(func=cmd_simulate)

    dm = sub.add_parser("demo", help="the whole loop on simulated data: distill, replay over LSL, decode live, score")
    dm.add_argument("--out", default="runs/demo", metavar="DIR", help="work folder")
    dm.add_argument("--config", default=None, metavar="FILE", help="distill config (default: configs/demo.toml)")
    dm.add_argument("--duration", "--seconds", dest="seconds", type=positive_float, default=45.0, metavar="SECONDS",
                    help="seconds of the held-out session to replay (the first ~15 s are WARMUP, not scored)")  # fmt: skip
    dm.add_argument("--address", type=zmq_address, default=RUN_DEFAULTS["address"], metavar="ADDRESS",
                    help="ZeroMQ PUB address (run's default, so the README's subscriber sees the demo too)")  # fmt: skip
    dm.add_argument("--quick", action="store_true", help="skip distillation: a lagged ridge LFP decoder")
    dm.set_defaults(func=cmd_demo)

    bn = sub.add_parser("bench", help="latency benchmark: replay over LSL -> rtdecode run -> ZeroMQ, against peers (bench extra)")
    bn.add_argument("--out", default="runs/bench", metavar="DIR", help="report folder")
    bn.add_argument("--channels", type=positive_int, default=96, metavar="N", help="stream channels")
    bn.add_argument("--rate", type=positive_float, default=1000.0, metavar="HZ", help="sampling rate")
    bn.add_argument("--chunk", type=positive_int, default=10, metavar="SAMPLES", help="samples per LSL push")
    bn.add_argument("--bin-ms", dest="bin_ms", type=positive_float, default=10.0, metavar="MS", help="bin width")
    bn.add_argument("--window", type=positive_int, default=32, metavar="BINS", help="model window")
    bn.add_argument("--model", choices=["auto", "student", "linear"], default="auto", help="decoder to time")
    bn.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto", help="inference backend")
    bn.add_argument("--threads", type=positive_int, default=1, metavar="N", help="inference threads")
    bn.add_argument("--duration", type=positive_float, default=60.0, metavar="SECONDS", help="stream per consumer")
    bn.add_argument("--warmup", type=nonneg_float, default=1.0, metavar="SECONDS", help="left out of the percentiles")
    bn.add_argument("--lead", type=nonneg_float, default=3.0, metavar="SECONDS", help="extra stream for a consumer to start")
    bn.add_argument("--peers", default="baseline,mne-lsl,timeflux", metavar="LIST", help="comma list of peers, or none")
    bn.add_argument("--seed", type=nonneg_int, default=0, metavar="N", help="random seed of the model weights")
    bn.add_argument("--stamping", choices=["schedule", "arrival"], default="schedule",
                    help="replay stamps: by the sample schedule, or at push time with 0-3 ms jitter as acquisition "
                         "software does")  # fmt: skip
    bn.add_argument("--transport", choices=["tcp", "ipc"], default="tcp",
                    help="ZeroMQ transport between each consumer and this subscriber")  # fmt: skip
    bn.add_argument("--run-option", dest="run_option", action="append", metavar="KEY=VALUE",
                    help="a TOML line added to rtdecode run's [run] table, e.g. 'spin_s = 0.0005' (repeatable)")  # fmt: skip
    bn.add_argument("--scaling", action="store_true", help="rtdecode alone over channel counts and windows")
    bn.add_argument("--scaling-channels", dest="scaling_channels", type=int_list, default="96,256,512,1024",
                    metavar="LIST", help="channel counts for --scaling")  # fmt: skip
    bn.add_argument("--scaling-windows", dest="scaling_windows", type=int_list, default="8,16,32,64",
                    metavar="LIST", help="model windows (bins) for --scaling")  # fmt: skip
    bn.set_defaults(func=cmd_bench)

    ca = sub.add_parser("calibrate", help="refit a bundle's readout on a new session's calibration block (train extra)",
                        description="Refit the bundle's linear readout on a recording of a new session with behaviour "
                                    "(the encoder and the chain stay as trained; the paper's transfer to new sessions), "
                                    "and write a new bundle. The LFP goes through the bundle's own chain and graph, as "
                                    "`rtdecode run` computes them; per output, blocked cross-validation over the block "
                                    "chooses the shipped readout, its intercept refit, a ridge shrunk toward it or a plain "
                                    "ridge. Prints cross-validated R² as shipped and refit, and R² on the rest of the "
                                    "recording when --minutes leaves some.")  # fmt: skip
    ca.add_argument("bundle", metavar="BUNDLE", help="the decoder bundle to calibrate")
    ca.add_argument("recording", metavar="FILE", help="the new session: an NWB file (.nwb), an XDF file from LabRecorder (.xdf: "
                    "the LFP stream and the task's behaviour stream) or an rtdecode recording (.npz) with behaviour")  # fmt: skip
    ca.add_argument("--out", required=True, metavar="DIR", help="the calibrated bundle (a new folder)")
    ca.add_argument("--minutes", type=positive_float, metavar="MINUTES", help="calibrate on the first MINUTES of the file (default: all of it)")
    ca.add_argument("--folds", type=positive_int, default=5, metavar="N",
                    help="blocked cross-validation folds over the calibration block, to choose the readout")  # fmt: skip
    ca.add_argument("--renormalize", action="store_true",
                    help="also refit the chain's z-scoring on the calibration block (a new gain or impedance)")  # fmt: skip
    ca.add_argument("--label-free", dest="label_free", action="store_true",
                    help="refit only the chain's z-scoring on the block's LFP and keep the readout: no behaviour needed "
                         "(a new day for a bundle trained with [chain] normalize = \"session\"; behaviour in the file, "
                         "if any, only scores the rest)")  # fmt: skip
    ca.add_argument("--mapping", metavar="TOML",
                    help="NWB: a distill config (its [data.nwb] table) or a TOML with an [nwb] table, as for training")  # fmt: skip
    ca.add_argument("--xdf-stream", dest="xdf_stream", metavar="NAME",
                    help="XDF: the LFP stream's name or type (default: the one of the bundle's channel count and rate)")  # fmt: skip
    ca.add_argument("--behavior-stream", dest="behavior_stream", metavar="NAME",
                    help="XDF: the behaviour stream's name or type (default: the one whose channel labels name the bundle's outputs)")  # fmt: skip
    ca.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ca.set_defaults(func=cmd_calibrate)

    an = sub.add_parser("analyze", help="alignment analysis of a finished distill run: teacher vs student latents (train extra)")
    an.add_argument("run", metavar="RUN", help="run folder of `rtdecode distill --out` (or its bundle folder)")
    an.add_argument("--out", default=None, metavar="DIR", help="report folder (default: RUN/analysis)")
    an.set_defaults(func=cmd_analyze)
    r.set_defaults(_flags={a.dest: max(a.option_strings, key=len) for a in r._actions if a.option_strings})
    return p


# -- errors -----------------------------------------------------------------------------------
# user errors (exit 2, one line): (module, class); looked up only in modules already imported,
# so that catching them imports nothing (a class whose module was never imported cannot be raised)
USER_ERRORS = (
    ("rtdecode.config", "ConfigError"),  # also offline's config errors (AnalysisError, ...) by subclassing
    ("rtdecode.bundle", "BundleError"),
    ("rtdecode.backends.base", "BackendError"),  # CompileError too
    ("rtdecode.dsp.spec", "ChainSpecError"),
    ("rtdecode.recording", "RecordingError"),
    ("rtdecode.sources.lsl", "StreamNotFoundError"),
    ("rtdecode.sources.lsl", "StreamMismatchError"),
    ("rtdecode.sources.lsl", "AmbiguousStreamError"),
    ("rtdecode.sinks.zmq", "PublishAddressError"),
    ("offline.data.nwb", "NWBMappingError"),
    ("offline.data.nwb", "NWBReadError"),
    ("offline.data.session", "SessionError"),
)
# known failures while running (exit 1, one line): the message says what failed and where its log is
RUN_ERRORS = (("rtdecode.bench", "BenchError"), ("offline.export", "ExportError"))
_OS_USER_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
_PREFIX = re.compile(r"^(?:rtdecode(?: [\w-]+)?: (?:error: )?)+")


def _classes(table, base: tuple[type, ...] = ()) -> tuple[type, ...]:
    out: list[type] = list(base)
    for mod, name in table:
        m = sys.modules.get(mod)
        cls = getattr(m, name, None) if m is not None else None
        if isinstance(cls, type):
            out.append(cls)
    return tuple(out)


def error_message(e: BaseException) -> str:
    """The exception's text without any `rtdecode <command>: ` prefix it already carries."""
    if isinstance(e, OSError) and e.filename is not None and type(e) in _OS_USER_ERRORS:
        return f"{e.strerror or type(e).__name__}: {e.filename}"
    return _PREFIX.sub("", str(e)).strip() or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # bad usage: argparse prints `rtdecode <command>: error: ...`, exits 2
    if extra:  # said by the command's parser, with its usage (not the top-level one's)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    quiet_liblsl(link_only=args.command in ("demo", "bench"), verbose=bool(args.verbose))  # before anything imports pylsl
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        user = isinstance(e, _classes(USER_ERRORS, _OS_USER_ERRORS))
        if not user and not isinstance(e, _classes(RUN_ERRORS)):
            raise  # unexpected: the traceback, exit 1
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"rtdecode {args.command}: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USAGE if user else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
