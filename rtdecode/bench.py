"""`rtdecode bench`: the closed loop measured as an experiment sees it, against peers.

Three processes per measured consumer, on one host:

1. the bench's outlet (`python -m rtdecode.bench outlet`, `bench_outlet`: `rtdecode replay`'s
   schedule and stamps, plus a log) plays a recording (synthetic by default) as a real LSL
   outlet at its real rate. Sample i is *acquired* at ``t0 + i / rate`` (the drift-free
   schedule) and its chunk is pushed when its last sample is due. Stamps: the acquisition
   time itself (`--stamping schedule`), or the clock at push time plus 0-3 ms of jitter, as
   acquisition software does (`--stamping arrival`: the consumer has to dejitter). The
   outlet logs, per chunk, the acquisition time of its last sample, when it was pushed and
   the stamp it carried, so the latency is always measured from acquisition, whatever the
   stamps say.
2. the consumer: `rtdecode run` (or a peer, bench/peers/*.py) pulls the stream, decodes
   and publishes one msgpack message per bin on ZeroMQ (docs/schema.md);
3. this process subscribes and stamps each message on receipt (pylsl.local_clock).

Per bin (same host, same clock): ``e2e = t_recv - t_acq`` (bin's last sample acquired ->
message received), split exactly into ``transport_in = t_arrive - t_acq`` (outlet ->
inlet -> the consumer holds the chunk; itself split into ``outlet_late``, the outlet's
push after the sample was due, and ``lsl``, push -> the consumer holds it),
``processing = lat_ms`` (chunk in hand -> published; itself split into ``chain_ms``,
``infer_ms`` and ``other_ms``) and ``publish = t_recv - t_pub`` (ZeroMQ + msgpack to the
subscriber). The consumer's ``t_arrive`` is ``t_pub - lat_ms``, so the three parts add up
to ``e2e`` by construction. ``t_acq`` of a bin comes from the outlet's log: the consumer's
first sample is found among the stamps the outlet sent (its raw stamp, to 20 µs), and bin
``seq`` ends ``seq + 1`` bins after it (a consumer that loses samples is off by them). Under schedule
stamps ``t_acq == t_lsl``; under arrival stamps ``stamp_error = t_lsl - t_acq`` says how
far the consumer's published stamps are from acquisition.

Consumers run one after another on the same recording (same file, same replay settings),
each with the machine to itself: running them side by side on a 2-core machine would
mostly measure their contention. `--transport ipc` puts the ZeroMQ hop on a Unix socket
instead of 127.0.0.1; `--run-option 'KEY = VALUE'` adds a line to rtdecode run's [run]
table (e.g. `spin_s = 0`, `gc_mode = "python"`). On a machine that other jobs keep busy,
the outlet and the subscriber are late by milliseconds whatever the consumer does: run the
whole bench real-time (`chrt -f 20 rtdecode bench ...`, every process it starts inherits it)
and say so with the figures (docs/bench/bench_s5_tail.md). Everything goes into ``bench.json`` (every figure,
machine, versions, commands), ``bench.md`` and PNG plots (`rtdecode.bench_report`).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .recording import Recording

PEERS = ("baseline", "mne-lsl", "timeflux")
PEER_DIR = Path(__file__).resolve().parent.parent / "bench" / "peers"
TIMEFLUX_PYTHON_ENV = "RTDECODE_TIMEFLUX_PYTHON"  # a python with timeflux (it pins numpy==1.26.4)


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; every field is a `rtdecode bench` flag."""

    out: str = "runs/bench"
    channels: int = 96
    rate: float = 1000.0
    chunk: int = 10  # samples per LSL push
    bin_ms: float = 10.0
    window: int = 32  # model window in bins (attention window of the streaming student)
    model: str = "auto"  # "student" (small transformer, random weights; needs torch to build), "linear", "auto"
    backend: str = "auto"
    threads: int = 1
    duration_s: float = 60.0
    warmup_s: float = 1.0  # bins whose last sample is within this time of the first are left out of the stats
    lead_s: float = 3.0  # the replay runs this much longer: time for a consumer to start and connect
    peers: tuple[str, ...] = PEERS
    seed: int = 0
    plots: bool = True
    stamping: str = "schedule"  # replay stamps: "schedule" or "arrival" (push time + 0-3 ms jitter)
    transport: str = "tcp"  # the consumers' ZeroMQ address: tcp (127.0.0.1) or ipc (a socket file)
    run_options: tuple[str, ...] = ()  # extra `key = value` lines for rtdecode run's [run] table

    def __post_init__(self):
        if self.run_options:
            import tomllib

            from .runtime import RunConfig

            own = {"stream", "source_id", "bundle", "address", "backend", "threads", "resolve_timeout_s", "quiet",
                   "summary_path"}  # fmt: skip  # set by the bench itself
            names = {f.name for f in dataclasses.fields(RunConfig)} - own
            for o in self.run_options:
                try:
                    keys = set(tomllib.loads(o))
                except tomllib.TOMLDecodeError as e:
                    raise BenchError(f"--run-option {o!r} is not a TOML line such as 'spin_s = 0.0005' ({e})") from None
                if not keys <= names:
                    raise BenchError(f"--run-option {o!r}: {sorted(keys - names)} is not a setting the bench leaves to "
                                     f"you; choose from {sorted(names)}")  # fmt: skip
        if self.transport not in ("tcp", "ipc"):
            raise BenchError(f"transport must be tcp or ipc, got {self.transport!r}")
        if self.stamping not in ("schedule", "arrival"):
            raise BenchError(f"stamping must be schedule or arrival, got {self.stamping!r}")
        if not 1 <= self.channels <= 4096:
            raise BenchError(f"channels must be in 1..4096, got {self.channels}")
        if not self.rate > 0 or not self.duration_s > 0 or self.chunk < 1 or self.window < 1:
            raise BenchError(f"rate, duration, chunk and window must be positive ({self})")
        bs = self.rate * self.bin_ms / 1e3
        if abs(bs - round(bs)) > 1e-6 or round(bs) < 1:
            raise BenchError(f"bin width {self.bin_ms} ms is not a whole number of samples at {self.rate} Hz")
        bad = [p for p in self.peers if p not in PEERS]
        if bad:
            raise BenchError(f"unknown peers {bad}; choose from {PEERS}")
        if self.model not in ("auto", "student", "linear"):
            raise BenchError(f"model must be auto, student or linear, got {self.model!r}")

    @property
    def bin_samples(self) -> int:
        return int(round(self.rate * self.bin_ms / 1e3))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["peers"] = list(self.peers)
        d["run_options"] = list(self.run_options)
        return d


# -- inputs ------------------------------------------------------------------------------------
def synthetic_recording(channels: int, rate: float, seconds: float, seed: int = 0) -> Recording:
    """Pink-ish LFP-like noise plus slow shared components and 60 Hz line noise; no flat channel."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    slow = np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t), np.sin(2 * np.pi * 8 * t)], 1)
    mix = rng.standard_normal((3, channels)) * 20
    x = slow @ mix + rng.standard_normal((n, channels)) * 5 + 3 * np.sin(2 * np.pi * 60 * t)[:, None]
    return Recording(x.astype(np.float32), rate, meta={"synthetic": True, "seed": seed})


def build_bundle(cfg: BenchConfig, rec: Recording, work: Path) -> dict:
    """A bundle for the benchmark (random weights: latency only). Returns its description.

    student: the distill_default student (streaming, 4 x 64; patches of 8 channels at 96
    channels, at most 12 tokens per bin at any count) exported with offline.export (ring
    K/V cache), and its torch weights for the PyTorch-eager baseline; linear: a lagged
    linear map (no torch needed), as an ONNX graph written by offline.linear."""
    from offline.linear import linear_onnx  # offline import: the bench builds, the runtime only runs
    from rtdecode.bundle import ModelSpec, write_bundle
    from rtdecode.dsp import compute_features
    from rtdecode.dsp.design import design_chain, fit_normalization

    kind = cfg.model
    if kind == "auto":
        try:
            import torch  # noqa: F401

            kind = "student"
        except ImportError:
            kind = "linear"
    spec = design_chain("lfp", fs=cfg.rate, n_channels=cfg.channels, bin_width_s=cfg.bin_ms / 1e3)
    feats = compute_features(spec, rec.data[: int(min(rec.n_samples, 10 * cfg.rate))])
    spec = spec.with_normalization(*fit_normalization(feats))
    out = work / "bundle"
    names = ["vel_x", "vel_y"]
    prov = {"bench": "random weights, for latency only", "seed": cfg.seed}
    torch_path = None
    if kind == "student":
        import torch

        from offline.export import export_bundle
        from offline.models.heads import BehaviorHead
        from offline.models.student import LFPStudent, StudentConfig

        # patch size as a bundle for this array would use it: tokens per bin stay at most 12
        # (96 channels: patches of 8, as before; 1024: 128), the smallest patch that
        # divides the channel count and gives no more than 12 tokens
        patch = next(pc for pc in range(1, cfg.channels + 1) if cfg.channels % pc == 0 and cfg.channels // pc <= 12)
        torch.manual_seed(cfg.seed)
        scfg = StudentConfig(dim=64, n_layers=4, n_heads=4, patch_channels=patch, attn_window=max(2, cfg.window))
        student = LFPStudent(scfg, spec.n_features, spec.n_branches, 1).eval()
        head = BehaviorHead(scfg.dim, len(names)).eval()
        b = export_bundle(out, student, head, 0, spec, scfg.attn_window, names, provenance=prov)
        torch_path = work / "torch_model.pt"
        torch.save({"student_cfg": dataclasses.asdict(scfg), "n_features": spec.n_features,
                    "n_branches": spec.n_branches, "n_out": len(names),
                    "student": student.state_dict(), "head": head.state_dict()}, torch_path)  # fmt: skip
        desc = (f"streaming student 4x64, patches of {patch} ch ({cfg.channels // patch} tokens/bin), attention window "
                f"{scfg.attn_window} bins, state layout {b.model.state_layout}, random weights")  # fmt: skip
    else:
        rng = np.random.default_rng(cfg.seed)
        f = spec.n_features
        w = (rng.standard_normal((cfg.window * f, len(names))) / np.sqrt(cfg.window * f)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            linear_onnx(w, np.zeros(len(names), np.float32), cfg.window, f, path)
            write_bundle(out, chain=spec, model_file=path, model=ModelSpec(kind="window", window_bins=cfg.window, opset=17),
                         output_names=names, provenance={"model": "lagged linear", **prov}, overwrite=True)  # fmt: skip
        desc = f"lagged linear map over a {cfg.window}-bin window (random weights)"
    return {"path": str(out), "kind": kind, "torch_model": str(torch_path) if torch_path else None, "describe": desc}


def lsl_env(work: Path) -> dict:
    """Environment for child processes: LSL discovery on the local link only (as the tests)."""
    env = dict(os.environ)
    if "LSLAPICFG" not in env:
        cfg = work / "lsl_api.cfg"
        cfg.write_text("[log]\nlevel = -3\n\n[multicast]\nResolveScope = link\n")
        env["LSLAPICFG"] = str(cfg)
    return env


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


# -- the outlet ---------------------------------------------------------------------------------
def bench_outlet(rec_path: str | Path, *, name: str, source_id: str, chunk: int, duration_s: float,
                 stamping: str = "schedule", jitter_s: float = 0.003, log_path: str | Path | None = None,
                 seed: int | None = None) -> int:  # fmt: skip
    """`rtdecode replay`'s outlet (same stream description, schedule and stamps; the recording
    is looped) for `duration_s`, that also logs per chunk the acquisition time of its last
    sample (``due``), when it was pushed (``t_push``) and its stamp (``stamp``) into
    `log_path` (.npz, written at the end). Prints ``READY t0 source_id`` once the outlet
    exists. Returns the number of samples pushed."""
    import pylsl

    from .replay import make_info

    rec = Recording.load(rec_path)
    data = np.ascontiguousarray(rec.data, dtype=np.float32)
    n_total, rate = data.shape[0], float(rec.sampling_rate)
    ext = np.concatenate([data, data[: min(chunk, n_total)]])  # wrap-around without a copy per chunk
    info = make_info(rec, name, "LFP", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=10)
    limit = int(round(duration_s * rate))
    n_chunks = -(-limit // chunk)
    due_log = np.full(n_chunks, np.nan)
    push_log = np.full(n_chunks, np.nan)
    stamp_log = np.full(n_chunks, np.nan)
    size_log = np.zeros(n_chunks, np.int32)
    rng = np.random.default_rng(seed)
    arrival = stamping == "arrival"
    clock = pylsl.local_clock
    t0 = clock()
    print(f"READY {t0:.6f} {source_id}", flush=True)
    pushed = pos = i = 0
    try:
        while pushed < limit:
            c = min(chunk, limit - pushed)
            due = t0 + (pushed + c - 1) / rate  # when the chunk's last sample is acquired
            delay = due - clock()
            if delay > 0:
                time.sleep(delay)
            x = ext[pos : pos + c]
            pos = (pos + c) % n_total
            t_push = clock()
            stamp = t_push + rng.uniform(0.0, jitter_s) if arrival else due  # liblsl back-dates the rest
            outlet.push_chunk(x, stamp)
            due_log[i], push_log[i], stamp_log[i], size_log[i] = due, t_push, stamp, c
            i += 1
            pushed += c
        time.sleep(0.2)  # let the last chunk reach the inlets before the outlet goes
    finally:
        del outlet
        if log_path is not None:
            np.savez(log_path, due=due_log[:i], t_push=push_log[:i], stamp=stamp_log[:i], size=size_log[:i],
                     t0=t0, rate=rate, pushed=pushed, stamping=stamping)  # fmt: skip
    return pushed


def _outlet_main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m rtdecode.bench outlet", description="the bench's LSL outlet")
    p.add_argument("recording")
    p.add_argument("--name", required=True)
    p.add_argument("--source-id", dest="source_id", required=True)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--stamping", choices=["schedule", "arrival"], default="schedule")
    p.add_argument("--jitter", type=float, default=0.003)
    p.add_argument("--log", required=True)
    a = p.parse_args(argv)
    n = bench_outlet(a.recording, name=a.name, source_id=a.source_id, chunk=a.chunk, duration_s=a.duration,
                     stamping=a.stamping, jitter_s=a.jitter, log_path=a.log)  # fmt: skip
    print(f"pushed {n} samples", file=sys.stderr)
    return 0


def _acquisition_times(log: dict, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(stamp per sample as the inlet sees it, push time per sample) from the outlet's log;
    sample i is acquired at t0 + i / rate."""
    size = log["size"].astype(np.int64)
    n = int(size.sum())
    last = np.cumsum(size) - 1  # index of each chunk's last sample
    idx = np.arange(n)
    chunk_of = np.repeat(np.arange(size.size), size)
    back = (last[chunk_of] - idx) / rate  # liblsl back-dates a chunk's samples by the nominal period
    return log["stamp"][chunk_of] - back, log["t_push"][chunk_of]


def _first_index(log: dict, rate: float, raw_first: float | None, first_ts: float | None, samples: int | None,
                 replayed: int) -> tuple[int | None, str]:  # fmt: skip
    """Index of the consumer's first sample: its stamp among those the outlet sent (to 20 µs;
    several candidates are told apart by the consumer's sample count), else from its sample
    count, else from its first stamp on the schedule."""
    stamps, _ = _acquisition_times(log, rate)
    for ts, what, tol in ((raw_first, "raw stamp", 2e-5), (first_ts, "first stamp", 2e-5),
                          (first_ts, "first stamp", 3e-4)):  # a peer's stamp may carry the clock offset (µs)
        if ts is None:
            continue
        cand = np.flatnonzero(np.abs(stamps - ts) < tol)
        if cand.size == 1:
            return int(cand[0]), f"{what} matched"
        if cand.size > 1:
            if samples is not None and (replayed - cand == samples).any():
                return int(replayed - samples), f"{what} matched, sample count chose"
            return int(cand[np.argmin(np.abs(stamps[cand] - ts))]), f"{what} matched (nearest of {cand.size})"
    if samples is not None:
        return int(replayed - samples), "sample count"
    if first_ts is not None:
        return int(round((first_ts - float(log["t0"])) * rate)), "first stamp on the schedule"
    return None, "unknown"


# -- one consumer ------------------------------------------------------------------------------
def consumer_command(name: str, cfg: BenchConfig, bundle: dict, stream: str, source_id: str, address: str,
                     work: Path) -> list[str] | str:  # fmt: skip
    """The command line of a consumer, or a string saying why it cannot run here."""
    if name == "rtdecode":
        toml = work / "run.toml"
        toml.write_text(
            "[run]\n"
            f'stream = "{stream}"\nsource_id = "{source_id}"\nbundle = "{bundle["path"]}"\naddress = "{address}"\n'
            f'backend = "{cfg.backend}"\nthreads = {cfg.threads}\nresolve_timeout_s = 30.0\nquiet = true\n'
            f'summary_path = "{work / "rtdecode_summary.json"}"\n'
            + "".join(f"{o}\n" for o in cfg.run_options)
        )
        return [sys.executable, "-m", "rtdecode.cli", "run", "--config", str(toml)]
    common = ["--stream", stream, "--source-id", source_id, "--bundle", bundle["path"], "--address", address,
              "--threads", str(cfg.threads)]  # fmt: skip
    if name == "baseline":
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            return f"needs scipy and torch (pip install 'rtdecode[bench]'): {e}"
        return [sys.executable, str(PEER_DIR / "baseline_loop.py"), *common,
                "--torch-model", bundle["torch_model"] or ""]  # fmt: skip
    if name == "mne-lsl":
        try:
            import mne_lsl  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            return f"needs mne-lsl and torch (pip install 'rtdecode[bench]'): {e}"
        return [sys.executable, str(PEER_DIR / "mnelsl_loop.py"), *common, "--torch-model", bundle["torch_model"] or ""]
    if name == "timeflux":
        py = os.environ.get(TIMEFLUX_PYTHON_ENV)
        script = PEER_DIR / "timeflux_graph.py"
        if not script.is_file():
            return ("timeflux 0.17.2 pins numpy==1.26.4 and networkx==2.5.1, so it cannot share this environment "
                    "(numpy 2); it does install in a separate venv (checked: timeflux 0.17.2 + timeflux_dsp), but its "
                    "graph peer (bench/peers/timeflux_graph.py: lsl.Receive -> dsp IIRFilter -> a msgpack ZeroMQ node) "
                    "is not written yet")  # fmt: skip
        if not py:
            return (f"timeflux 0.17.2 pins numpy==1.26.4 and networkx==2.5.1, which would downgrade this environment's "
                    f"numpy 2 (numba, onnxruntime, pylsl are built against it); it installs in its own venv: "
                    f"python -m venv tf && tf/bin/pip install timeflux timeflux_dsp onnxruntime msgpack, then set "
                    f"{TIMEFLUX_PYTHON_ENV}=tf/bin/python")  # fmt: skip
        return [py, str(script), *common]
    raise BenchError(f"unknown consumer {name!r}")


def _proc_cpu_s(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def _proc_peak_rss_mb(pid: int) -> float:
    try:  # VmHWM: the kernel's high-water mark of resident memory
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def run_consumer(name: str, cfg: BenchConfig, bundle: dict, rec_path: Path, work: Path, env: dict) -> dict:
    """Replay `rec_path` once to consumer `name`; return its raw per-bin records and counters."""
    import zmq

    from .sinks.zmq import SchemaError, decode
    from pylsl import local_clock

    stream = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    sid = f"sid-{uuid.uuid4().hex[:10]}"
    pdir = work / name
    address = free_address() if cfg.transport == "tcp" else f"ipc://{tempfile.gettempdir()}/rtdecode-bench-{uuid.uuid4().hex[:12]}.ipc"
    pdir.mkdir(parents=True, exist_ok=True)
    cmd = consumer_command(name, cfg, bundle, stream, sid, address, pdir)
    if isinstance(cmd, str):
        return {"name": name, "skipped": cmd}
    outlet_log = pdir / "outlet_log.npz"
    outlet_log.unlink(missing_ok=True)
    replay_cmd = [sys.executable, "-m", "rtdecode.bench", "outlet", str(rec_path), "--name", stream, "--source-id", sid,
                  "--chunk", str(cfg.chunk), "--duration", str(cfg.duration_s + cfg.lead_s), "--stamping", cfg.stamping,
                  "--jitter", "0.003", "--log", str(outlet_log)]  # fmt: skip
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1_000_000)
    sub.setsockopt(zmq.LINGER, 0)
    for t in (b"kinematics", b"status", b"hello"):
        sub.setsockopt(zmq.SUBSCRIBE, t)
    mon = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    sub.connect(address)
    log_c = open(pdir / "consumer.log", "w")
    log_r = open(pdir / "replay.log", "w")
    cons = subprocess.Popen(cmd, stdout=log_c, stderr=subprocess.STDOUT, env=env)
    replay = None
    sent_int = False
    rows: list[tuple] = []
    final: dict | None = None
    invalid = 0
    res: dict = {"name": name, "command": cmd, "replay_command": replay_cmd}
    try:
        # 1. the consumer has bound its PUB socket and our SUB is connected (no slow joiner)
        if not mon.poll(60_000) or cons.poll() is not None:
            raise BenchError(f"{name}: the consumer did not open {address} within 60 s (see {pdir / 'consumer.log'})")
        time.sleep(0.2)  # let the subscription reach the publisher
        # 2. start the stream
        replay = subprocess.Popen(replay_cmd, stdout=subprocess.PIPE, stderr=log_r, text=True, env=env)
        ready, _, _ = select.select([replay.stdout], [], [], 60)
        line = replay.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            raise BenchError(f"{name}: replay did not start (got {line!r}; see {pdir / 'replay.log'})")
        t0 = float(line.split()[1])
        cpu0, w0 = _proc_cpu_s(cons.pid), local_clock()
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        stop_at = None
        cpu1 = w1 = rss = None

        def take(frames, t_recv: float) -> bool:  # True on the consumer's final status
            nonlocal final, invalid
            try:
                topic, msg = decode(frames)
            except SchemaError:
                invalid += 1
                return False
            if topic == "kinematics":
                rows.append((msg["seq"], msg["t_lsl"], msg["t_pub"], msg["lat_ms"], msg["flags"],
                             msg.get("chain_ms", np.nan), msg.get("infer_ms", np.nan), t_recv))  # fmt: skip
            elif topic == "status" and msg.get("final"):
                final = msg
                return True
            return False

        # the subscriber must add no pause of its own: this process imported torch to build the
        # bundle, and a full collection of its heap would hold every message queued behind it
        gc.collect()
        gc.freeze()
        gc.disable()
        while True:
            if poller.poll(100):
                t_recv = local_clock()  # the message is here; reading and decoding it is the subscriber's work
                if take(sub.recv_multipart(), t_recv):
                    break
                continue
            now = local_clock()
            if stop_at is None and replay.poll() is not None:
                cpu1, w1, rss = _proc_cpu_s(cons.pid), now, _proc_peak_rss_mb(cons.pid)
                stop_at = now + 1.0  # drain: the last bins are still on their way
            if stop_at is not None and not sent_int and now >= stop_at:
                cons.send_signal(signal.SIGINT)
                sent_int = True
            if cons.poll() is not None:  # exited (done, or crashed): take what is still queued
                while poller.poll(300):
                    if take(sub.recv_multipart(), local_clock()):
                        break
                break
            if stop_at is None and now - w0 > cfg.duration_s + cfg.lead_s + 120:
                raise BenchError(f"{name}: the replay did not end")
            if sent_int and now > stop_at + 30:  # asked to stop 30 s ago: take what came, and kill it (finally)
                break
        replayed = int(round((cfg.duration_s + cfg.lead_s) * cfg.rate))
        try:
            replay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if outlet_log.is_file():
            with np.load(outlet_log) as z:
                res["outlet"] = {k: z[k] for k in z.files}
            replayed = int(res["outlet"]["pushed"])
        res.update(t0=t0, replayed_samples=replayed, cpu_s=cpu1 - cpu0 if cpu1 is not None else float("nan"),
                   wall_s=(w1 - w0) if w1 is not None else float("nan"), peak_rss_mb=rss, invalid_msgs=invalid,
                   final=final or {}, stream=stream, address=address)  # fmt: skip
    finally:
        gc.enable()
        gc.unfreeze()
        for p in (cons, replay):
            if p is None:
                continue
            try:  # normally exiting already (after its final status): a second SIGINT would cut it short
                p.wait(timeout=15 if (p is cons and sent_int) else 0.01)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if replay is not None and replay.stdout:
            replay.stdout.close()
        log_c.close()
        log_r.close()
        mon.close(0)
        sub.close(0)
        ctx.term()
        if address.startswith("ipc://"):  # a consumer that exits without closing its socket leaves the file
            Path(address[len("ipc://"):]).unlink(missing_ok=True)
    res["returncode"] = cons.returncode
    res["log_tail"] = (pdir / "consumer.log").read_text(errors="replace")[-2000:]
    cols = ("seq", "t_lsl", "t_pub", "lat_ms", "flags", "chain_ms", "infer_ms", "t_recv")
    arr = np.array(rows, dtype=np.float64).reshape(-1, len(cols))
    res["rows"] = {c: arr[:, i] for i, c in enumerate(cols)}
    return res


# -- figures -----------------------------------------------------------------------------------
def _pct(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    q = np.percentile(x, [50, 90, 99, 99.9])
    return {"n": int(x.size), "mean": float(x.mean()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "p99.9": float(q[3]), "max": float(x.max())}  # fmt: skip


def analyse(raw: dict, cfg: BenchConfig) -> dict:
    """Every figure for one consumer, from its per-bin records."""
    if "skipped" in raw:
        return {"name": raw["name"], "skipped": raw["skipped"]}
    r = raw["rows"]
    n = len(r["seq"])
    out = {k: raw[k] for k in ("name", "command", "replay_command", "returncode", "replayed_samples", "cpu_s",
                               "wall_s", "peak_rss_mb", "invalid_msgs")}  # fmt: skip
    if raw.get("returncode") != 0:
        out["consumer_log_tail"] = raw.get("log_tail", "")
    final = raw["final"]
    deadline = float(final.get("deadline_ms") or cfg.bin_ms)
    seq = r["seq"].astype(np.int64)
    uniq = np.unique(seq)
    first_ts = final.get("first_sample_ts")
    log = raw.get("outlet")
    B = cfg.bin_samples
    if log is not None:
        i0, i0_from = _first_index(log, cfg.rate, final.get("first_sample_raw_ts"), first_ts, final.get("samples"),
                                   raw["replayed_samples"])  # fmt: skip
    else:
        i0, i0_from = (int(round((first_ts - raw["t0"]) * cfg.rate)), "first stamp on the schedule") \
            if first_ts is not None else (None, "unknown")  # fmt: skip
    expected = (raw["replayed_samples"] - i0) // B if i0 is not None else None
    out["bins"] = {
        "received": n,
        "expected_from_replay": expected,
        "first_sample_index": i0,
        "first_sample_index_from": i0_from,
        "consumer_samples": final.get("samples"),
        "consumer_published": final.get("published"),
        "duplicated": int(n - uniq.size),
        "missing_seq": int(uniq[-1] - uniq[0] + 1 - uniq.size) if n else 0,
        "seq_first": int(uniq[0]) if n else None,
        "dropped_vs_expected": (int(expected - uniq.size) if expected is not None else None),
        "consumer_gaps": final.get("gaps"),
        "consumer_filled_samples": final.get("filled_samples"),
        "consumer_clock_resets": (final.get("source_events") or {}).get("clock_resets"),
        "flagged": int((r["flags"].astype(np.int64) != 0).sum()) if n else 0,
        "flagged_after_warmup": None,
        "consumer_reconnects": final.get("reconnects"),
        "consumer_resets": final.get("resets"),
    }
    if n == 0:
        out["consumer_log_tail"] = raw.get("log_tail", "")
        return out
    lat = r["lat_ms"]
    t_arrive = r["t_pub"] - lat / 1e3
    # each bin's last sample, and when it was acquired and pushed (the outlet's log)
    t_acq, t_push = r["t_lsl"], np.full(n, np.nan)
    if log is not None and i0 is not None:
        stamps, push = _acquisition_times(log, cfg.rate)
        last = i0 + (seq + 1) * B - 1  # bin seq ends (seq + 1) bins after the first sample (no sample lost)
        ok = (last >= 0) & (last < stamps.size)
        last = np.clip(last, 0, stamps.size - 1)
        t_acq = np.where(ok, float(log["t0"]) + last / cfg.rate, np.nan)
        t_push = np.where(ok, push[last], np.nan)
        out["bins"]["outside_outlet_log"] = int((~ok).sum())
    e2e = (r["t_recv"] - t_acq) * 1e3
    comp = {
        "e2e": e2e,
        "transport_in": (t_arrive - t_acq) * 1e3,
        "outlet_late": (t_push - t_acq) * 1e3,
        "lsl": (t_arrive - t_push) * 1e3,
        "stamp_error": (r["t_lsl"] - t_acq) * 1e3,
        "processing": lat,
        "chain": r["chain_ms"],
        "infer": r["infer_ms"],
        "other": lat - r["chain_ms"] - r["infer_ms"],
        "publish": (r["t_recv"] - r["t_pub"]) * 1e3,
    }
    steady = (r["t_lsl"] - r["t_lsl"][0]) >= cfg.warmup_s
    out["latency_ms"] = {k: _pct(v[steady]) for k, v in comp.items()}
    fl = r["flags"].astype(np.int64)
    out["bins"]["flagged_after_warmup"] = int(((fl & ~16) != 0)[steady].sum())  # any flag but WARMUP
    dts = np.diff(r["t_lsl"])
    out["bins"]["t_lsl_step_ms"] = {"min": float(dts.min() * 1e3), "max": float(dts.max() * 1e3)} if dts.size else {}
    resid = comp["transport_in"] + comp["processing"] + comp["publish"] - e2e
    out["split_residual_ms_max"] = float(np.nanmax(np.abs(resid)))  # transport_in + processing + publish - e2e
    out["other_ms_min"] = float(np.nanmin(comp["other"])) if np.isfinite(comp["other"]).any() else None
    data_s = n * cfg.bin_ms / 1e3
    out["deadline_ms"] = deadline
    out["misses"] = {
        "processing_over_deadline": int((lat > deadline).sum()),
        "processing_over_deadline_steady": int((lat[steady] > deadline).sum()),
        "e2e_over_deadline": int((e2e > deadline).sum()),
        "e2e_over_deadline_steady": int((e2e[steady] > deadline).sum()),
        "overrun_flags": int(((r["flags"].astype(np.int64) & 4) > 0).sum()),
        "consumer_reported_overruns": final.get("overruns"),
    }
    cpu = raw["cpu_s"]
    out["data_s"] = data_s
    out["rtf_cpu"] = cpu / data_s if data_s else float("nan")  # FALCON: compute time / data time
    out["rtf_busy"] = float(np.nansum(lat) / 1e3 / data_s) if data_s else float("nan")
    out["cpu_percent_of_one_core"] = 100 * cpu / raw["wall_s"] if raw["wall_s"] else float("nan")
    out["throughput_bins_per_cpu_s"] = n / cpu if cpu else float("nan")
    out["achieved_bins_per_s"] = n / raw["wall_s"] if raw["wall_s"] else float("nan")
    out["series"] = {"t_s": (r["t_lsl"] - r["t_lsl"][0]).round(5).tolist(), "e2e_ms": e2e.round(4).tolist()}
    out["consumer_runtime"] = {k: final.get(k) for k in ("gc", "rt_priority", "pulls", "bins") if k in final}
    return out


def ratios(results: dict) -> dict:
    """Each peer's p50, p99 (end to end) and throughput as a ratio to rtdecode's."""
    ref = results.get("rtdecode", {})
    if "latency_ms" not in ref:
        return {}
    out = {}
    for name, r in results.items():
        if name == "rtdecode" or "latency_ms" not in r:
            continue
        a, b = r["latency_ms"]["e2e"], ref["latency_ms"]["e2e"]
        out[name] = {"p50": a["p50"] / b["p50"], "p99": a["p99"] / b["p99"],
                     "throughput": r["throughput_bins_per_cpu_s"] / ref["throughput_bins_per_cpu_s"]}  # fmt: skip
    return out


def machine_info() -> dict:
    import platform

    info = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "loadavg_1_5_15": list(os.getloadavg())}  # fmt: skip
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_gb"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "numba", "onnxruntime", "pylsl", "zmq", "msgpack", "scipy", "torch", "mne_lsl", "psutil"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception:  # not installed
            versions[mod] = None
    try:
        import pylsl
        import zmq

        versions["liblsl"] = pylsl.library_version()
        versions["libzmq"] = zmq.zmq_version()
    except Exception:
        pass
    info["versions"] = versions
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=Path(__file__).parent, timeout=5).stdout.strip()  # fmt: skip
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                                cwd=Path(__file__).parent, timeout=5).stdout.strip())  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# -- entry points -------------------------------------------------------------------------------
def run_bench(cfg: BenchConfig, consumers: tuple[str, ...] | None = None, command: str = "") -> dict:
    """Build the inputs, measure rtdecode and the peers one after another, write the report."""
    from .bench_report import write_report

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    env = lsl_env(work)
    rec = synthetic_recording(cfg.channels, cfg.rate, min(cfg.duration_s, 20.0), cfg.seed)
    rec_path = work / "recording.npz"
    rec.save(rec_path)
    bundle = build_bundle(cfg, rec, work)
    result = {"config": cfg.to_dict(), "command": command, "machine": machine_info(), "bundle": bundle,
              "recording": {"synthetic": True, "seconds_looped": rec.duration_s, "channels": rec.n_channels,
                            "rate": rec.sampling_rate}, "consumers": {}}  # fmt: skip
    for name in consumers or ("rtdecode", *cfg.peers):
        raw = run_consumer(name, cfg, bundle, rec_path, work, env)
        result["consumers"][name] = analyse(raw, cfg)
        result["consumers"][name]["loadavg_after"] = list(os.getloadavg())
    result["machine"]["loadavg_after"] = list(os.getloadavg())

    result["ratios_to_rtdecode"] = ratios(result["consumers"])
    write_report(result, out, plots=cfg.plots)
    return result


def run_scaling(cfg: BenchConfig, channels=(96, 256, 512, 1024), windows=(8, 16, 32, 64), command: str = "") -> dict:
    """rtdecode alone: latency and CPU against channel count (at cfg.window) and window length (at cfg.channels)."""
    from .bench_report import write_scaling_report

    out = Path(cfg.out)
    points = [("channels", c, cfg.window) for c in channels] + [("window", cfg.channels, w) for w in windows]
    rows = []
    done: dict = {}
    for axis, c, w in points:
        if (c, w) not in done:  # the point where both axes meet is measured once
            sub = dataclasses.replace(cfg, out=str(out / f"{c}ch_w{w}"), channels=c, window=w, peers=(), plots=False)
            done[c, w] = run_bench(sub, consumers=("rtdecode",), command=command)["consumers"]["rtdecode"]
        r = done[c, w]
        lat = r.get("latency_ms", {})
        rows.append({"axis": axis, "channels": c, "window": w, "rate": cfg.rate,
                     "e2e_p50": lat.get("e2e", {}).get("p50"), "e2e_p99": lat.get("e2e", {}).get("p99"),
                     "e2e_max": lat.get("e2e", {}).get("max"),
                     "chain_p50": lat.get("chain", {}).get("p50"), "infer_p50": lat.get("infer", {}).get("p50"),
                     "infer_p99": lat.get("infer", {}).get("p99"),
                     "misses": r.get("misses", {}).get("processing_over_deadline_steady"),
                     "cpu_percent": r.get("cpu_percent_of_one_core"), "rtf_cpu": r.get("rtf_cpu"),
                     "peak_rss_mb": r.get("peak_rss_mb"), "bins": r.get("bins", {}).get("received"),
                     "dropped": r.get("bins", {}).get("dropped_vs_expected")})  # fmt: skip
    result = {"config": cfg.to_dict(), "command": command, "machine": machine_info(), "rows": rows}
    write_scaling_report(result, out, plots=cfg.plots)
    return result


def main_bench(args) -> int:
    """`rtdecode bench` (argparse namespace from rtdecode.cli)."""
    peers = tuple(p for p in (args.peers or "").split(",") if p and p != "none")
    cfg = BenchConfig(out=args.out, channels=args.channels, rate=args.rate, chunk=args.chunk, bin_ms=args.bin_ms,
                      window=args.window, model=args.model, backend=args.backend, threads=args.threads,
                      duration_s=args.duration, warmup_s=args.warmup, lead_s=args.lead, peers=peers, seed=args.seed,
                      stamping=getattr(args, "stamping", "schedule"), transport=getattr(args, "transport", None) or "tcp",
                      run_options=tuple(getattr(args, "run_option", None) or ()))  # fmt: skip
    command = "rtdecode " + " ".join(sys.argv[1:]) if sys.argv and "rtdecode" in sys.argv[0] else ""
    if args.scaling:
        ints = lambda v: tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v))  # noqa: E731
        chans = ints(args.scaling_channels)
        wins = ints(args.scaling_windows)
        run_scaling(cfg, chans, wins, command=command)
        print((Path(cfg.out) / "scaling.md").read_text())
    else:
        run_bench(cfg, command=command)
        print((Path(cfg.out) / "bench.md").read_text())
    return 0


if __name__ == "__main__":  # the bench's outlet process: python -m rtdecode.bench outlet ...
    if sys.argv[1:2] != ["outlet"]:
        sys.exit("usage: python -m rtdecode.bench outlet RECORDING --name N --source-id S --duration D --log FILE")
    sys.exit(_outlet_main(sys.argv[2:]))
