"""`rtdecode demo`: the whole product on an embedded default, on one machine.

1. simulate a small multi-session dataset (offline.data.simulate);
2. train the spike teacher, distil the LFP student, write the bundle (offline.train.pipeline,
   configs/distill_tiny.toml), or with --quick fit a lagged ridge LFP decoder instead;
3. replay a held-out session as a real LSL outlet in another process;
4. decode it live with the runtime (this process) and subscribe over ZeroMQ (a thread);
5. print the online R² against the true behaviour, the match with the offline pass,
   and the latency from each bin's last sample to its message being received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .batch import decode_recording, r2_score
from .bundle import Bundle
from .recording import Recording


def _demo_bundle(out: Path, config: str | None, quick: bool):
    """Returns (bundle, held-out recording with behaviour)."""
    if quick:
        from offline.data.simulate import SimConfig, simulate_session
        from offline.linear import fit_linear_bundle

        cfg = SimConfig(n_channels=32, duration_s=120.0)
        train = simulate_session(cfg, session_index=0, seed=0)
        test = simulate_session(cfg, session_index=0, seed=1)
        bundle = fit_linear_bundle(np.asarray(train.lfp), train.lfp_rate, train.behavior, list(train.behavior_names),
                                   out / "bundle", window_bins=20, overwrite=True,
                                   provenance={"demo": "quick", "session": train.session_id})  # fmt: skip
        return bundle, Recording(np.asarray(test.lfp), test.lfp_rate, behavior=test.behavior,
                                 behavior_names=list(test.behavior_names), behavior_rate=1.0 / test.bin_width)  # fmt: skip
    from offline.train.pipeline import demo_artifacts

    return demo_artifacts(config or str(Path(__file__).resolve().parent.parent / "configs" / "distill_tiny.toml"), out)


def live_decode(bundle: Bundle, rec: Recording, *, seconds: float, address: str, out: Path) -> dict:
    """Replay `rec` over LSL (another process), decode live, subscribe; return the scores."""
    from .runtime import RunConfig, Runtime
    from .sinks.zmq import Subscriber
    from pylsl import local_clock

    n = min(len(rec.data), int(seconds * rec.sampling_rate))
    clip = Recording(rec.data[:n], rec.sampling_rate, channel_names=rec.channel_names)
    path = out / "heldout.npz"
    clip.save(path)
    name = f"rtdecode-demo-{int(time.time() * 1e3) % 10**8}"
    cfg = RunConfig(stream=name, bundle=str(bundle.path), address=address, backend="auto", quiet=True,
                    resolve_timeout_s=30.0)  # fmt: skip
    sub = Subscriber(address, topics=("kinematics",))
    box: dict = {}
    rt_ready = threading.Event()

    def run_rt():
        try:
            box["rt"] = Runtime.from_config(cfg)
            rt_ready.set()
            box["summary"] = box["rt"].run()
        except BaseException as e:
            box["error"] = e
            rt_ready.set()

    th = threading.Thread(target=run_rt, daemon=True)
    th.start()
    proc = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "replay", str(path), "--name", name],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    t0 = float(proc.stdout.readline().split()[1])
    msgs, recv_t = [], []
    try:
        while True:
            got = sub.recv(timeout_ms=200)
            if got is not None:
                msgs.append(got[1])
                recv_t.append(local_clock())
            elif proc.poll() is not None and "error" not in box:
                # replay ended and nothing came for 200 ms: done
                break
            if "error" in box:
                raise box["error"]
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        rt_ready.wait(timeout=30)
        if "rt" in box:
            box["rt"].stop_event.set()
        th.join(timeout=10)
        sub.close()
    if "error" in box:
        raise box["error"]
    summary = box["summary"]
    offset = int(round((summary["first_sample_ts"] - t0) * rec.sampling_rate))
    online = np.stack([m["values"] for m in msgs])
    offline = decode_recording(bundle, clip.data[offset:])[: len(online)]
    bins0 = offset // bundle.chain.bin_samples
    truth = rec.behavior[bins0 : bins0 + len(online)] if rec.behavior is not None else None
    e2e = (np.array(recv_t) - np.array([m["t_lsl"] for m in msgs])) * 1e3
    skip = min(len(online) // 5, int(2.0 / bundle.chain.bin_width_s))  # filters and window warm up
    result = {
        "bins_decoded": len(online),
        "messages_missing": int(msgs[-1]["seq"] + 1 - len(msgs)),
        "max_abs_diff_online_vs_offline": float(np.abs(online - offline).max()),
        "latency_ms_bin_end_to_received": {
            "p50": float(np.percentile(e2e, 50)), "p99": float(np.percentile(e2e, 99)), "max": float(e2e.max())},
        "processing_ms": summary["lat_ms"],
        "overruns": summary["overruns"],
        "backend": summary["backend"],
    }  # fmt: skip
    if truth is not None and len(truth) > skip + 10:
        m = min(len(truth), len(online))
        r2 = r2_score(truth[skip:m], online[skip:m])
        result["online_r2"] = {k: float(v) for k, v in zip(bundle.output_names, r2)}
        result["online_r2_mean"] = float(np.mean(r2))
    return result


def main_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "LSLAPICFG" not in os.environ:  # as `rtdecode bench`: liblsl's log lines off and discovery on the
        from .bench import lsl_env  # local link, here and in the replay process (set before liblsl first
        # reads its config; a user's own LSLAPICFG wins)

        os.environ["LSLAPICFG"] = lsl_env(out)["LSLAPICFG"]
    t = time.time()
    bundle, heldout = _demo_bundle(out, args.config, args.quick)
    print(f"[demo] bundle ready in {time.time() - t:.0f} s: {bundle.describe()}", flush=True)
    print(f"[demo] bundle: {Path(bundle.path).resolve()} (rtdecode info / rtdecode run --bundle this folder)", flush=True)
    choice = (bundle.manifest.get("provenance") or {}).get("decoder_choice")
    if choice:  # which decoder the run found best on validation, and by how much
        vals = ", ".join(f"{k} {v:.3f}" for k, v in sorted(choice["val_r2"].items(), key=lambda kv: -kv[1]))
        print(f"[demo] decoder in the bundle: {choice['chosen']} (export.choose = {choice['choose']!r}; "
              f"validation R² {vals}; margin over {choice['runner_up']} {choice['margin']:+.3f})", flush=True)
        if choice.get("warning"):
            print(f"[demo] WARNING: {choice['warning']}", flush=True)
    res = live_decode(bundle, heldout, seconds=args.seconds, address=args.address, out=out)
    (out / "demo_result.json").write_text(json.dumps(res, indent=1))
    lat = res["latency_ms_bin_end_to_received"]
    print(f"[demo] decoded {res['bins_decoded']} bins live over LSL -> ZeroMQ ({res['backend']})")
    if "online_r2" in res:
        r2 = ", ".join(f"{k} {v:.2f}" for k, v in res["online_r2"].items())
        print(f"[demo] online R² against true behaviour: mean {res['online_r2_mean']:.2f} ({r2})")
    print(f"[demo] online == offline pass: max |diff| {res['max_abs_diff_online_vs_offline']:.2e}")
    print(f"[demo] latency, bin's last sample -> message received: p50 {lat['p50']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; deadline overruns {res['overruns']}")  # fmt: skip
    print(f"[demo] details: {out / 'demo_result.json'}")
    print(f"[demo] bundle: {Path(bundle.path).resolve()}")
    return 0
