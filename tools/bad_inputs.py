"""Run every bad input we know of through the real `rtdecode` CLI and write docs/errors.md.

    python tools/bad_inputs.py                 # all cases, writes docs/errors.md (about 2 minutes)
    python tools/bad_inputs.py --check         # also exit 1 if a case does not behave as documented
    python tools/bad_inputs.py --only run-     # the cases whose id starts with run-

Each case is one `python -m rtdecode.cli ...` subprocess against real inputs (a bundle, a
corrupt one, LSL streams from `rtdecode replay` processes, a busy ZeroMQ port). A case
passes when the exit code is the documented one, stderr holds no traceback, and the message
names what it is about (the flag, file or key). tests/cli/test_bad_inputs.py runs them too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    argv: tuple[str, ...]  # after `rtdecode`; {name} placeholders are filled from the fixtures
    code: int
    mentions: tuple[str, ...]  # stderr must contain each (the flag, file or key at fault)
    fast: bool = False  # refused by argument parsing or before any heavy import: in the default test run
    pending: str = ""  # not fixed yet: who is on it (the table says so; the test expects a failure)
    absent: str = ""  # a path that must not exist afterwards (no empty output folder left behind)


def _c(id, what, argv, code, *mentions, fast=False, pending="", absent=""):
    argv = tuple(argv.split()) if isinstance(argv, str) else tuple(argv)
    return Case(id, what, argv, code, tuple(mentions), fast, pending, absent)


CASES: list[Case] = [
    # usage
    _c("usage-no-command", "no command", "", 2, "COMMAND", fast=True),
    _c("usage-unknown-command", "unknown command", "runn", 2, "runn", fast=True),
    _c("usage-unknown-flag", "unknown flag", "run --bundel {bundle}", 2, "--bundel", fast=True),
    # run: numbers
    _c("run-renormalize-zero", "--renormalize 0", "run --bundle {bundle} --renormalize 0", 2, "--renormalize", fast=True),
    _c("run-duration-negative", "--duration -1", "run --bundle {bundle} --duration -1", 2, "--duration", fast=True),
    _c("run-duration-zero", "--duration 0", "run --bundle {bundle} --duration 0", 2, "--duration", fast=True),
    _c("run-duration-nan", "--duration nan", "run --bundle {bundle} --duration nan", 2, "--duration", fast=True),
    _c("run-deadline-negative", "--deadline-ms -5", "run --bundle {bundle} --deadline-ms -5", 2, "--deadline-ms", fast=True),
    _c("run-threads-negative", "--threads -1", "run --bundle {bundle} --threads -1", 2, "--threads", fast=True),
    _c("run-threads-zero", "--threads 0", "run --bundle {bundle} --threads 0", 2, "--threads", fast=True),
    _c("run-lsl-out-empty", "--lsl-out ''", ("run", "--bundle", "{bundle}", "--lsl-out", ""), 2, "--lsl-out", fast=True),
    _c("run-rt-priority-high", "--rt-priority 200", "run --bundle {bundle} --rt-priority 200", 2, "SCHED_FIFO priority 1..99", fast=True),
    _c("run-threads-text", "--threads two", "run --bundle {bundle} --threads two", 2, "--threads", fast=True),
    _c("run-resolve-timeout-zero", "--resolve-timeout 0", "run --bundle {bundle} --resolve-timeout 0", 2, "--resolve-timeout", fast=True),
    _c("run-status-interval-zero", "--status-interval 0", "run --bundle {bundle} --status-interval 0", 2, "--status-interval", fast=True),
    _c("run-max-chunk-zero", "--max-chunk 0", "run --bundle {bundle} --max-chunk 0", 2, "--max-chunk", fast=True),
    _c("run-pull-timeout-zero", "--pull-timeout 0", "run --bundle {bundle} --pull-timeout 0", 2, "--pull-timeout", fast=True),
    _c("run-stall-timeout-negative", "--stall-timeout -1", "run --bundle {bundle} --stall-timeout -1", 2, "--stall-timeout", fast=True),
    _c("run-max-fill-negative", "--max-fill -1", "run --bundle {bundle} --max-fill -1", 2, "--max-fill", fast=True),
    _c("run-backend-unknown", "--backend cuda", "run --bundle {bundle} --backend cuda", 2, "--backend", fast=True),
    # run: address and port
    _c("run-address-no-scheme", "address without tcp://", "run --bundle {bundle} --address 127.0.0.1:5556", 2, "--address", "tcp://", fast=True),
    _c("run-address-bad-port", "port out of range", "run --bundle {bundle} --address tcp://127.0.0.1:99999", 2, "--address", "port", fast=True),
    _c("run-address-not-here", "an address of another machine", "run --bundle {bundle} --address tcp://192.0.2.1:5556 --stream {missing}", 2, "--address", "192.0.2.1"),
    _c("run-address-busy", "a port already in use", "run --bundle {bundle} --address {busy} --stream {missing}", 2, "already in use", "--address"),
    # run: bundle
    _c("run-no-bundle", "no --bundle", "run --stream LFP", 2, "--bundle", fast=True),
    _c("run-stream-empty", "--stream ''", ["run", "--bundle", "{bundle}", "--stream", ""], 2, "--stream"),
    _c("run-summary-folder", "--summary in a folder that does not exist", "run --bundle {bundle} --summary {work}/no/s.json", 2, "--summary"),
    _c("run-bundle-missing", "bundle folder missing", "run --bundle {work}/nope", 2, "nope", "does not exist"),
    _c("run-bundle-corrupt", "manifest.json not JSON", "run --bundle {bundle_corrupt}", 2, "manifest.json", "not valid JSON"),
    _c("run-bundle-sha", "a file changed after writing (sha256)", "run --bundle {bundle_sha}", 2, "model.onnx", "sha256 mismatch"),
    _c("run-bundle-schema", "a bundle from a newer rtdecode", "run --bundle {bundle_newer}", 2, "schema_version", "upgrade"),
    # run: config
    _c("run-config-missing", "--config file missing", "run --config {work}/none.toml", 2, "none.toml", fast=True),
    _c("run-config-typo", "a misspelt key", "run --config {toml_typo}", 2, "treads", "threads"),
    _c("run-config-bad-value", "a negative number in the file", "run --config {toml_negative}", 2, "threads", "--threads"),
    _c("run-config-bad-address", "an address without tcp:// in the file", "run --config {toml_address}", 2, "address", "tcp://"),
    _c("run-config-not-toml", "not TOML", "run --config {toml_broken}", 2, "not valid TOML"),
    _c("run-config-key-above-run", "a key above the [run] table (it would be ignored)", "run --config {toml_above}", 2,
       "resolve_timeout_s", "move it into [run]"),
    _c("run-config-choice", "a choice outside its values", "run --config {toml_choice}", 2, "stall_policy", "'newest'"),
    _c("run-config-bundle-beside", "a bundle path written relative to the config file (paths are read from the working directory)",
       "run --config {toml_beside}", 2, "relative to the working directory", "beside the config file"),
    # run: streams
    _c("run-stream-missing", "no such stream (short resolve timeout)", "run --bundle {bundle} --stream {missing} --resolve-timeout 0.5", 2, "{missing}", "--stream"),
    _c("run-stream-wrong", "a stream that does not fit the bundle", "run --bundle {bundle} --stream {stream4} --resolve-timeout 5", 2, "4 channels", "bundle expects 8", "--stream"),
    _c("run-stream-ambiguous", "two streams that fit", "run --bundle {bundle} --stream {stream8x2} --resolve-timeout 5", 2, "--source-id", "rtdecode streams"),
    _c("run-source-id-wrong", "a wrong --source-id", "run --bundle {bundle} --stream {stream4} --source-id wrong-id --resolve-timeout 0.5", 2, "--source-id", "rtdecode streams"),
    # streams
    _c("streams-timeout-zero", "--timeout 0", "streams --timeout 0", 2, "--timeout", fast=True),
    _c("streams-bundle-missing", "bundle missing", "streams --bundle {work}/nope", 2, "nope"),
    # info
    _c("info-missing", "bundle missing", "info {work}/nope", 2, "nope", "does not exist"),
    _c("info-not-a-bundle", "a folder without manifest.json", "info {work}", 2, "manifest.json"),
    _c("info-sha", "sha256 mismatch: both full hashes", "info {bundle_sha}", 2, "sha256 mismatch", "{sha_manifest}", "{sha_file}"),
    _c("info-nwb-damaged", "an NWB file whose last third is zeroed (an interrupted copy)", "info {nwb_damaged}", 2,
       "damaged.nwb", "copy or export it again"),
    _c("info-nwb-behaviour-clock", "an NWB file whose behaviour starts 3 s after its 5-s LFP (another clock or epoch)",
       "info {nwb_shifted}", 2, "shifted.nwb", "different clocks or epochs"),
    # compile
    _c("compile-workspace-zero", "--workspace-mb 0", "compile {bundle} --workspace-mb 0", 2, "--workspace-mb", fast=True),
    _c("compile-missing", "bundle missing", "compile {work}/nope", 2, "nope"),
    # simulate
    _c("simulate-seed-negative", "--seed -3", "simulate --out {work}/sim1 --seed -3", 2, "--seed", fast=True),
    _c("simulate-minutes-zero", "--minutes 0", "simulate --out {work}/sim1 --minutes 0", 2, "--minutes", fast=True),
    _c("simulate-minutes-tiny", "--minutes below 10 bins", "simulate --out {work}/sim1 --minutes 0.001", 2, "--minutes", absent="{work}/sim1"),
    _c("simulate-sessions-zero", "--sessions 0", "simulate --out {work}/sim1 --sessions 0", 2, "--sessions", fast=True),
    _c("simulate-channels-zero", "--channels 0", "simulate --out {work}/sim1 --channels 0", 2, "--channels", fast=True),
    _c("simulate-out-not-empty", "--out not empty", "simulate --out {work} --minutes 0.01 --sessions 1", 2, "--out", "--overwrite"),
    _c("simulate-out-is-file", "--out is a file", "simulate --out {toml_typo} --minutes 0.01 --sessions 1", 2, "--out"),
    _c("simulate-config-typo", "a misspelt [simulate] key", "simulate --out {work}/sim2 --config {sim_typo}", 2, "n_chanels", "n_channels", absent="{work}/sim2"),
    _c("simulate-config-conflict", "--channels and the file disagree", "simulate --out {work}/sim2 --channels 8 --config {sim_conflict}", 2, "--channels", "n_channels"),
    # distill
    _c("distill-config-missing", "--config missing", "distill --config {work}/none.toml", 2, "none.toml"),
    _c("distill-config-typo", "a misspelt key", "distill --config {distill_typo}", 2, "threds", "threads"),
    _c("distill-normalize-typo", "a misspelt chain.normalize", "distill --config {distill_normalize}", 2, "chain.normalize",
       '"session"', "sesion"),
    # demo
    _c("demo-duration-zero", "--duration 0", "demo --duration 0", 2, "--duration", fast=True),
    _c("demo-address", "address without tcp://", "demo --address localhost:5599", 2, "--address", fast=True),
    # bench
    _c("bench-channels-zero", "--channels 0", "bench --channels 0", 2, "--channels", fast=True),
    _c("bench-channels-huge", "--channels 5000", "bench --channels 5000", 2, "--channels"),
    _c("bench-rate-zero", "--rate 0", "bench --rate 0", 2, "--rate", fast=True),
    _c("bench-chunk-zero", "--chunk 0", "bench --chunk 0", 2, "--chunk", fast=True),
    _c("bench-bin-zero", "--bin-ms 0", "bench --bin-ms 0", 2, "--bin-ms", fast=True),
    _c("bench-bin-fraction", "--bin-ms not whole samples", "bench --bin-ms 1.5", 2, "--bin-ms", "--rate"),
    _c("bench-window-zero", "--window 0", "bench --window 0", 2, "--window", fast=True),
    _c("bench-threads-zero", "--threads 0", "bench --threads 0", 2, "--threads", fast=True),
    _c("bench-duration-zero", "--duration 0", "bench --duration 0", 2, "--duration", fast=True),
    _c("bench-warmup-negative", "--warmup -1", "bench --warmup -1", 2, "--warmup", fast=True),
    _c("bench-lead-negative", "--lead -1", "bench --lead -1", 2, "--lead", fast=True),
    _c("bench-seed-negative", "--seed -1", "bench --seed -1", 2, "--seed", fast=True),
    _c("bench-scaling-list", "--scaling-channels 0,96", "bench --scaling --scaling-channels 0,96", 2, "--scaling-channels", fast=True),
    _c("bench-peers-unknown", "--peers foo", "bench --peers foo", 2, "--peers"),
    # calibrate (offline/calibrate.py)
    _c("calibrate-no-out", "--out missing", "calibrate {bundle} {recording}", 2, "--out", fast=True),
    _c("calibrate-missing", "recording missing", "calibrate {bundle} {work}/nope.nwb --out {work}/cal1", 2, "nope.nwb", absent="{work}/cal1"),
    _c("calibrate-no-behavior", "a recording without behaviour", "calibrate {bundle} {recording} --out {work}/cal2", 2,
       "no behaviour", "vel_x", absent="{work}/cal2"),
    _c("calibrate-label-free-short", "--label-free on 6 s of LFP", "calibrate {bundle} {recording} --out {work}/cal5 --label-free --minutes 0.1", 2,
       "label-free renormalisation needs at least 10 s", "--minutes", absent="{work}/cal5"),
    _c("calibrate-label-free-and-renormalize", "--label-free with --renormalize",
       "calibrate {bundle} {recording} --out {work}/cal6 --label-free --renormalize", 2, "choose one", absent="{work}/cal6"),
    _c("calibrate-into-itself", "--out is the bundle", "calibrate {bundle} {recording} --out {bundle}", 2, "--out", "new folder"),
    _c("calibrate-folds", "--folds 1", "calibrate {bundle} {recording} --out {work}/cal3 --folds 1", 2,
       "--folds", absent="{work}/cal3"),
    _c("calibrate-xdf-flag", "--xdf-stream on a file that is not XDF", "calibrate {bundle} {recording} --out {work}/cal4 --xdf-stream LFP", 2,
       "--xdf-stream", "not one", absent="{work}/cal4"),
    # replay (rtdecode/replay.py, rtdecode/recording.py)
    _c("replay-missing", "file missing", "replay {work}/nope.npz", 2, "nope.npz"),
    _c("replay-folder", "a folder", "replay {work}", 2, "{work}"),
    _c("replay-text", "a text file", "replay {toml_typo}", 2, "typo.toml"),
    _c("replay-foreign-npz", "an .npz that is not a recording", "replay {foreign_npz}", 2, "foreign.npz"),
    _c("replay-speed-zero", "--speed 0", "replay {recording} --speed 0", 2, "--speed", fast=True),
    _c("replay-chunk-zero", "--chunk 0", "replay {recording} --chunk 0", 2, "--chunk", fast=True),
    _c("replay-duration-negative", "--duration -1", "replay {recording} --duration -1", 2, "--duration", fast=True),
]


class Fixtures:
    """The real inputs the cases need, made once per run (streams are `rtdecode replay` processes)."""

    def __init__(self, work: Path):
        self.work = work
        self.values: dict[str, str] = {"work": str(work), "missing": f"missing-{uuid.uuid4().hex[:8]}"}
        self.procs: list[subprocess.Popen] = []
        self.socks: list = []

    def __enter__(self) -> "Fixtures":
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        for s in self.socks:
            s.close(0)

    def fill(self, argv: tuple[str, ...], needed=None) -> tuple[str, ...]:
        keys = set(re.findall(r"\{(\w+)\}", " ".join(argv)))
        for k in sorted(keys - set(self.values)):
            getattr(self, "make_" + k)()
        return tuple(a.format(**self.values) for a in argv)

    def fmt(self, s: str) -> str:
        for k in set(re.findall(r"\{(\w+)\}", s)) - set(self.values):
            getattr(self, "make_" + k)()
        return s.format(**self.values)

    # -- files -------------------------------------------------------------------------------
    def make_bundle(self) -> None:
        import numpy as np

        from offline.linear import fit_linear_bundle

        rng = np.random.default_rng(0)
        lfp = rng.standard_normal((6000, 8)).astype(np.float32)
        beh = rng.standard_normal((600, 2)).astype(np.float32)
        fit_linear_bundle(lfp, 1000.0, beh, ["vel_x", "vel_y"], self.work / "bundle", window_bins=5, line_freq=None,
                          overwrite=True)  # fmt: skip
        self.values["bundle"] = str(self.work / "bundle")

    def _copy_bundle(self, name: str) -> Path:
        self.fmt("{bundle}")
        dst = self.work / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.values["bundle"], dst)
        return dst

    def make_bundle_corrupt(self) -> None:
        b = self._copy_bundle("bundle_corrupt")
        (b / "manifest.json").write_text('{"format": "rtdecode-bundle", ')
        self.values["bundle_corrupt"] = str(b)

    def make_bundle_sha(self) -> None:
        import hashlib

        b = self._copy_bundle("bundle_sha")
        m = json.loads((b / "manifest.json").read_text())
        data = bytearray((b / "model.onnx").read_bytes())
        data[-1] ^= 1
        (b / "model.onnx").write_bytes(bytes(data))
        self.values.update(bundle_sha=str(b), sha_manifest=m["files"]["model.onnx"],
                           sha_file=hashlib.sha256(bytes(data)).hexdigest())  # fmt: skip

    def make_sha_manifest(self) -> None:
        self.make_bundle_sha()

    make_sha_file = make_sha_manifest

    def make_bundle_newer(self) -> None:
        b = self._copy_bundle("bundle_newer")
        m = json.loads((b / "manifest.json").read_text())
        m["schema_version"] = 99
        (b / "manifest.json").write_text(json.dumps(m))
        self.values["bundle_newer"] = str(b)

    def _file(self, key: str, name: str, text: str) -> None:
        p = self.work / name
        p.write_text(self.fmt(text) if "{" in text else text)
        self.values[key] = str(p)

    def make_toml_typo(self) -> None:
        self._file("toml_typo", "typo.toml", '[run]\nbundle = "x"\ntreads = 2\n')

    def make_toml_negative(self) -> None:
        self.fmt("{bundle}")
        self._file("toml_negative", "negative.toml", f'[run]\nbundle = "{self.values["bundle"]}"\nthreads = -1\n')

    def make_toml_address(self) -> None:
        self.fmt("{bundle}")
        self._file("toml_address", "address.toml", f'[run]\nbundle = "{self.values["bundle"]}"\naddress = "localhost:5556"\n')

    def make_toml_above(self) -> None:
        self.fmt("{bundle}")
        self._file("toml_above", "above.toml", f'resolve_timeout_s = 1.0\n[run]\nbundle = "{self.values["bundle"]}"\n')

    def make_toml_choice(self) -> None:
        self.fmt("{bundle}")
        self._file("toml_choice", "choice.toml", f'[run]\nbundle = "{self.values["bundle"]}"\nstall_policy = "newst"\n')

    def make_toml_beside(self) -> None:  # a config kept in a folder with its bundle, run from elsewhere
        self.fmt("{bundle}")
        kept = self.work / "kept"
        kept.mkdir(exist_ok=True)
        shutil.rmtree(kept / "bundle_kept", ignore_errors=True)
        shutil.copytree(self.values["bundle"], kept / "bundle_kept")
        (kept / "run.toml").write_text('[run]\nbundle = "bundle_kept"\n')
        self.values["toml_beside"] = str(kept / "run.toml")

    def make_nwb_damaged(self) -> None:
        from offline.data.nwb import write_session
        from offline.data.simulate import SimConfig, simulate_session

        p = write_session(simulate_session(SimConfig(n_channels=8, duration_s=5.0), 0, 0), self.work / "whole.nwb")
        b = bytearray(p.read_bytes())
        b[len(b) - len(b) // 3 :] = bytes(len(b) // 3)
        (self.work / "damaged.nwb").write_bytes(bytes(b))
        self.values["nwb_damaged"] = str(self.work / "damaged.nwb")

    def make_nwb_shifted(self) -> None:
        import h5py

        from offline.data.nwb import write_session
        from offline.data.simulate import SimConfig, simulate_session

        p = write_session(simulate_session(SimConfig(n_channels=8, duration_s=5.0), 0, 0), self.work / "shifted.nwb")
        with h5py.File(p, "r+") as f:  # every behaviour series 3 s late: the camera on another clock
            names: list[str] = []
            f.visit(names.append)
            for n in [n for n in names if n.startswith("processing/behavior/") and n.endswith("/starting_time")]:
                f[n][()] = f[n][()] + 3.0
        self.values["nwb_shifted"] = str(p)

    def make_toml_broken(self) -> None:
        self._file("toml_broken", "broken.toml", "[run\nthreads = \n")

    def make_distill_typo(self) -> None:
        self._file("distill_typo", "distill_typo.toml", "seed = 0\nthreds = 1\n")

    def make_distill_normalize(self) -> None:
        self._file("distill_normalize", "distill_normalize.toml", 'seed = 0\n[chain]\nnormalize = "sesion"\n')

    def make_sim_typo(self) -> None:
        self._file("sim_typo", "sim_typo.toml", "[simulate]\nn_chanels = 8\n")

    def make_sim_conflict(self) -> None:
        self._file("sim_conflict", "sim_conflict.toml", "[simulate]\nn_channels = 16\n")

    def make_foreign_npz(self) -> None:
        import numpy as np

        np.savez(self.work / "foreign.npz", x=np.arange(3))
        self.values["foreign_npz"] = str(self.work / "foreign.npz")

    def _recording(self, n_channels: int) -> Path:
        import numpy as np

        from rtdecode.recording import Recording

        p = self.work / f"rec{n_channels}.npz"
        if not p.exists():
            data = np.random.default_rng(n_channels).standard_normal((60_000, n_channels)).astype(np.float32)
            Recording(data, 1000.0).save(p)
        return p

    def make_recording(self) -> None:
        self.values["recording"] = str(self._recording(8))

    # -- processes and sockets -------------------------------------------------------------
    def _replay(self, rec: Path, name: str) -> None:
        sid = f"sid-{uuid.uuid4().hex[:8]}"
        p = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "replay", str(rec), "--name", name,
                              "--source-id", sid, "--loop"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        self.procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 60)
        line = p.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"replay of {rec} did not start (got {line!r})")

    def make_stream4(self) -> None:
        name = f"bad-inputs-4ch-{uuid.uuid4().hex[:8]}"
        self._replay(self._recording(4), name)
        self.values["stream4"] = name

    def make_stream8x2(self) -> None:
        name = f"bad-inputs-8ch-{uuid.uuid4().hex[:8]}"
        self._replay(self._recording(8), name)
        self._replay(self._recording(8), name)
        self.values["stream8x2"] = name

    def make_busy(self) -> None:
        import zmq

        s = zmq.Context.instance().socket(zmq.PUB)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        self.socks.append(s)
        self.values["busy"] = f"tcp://127.0.0.1:{port}"


@dataclass
class Result:
    case: Case
    argv: tuple[str, ...]
    code: int
    message: str
    stderr: str
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _message(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ": error: " in ln]
    return (errs[-1] if errs else lines[-1] if lines else "").strip()


def run_case(case: Case, fx: Fixtures, timeout: float = 120.0) -> Result:
    argv = fx.fill(case.argv)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "rtdecode.cli", *argv], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL, cwd=fx.work)  # fmt: skip
    res = Result(case, argv, r.returncode, _message(r.stderr), r.stderr, time.monotonic() - t)
    if r.returncode != case.code:
        res.problems.append(f"exit code {r.returncode}, documented {case.code}")
    if "Traceback" in r.stderr:
        res.problems.append("traceback in stderr")
    for m in case.mentions:
        m = fx.fmt(m)
        if m not in r.stderr:
            res.problems.append(f"message does not mention {m!r}")
    if case.absent and Path(fx.fmt(case.absent)).exists():
        res.problems.append(f"left {fx.fmt(case.absent)} behind")
    if r.stderr.count(": error: ") > 1 or re.search(r"rtdecode \w+: rtdecode", r.stderr):
        res.problems.append("prefix repeated")
    return res


def lsl_env(work: Path) -> None:
    """LSL discovery on this machine's link (as the tests), liblsl quiet, unless LSLAPICFG is set."""
    if "LSLAPICFG" not in os.environ:
        cfg = work / "lsl_api.cfg"
        cfg.write_text("[log]\nlevel = -3\n\n[multicast]\nResolveScope = link\n")
        os.environ["LSLAPICFG"] = str(cfg)


def run_cases(cases: list[Case], work: Path, log=print) -> list[Result]:
    lsl_env(work)
    out = []
    with Fixtures(work) as fx:
        for c in cases:
            r = run_case(c, fx)
            if log:
                state = "ok" if r.ok else ("pending" if c.pending else "FAIL") + ": " + "; ".join(r.problems)
                log(f"{c.id:28s} exit {r.code} {r.seconds:5.1f} s  {state}")
            out.append(r)
    return out


def _cell(s: str, work: str, busy: str = "") -> str:
    s = (s.replace(work, "WORK") if work else s).replace("|", "\\|")
    if busy:
        s = s.replace(busy, "tcp://127.0.0.1:BUSY_PORT")
    s = re.sub(r"bad-inputs-(\w+)-[0-9a-f]{8}", r"bad-inputs-\1", s)
    s = re.sub(r"missing-[0-9a-f]{8}", "missing-XXXX", s)
    s = re.sub(r"sid-[0-9a-f]{8}", "sid-XXXX", s)
    s = re.sub(r"host '[^']*'", "host 'HOST'", s)
    return s


def write_doc(results: list[Result], path: Path = DOC, seconds: float = 0.0, work: str = "") -> None:
    lines = [
        "# Bad inputs: what `rtdecode` says, and its exit code",
        "",
        "Produced by `python tools/bad_inputs.py` (do not edit by hand): every case runs the real CLI",
        "(`python -m rtdecode.cli ...`) in a subprocess against real inputs: a bundle, copies of it with a",
        "corrupt manifest, a changed file and a newer schema; LSL streams played by `rtdecode replay` in",
        "other processes; a ZeroMQ port held by another socket. `tests/cli/test_cli_bad_inputs.py` runs the",
        "cases marked fast on every test run (all of them with `-m slow`) and checks the exit code, that",
        "no traceback is printed and that the message names the flag, file or key at fault.",
        "",
        "Exit codes: **0** done, **1** failed while running (an unexpected error: its traceback),",
        "**2** bad usage or bad input (one line `rtdecode <command>: error: <message>`), **130** interrupted.",
        "`WORK` stands for the script's temporary folder.",
        "",
        f"{len(results)} cases, {sum(r.ok for r in results)} as documented"
        + (f", {seconds:.0f} s" if seconds else "") + ".",
        "",
        "| case | command | exit | message | as documented |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        cmd = "rtdecode " + shlex.join(r.argv)
        if r.ok:
            state = "yes"
        else:
            state = (f"no, pending ({r.case.pending}): " if r.case.pending else "**NO**: ") + "; ".join(r.problems)
        busy = r.stderr and next((a for a in r.argv if a.startswith("tcp://127.0.0.1:") and "already in use" in r.stderr), "")
        lines.append(f"| {r.case.id} | `{_cell(cmd, work, busy)}` | {r.code} | {_cell(r.message, work, busy)} | {state} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run only the cases whose id starts with this")
    ap.add_argument("--fast", action="store_true", help="only the fast cases")
    ap.add_argument("--check", action="store_true", help="exit 1 if a case is not as documented")
    ap.add_argument("--out", default=str(DOC), help="the Markdown table to write")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if c.id.startswith(a.only) and (c.fast or not a.fast)]
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rtdecode-bad-inputs-") as tmp:
        work = Path(tmp).resolve()
        results = run_cases(cases, work)
        write_doc(results, Path(a.out), time.monotonic() - t, work=str(work))
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)}/{len(results)} as documented; table: {a.out}")
    return 1 if a.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
