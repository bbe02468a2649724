"""`rtdecode` command line: argument parsing and one library call per command.

The online commands (`run`, `replay`, `info`) import neither torch nor scipy; the
offline ones (`distill`, `simulate`, `demo`) import `offline` lazily.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from .config import ConfigError, from_dict, load_toml


def _run_config(args: argparse.Namespace):
    from .runtime import RunConfig

    base: dict = {}
    if args.config:
        tables = load_toml(args.config)
        base = tables.get("run", tables)
    for f in dataclasses.fields(RunConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            base[f.name] = v
    cfg = from_dict(RunConfig, base, where=f"{args.config or 'rtdecode run'} [run]")
    if not cfg.bundle:
        raise ConfigError("rtdecode run: no bundle given: pass --bundle DIR (a folder written by `rtdecode distill`)")
    return cfg


def cmd_run(args) -> int:
    from .runtime import run

    cfg = _run_config(args)
    summary = run(cfg)
    if not cfg.quiet:
        print(json.dumps(summary, indent=1))
    return 0


def cmd_replay(args) -> int:
    from .recording import Recording
    from .replay import replay

    rec = Recording.load(args.recording)

    def ready(info: dict) -> None:  # one machine-readable line: scripts and tests wait for it
        print(f"READY {info['t0']:.6f} {info['source_id']}", flush=True)

    n = replay(rec, name=args.name, type=args.type, source_id=args.source_id, chunk_size=args.chunk,
               loop=args.loop, speed=args.speed, duration=args.duration, on_start=ready)  # fmt: skip
    print(f"replayed {n} samples", file=sys.stderr)
    return 0


def cmd_info(args) -> int:
    from .bundle import load_bundle

    b = load_bundle(args.bundle)
    print(b.describe())
    print(repr(b.chain))
    for e in b.engines:
        print(f"engine {e.file}: {e.gpu_name} sm{e.compute_capability} TensorRT {e.tensorrt_version} {e.precision}")
    if args.json:
        print(json.dumps({k: v for k, v in b.manifest.items() if k != "chain"}, indent=1))
    return 0


def cmd_compile(args) -> int:
    from .compile import compile_bundle

    eng = compile_bundle(args.bundle, fp16=args.fp16, int8=args.int8, calib=args.calib,
                         workspace_mb=args.workspace_mb, timing_cache=args.timing_cache, check=not args.no_check)  # fmt: skip
    print(json.dumps(eng.to_dict(), indent=1))
    return 0


def cmd_distill(args) -> int:
    from offline.train.pipeline import main_distill

    return main_distill(args.config, args.out, args.resume)


def cmd_simulate(args) -> int:
    from offline.data.cli import main_simulate

    return main_simulate(args)


def cmd_demo(args) -> int:
    from .demo import main_demo

    return main_demo(args)


def cmd_bench(args) -> int:
    from .bench import main_bench

    return main_bench(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtdecode", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="decode a live LSL stream and publish over ZeroMQ")
    r.add_argument("--config", help="TOML file with a [run] table (flags override it)")
    r.add_argument("--stream", help="LSL stream name or type (default LFP)")
    r.add_argument("--bundle", help="decoder bundle folder")
    r.add_argument("--address", help="ZeroMQ PUB address (default tcp://127.0.0.1:5556)")
    r.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"])
    r.add_argument("--fallback", action="store_true", default=None, help="with --backend tensorrt: fall back to ONNX Runtime if the engine cannot run")
    r.add_argument("--threads", type=int, help="inference threads (default 1)")
    r.add_argument("--deadline-ms", dest="deadline_ms", type=float, help="per-bin deadline (default: the bin width)")
    r.add_argument("--stall-policy", dest="stall_policy", choices=["all", "newest"], help="after a stall: decode every bin, or only the newest")
    r.add_argument("--source-id", dest="source_id", help="also require this LSL source_id")
    r.add_argument("--duration", dest="duration_s", type=float, help="stop after this many seconds")
    r.add_argument("--summary", dest="summary_path", help="write the shutdown summary (JSON) here")
    r.add_argument("--quiet", action="store_true", default=None, help="no status line")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="play a recording (.npz) as an LSL outlet at its real rate")
    rp.add_argument("recording")
    rp.add_argument("--name", default="LFP")
    rp.add_argument("--type", default="LFP")
    rp.add_argument("--source-id", dest="source_id")
    rp.add_argument("--chunk", type=int, default=10, help="samples per push (default 10)")
    rp.add_argument("--loop", action="store_true")
    rp.add_argument("--speed", type=float, default=1.0)
    rp.add_argument("--duration", type=float)
    rp.set_defaults(func=cmd_replay)

    i = sub.add_parser("info", help="validate a bundle and describe it")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser("compile", help="build a TensorRT engine into a bundle (needs a GPU and the gpu extra)")
    c.add_argument("bundle")
    c.add_argument("--fp16", action="store_true")
    c.add_argument("--int8", action="store_true")
    c.add_argument("--calib", help=".npz of feature windows for INT8 calibration")
    c.add_argument("--workspace-mb", dest="workspace_mb", type=int, default=1024)
    c.add_argument("--timing-cache", dest="timing_cache")
    c.add_argument("--no-check", dest="no_check", action="store_true", help="skip the parity check against ONNX Runtime")
    c.set_defaults(func=cmd_compile)

    d = sub.add_parser("distill", help="teacher -> distilled LFP student -> bundle (needs the train extra)")
    d.add_argument("--config", required=True)
    d.add_argument("--out", help="run folder (default from the config)")
    d.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    d.set_defaults(func=cmd_distill)

    s = sub.add_parser("simulate", help="simulate multi-session recordings (NWB) with the built-in simulator")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--sessions", type=int, default=4)
    s.add_argument("--minutes", type=float, default=2.0)
    s.add_argument("--channels", type=int, default=96)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--config", help="TOML with a [simulate] table of SimConfig knobs")
    s.set_defaults(func=cmd_simulate)

    dm = sub.add_parser("demo", help="the whole loop on simulated data: distill, replay over LSL, decode live, score")
    dm.add_argument("--out", default="runs/demo", help="work folder (default runs/demo)")
    dm.add_argument("--config", default=None, help="distill config (default: configs/distill_tiny.toml)")
    dm.add_argument("--seconds", type=float, default=20.0, help="seconds of held-out session to replay")
    dm.add_argument("--address", default="tcp://127.0.0.1:5599")
    dm.add_argument("--quick", action="store_true", help="skip distillation: a lagged ridge LFP decoder")
    dm.set_defaults(func=cmd_demo)

    bn = sub.add_parser("bench", help="latency benchmark: replay over LSL -> rtdecode run -> ZeroMQ, against peers (bench extra)")
    bn.add_argument("--out", default="runs/bench", help="report folder (default runs/bench)")
    bn.add_argument("--channels", type=int, default=96)
    bn.add_argument("--rate", type=float, default=1000.0, help="sampling rate, Hz")
    bn.add_argument("--chunk", type=int, default=10, help="samples per LSL push")
    bn.add_argument("--bin-ms", dest="bin_ms", type=float, default=10.0)
    bn.add_argument("--window", type=int, default=32, help="model window, bins")
    bn.add_argument("--model", choices=["auto", "student", "linear"], default="auto")
    bn.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto")
    bn.add_argument("--threads", type=int, default=1)
    bn.add_argument("--duration", type=float, default=60.0, help="seconds of stream per consumer")
    bn.add_argument("--warmup", type=float, default=1.0, help="seconds left out of the percentiles")
    bn.add_argument("--lead", type=float, default=3.0, help="extra seconds of stream for a consumer to start")
    bn.add_argument("--peers", default="baseline,mne-lsl,timeflux", help="comma list, or none")
    bn.add_argument("--seed", type=int, default=0)
    bn.add_argument("--scaling", action="store_true", help="rtdecode alone over channel counts and windows")
    bn.add_argument("--scaling-channels", dest="scaling_channels", default="96,256,512,1024")
    bn.add_argument("--scaling-windows", dest="scaling_windows", default="8,16,32,64")
    bn.set_defaults(func=cmd_bench)

    an = sub.add_parser("analyze", help="alignment analysis of a finished distill run: teacher vs student latents (train extra)")
    an.add_argument("run", help="run folder of `rtdecode distill --out` (or its bundle folder)")
    an.add_argument("--out", default=None, help="report folder (default RUN/analysis)")
    an.set_defaults(func=cmd_analyze)
    return p


def cmd_analyze(args) -> int:
    from offline.analysis.run import main_analyze

    return main_analyze(args.run, args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # known, user-facing errors: one clear line, no traceback
        from .backends.base import BackendError
        from .bundle import BundleError
        from .dsp.spec import ChainSpecError

        known = (ConfigError, BundleError, BackendError, ChainSpecError, FileNotFoundError)
        try:
            from .sources.lsl import StreamMismatchError, StreamNotFoundError

            known += (StreamMismatchError, StreamNotFoundError)
        except ImportError:
            pass
        if isinstance(e, known) and not args.verbose:
            print(f"rtdecode {args.command}: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
