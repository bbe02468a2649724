"""`rtdecode demo`: the whole product on an embedded default, on one machine.

1. simulate a small multi-session dataset (offline.data.simulate);
2. train the spike teacher, distil the LFP student, write the bundle (offline.train.pipeline,
   configs/distill_tiny.toml), or with --quick fit a lagged ridge LFP decoder instead;
3. replay a held-out session as a real LSL outlet in another process;
4. decode it live with the runtime (this process) and subscribe over ZeroMQ (a thread);
5. print the online R² against the true behaviour, the match with the offline pass,
   and the latency from each bin's last sample to its message being received.

The online R² is computed from the published ZeroMQ messages alone: each message's `t_lsl`
(its bin's last sample, on the replay's clock: sample k is stamped t0 + k / rate) places it
in the held-out session, so a dropped or skipped message cannot shift the others, and it is
scored against the session's true behaviour at that bin (`align_online`). Bins flagged
WARMUP (the model window not yet full, or the chain's filters not yet settled: ~14.8 s for
the 0.05 Hz high-pass) are left out of the R², as a client must leave them out; the demo
says how many.
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

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"
FLAG_WARMUP = 16  # rtdecode.sinks.zmq.FLAG_WARMUP (not imported here: the sink module imports zmq)


def align_online(t_lsl: np.ndarray, flags: np.ndarray, *, t0: float, fs: float, bin_samples: int, offset: int,
                 n_truth: int) -> dict:  # fmt: skip
    """Place published bins in the replayed recording, from their messages alone.

    t_lsl: each message's `t_lsl` (its bin's last sample; the replay stamps sample k with
    t0 + k / fs); flags: each message's flags; offset: the first sample the runtime decoded
    (its bins are offset.. in steps of bin_samples). Returns, per message: `end` (the sample
    index of its bin's last sample), `k` (the bin's index in an offline decode of
    recording[offset:]), `q` (its position on the behaviour's bin grid: a training bin b ends
    at sample (b + 1) * bin_samples - 1 and is paired with behaviour b, so q = (end + 1) /
    bin_samples - 1, fractional when offset is not a multiple of bin_samples) and `scored`
    (not WARMUP, and q within the behaviour's n_truth bins)."""
    t_lsl = np.asarray(t_lsl, np.float64)
    flags = np.asarray(flags, np.int64)
    end = np.rint((t_lsl - t0) * fs).astype(np.int64)
    rel = end - offset + 1
    if np.any(rel % bin_samples) or np.any(rel < bin_samples):
        bad = int(np.flatnonzero((rel % bin_samples != 0) | (rel < bin_samples))[0])
        raise ValueError(f"message {bad}: its bin ends at sample {end[bad]}, not on the runtime's bin grid from sample "
                         f"{offset} (bins of {bin_samples}): the messages' t_lsl do not follow the replay's clock")  # fmt: skip
    k = rel // bin_samples - 1
    q = (end + 1) / bin_samples - 1.0
    scored = ((flags & FLAG_WARMUP) == 0) & (q >= 0) & (q <= n_truth - 1)
    return {"end": end, "k": k, "q": q, "scored": scored}


def truth_at(behavior: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Behaviour (n_bins, n_out) at fractional bin positions q (linear interpolation; exact
    on whole bins)."""
    grid = np.arange(len(behavior))
    return np.stack([np.interp(q, grid, behavior[:, j]) for j in range(behavior.shape[1])], 1)


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
                                 behavior_names=list(test.behavior_names), behavior_rate=1.0 / test.bin_width,
                                 meta={"session": f"{test.session_id} (recording seed 1)",
                                       "role": "another recording of the training day"})  # fmt: skip
    from offline.train.pipeline import demo_artifacts

    return demo_artifacts(config or str(DEFAULT_CONFIG), out)


def live_decode(bundle: Bundle, rec: Recording, *, seconds: float, address: str, out: Path, run_kw: dict | None = None,
                arrays: dict | None = None) -> dict:  # fmt: skip
    """Replay `rec` over LSL (another process), decode live, subscribe; return the scores.

    run_kw: more RunConfig fields (e.g. renormalize_s); arrays: if given, filled with the
    per-message `values`, `flags`, `q` (position on the behaviour's bin grid) and `scored`,
    so that a caller can score something else on exactly the bins scored online."""
    from .runtime import RunConfig, Runtime
    from .sinks.zmq import Subscriber
    from pylsl import local_clock

    n = min(len(rec.data), int(seconds * rec.sampling_rate))
    clip = Recording(rec.data[:n], rec.sampling_rate, channel_names=rec.channel_names)
    path = out / "heldout.npz"
    clip.save(path)
    name = f"rtdecode-demo-{int(time.time() * 1e3) % 10**8}"
    cfg = RunConfig(stream=name, bundle=str(bundle.path), address=address, backend="auto", quiet=True,
                    resolve_timeout_s=30.0, **(run_kw or {}))  # fmt: skip
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
    # --hold: the stream stays open after its last sample until stdin closes, so the runtime
    # is stopped first and never reports the end of the replay as a lost stream
    proc = subprocess.Popen([sys.executable, "-m", "rtdecode.cli", "replay", str(path), "--name", name, "--hold"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    t0 = float(proc.stdout.readline().split()[1])
    ended = threading.Event()

    def watch_end():
        for line in proc.stdout:
            if line.startswith("END"):
                ended.set()
        ended.set()  # the process is gone: nothing more will come either

    threading.Thread(target=watch_end, daemon=True).start()
    msgs, recv_t = [], []
    try:
        while True:
            got = sub.recv(timeout_ms=200)
            if got is not None:
                msgs.append(got[1])
                recv_t.append(local_clock())
            elif ended.is_set() and "error" not in box:
                # the replay's last sample is out and nothing came for 200 ms: done
                break
            if "error" in box:
                raise box["error"]
    finally:
        rt_ready.wait(timeout=30)
        if "rt" in box:
            box["rt"].stop_event.set()
        th.join(timeout=10)
        sub.close()
        if not ended.is_set():  # an error or Ctrl-C before the end: the replay is not needed
            proc.terminate()
        proc.stdin.close()  # now the replay may close its stream
        proc.wait(timeout=30)
        proc.stdout.close()
    if "error" in box:
        raise box["error"]
    summary = box["summary"]
    if not msgs:
        raise RuntimeError("the runtime published no kinematics message during the replay")
    offset = int(round((summary["first_sample_ts"] - t0) * rec.sampling_rate))
    values = np.stack([m["values"] for m in msgs])
    flags = np.array([m["flags"] for m in msgs])
    n_truth = len(rec.behavior) if rec.behavior is not None else 0
    pos = align_online(np.array([m["t_lsl"] for m in msgs]), flags, t0=t0, fs=rec.sampling_rate,
                       bin_samples=bundle.chain.bin_samples, offset=offset, n_truth=n_truth)  # fmt: skip
    offline = decode_recording(bundle, clip.data[offset:])
    ok = pos["k"] < len(offline)
    e2e = (np.array(recv_t) - np.array([m["t_lsl"] for m in msgs])) * 1e3
    result = {
        "bins_decoded": len(msgs),
        "messages_missing": int(msgs[-1]["seq"] + 1 - len(msgs)),
        "max_abs_diff_online_vs_offline": float(np.abs(values[ok] - offline[pos["k"][ok]]).max()) if ok.any() else float("nan"),
        "latency_ms_bin_end_to_received": {
            "p50": float(np.percentile(e2e, 50)), "p99": float(np.percentile(e2e, 99)), "max": float(e2e.max())},
        "processing_ms": summary["lat_ms"],
        "overruns": summary["overruns"],
        "backend": summary["backend"],
        "first_sample": offset,
        "bins_warmup": int(np.count_nonzero(flags & FLAG_WARMUP)),
        "bins_scored": int(np.count_nonzero(pos["scored"])) if n_truth else 0,
    }  # fmt: skip
    if summary.get("renormalized") is not None:
        result["renormalized"] = summary["renormalized"]
    if arrays is not None:
        arrays.update(values=values, flags=flags, q=pos["q"], scored=pos["scored"], summary=summary)
    sc = pos["scored"]
    if n_truth and np.count_nonzero(sc) > 10:
        truth = truth_at(np.asarray(rec.behavior, np.float64), pos["q"][sc])
        r2 = r2_score(truth, values[sc])
        result["online_r2"] = {k: float(v) for k, v in zip(bundle.output_names, r2)}
        result["online_r2_mean"] = float(np.mean(r2))
        result["scored_seconds"] = [float(pos["end"][sc][0] / rec.sampling_rate), float(pos["end"][sc][-1] / rec.sampling_rate)]
    return result


def main_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "LSLAPICFG" not in os.environ:  # as `rtdecode bench`: liblsl's log lines off and discovery on the
        from .bench import lsl_env  # local link, here and in the replay process (set before liblsl first
        # reads its config; a user's own LSLAPICFG wins)

        os.environ["LSLAPICFG"] = lsl_env(out)["LSLAPICFG"]
    t_start = t = time.time()
    bundle, heldout = _demo_bundle(out, args.config, args.quick)
    t_bundle = time.time() - t
    print(f"[demo] bundle ready in {t_bundle:.0f} s: {bundle.describe()}", flush=True)
    print(f"[demo] bundle: {Path(bundle.path).resolve()} (rtdecode info / rtdecode run --bundle this folder)", flush=True)
    prov = bundle.manifest.get("provenance") or {}
    choice = prov.get("decoder_choice")
    if choice:  # which decoder the run found best on validation, and by how much
        vals = ", ".join(f"{k} {v:.3f}" for k, v in sorted(choice["val_r2"].items(), key=lambda kv: -kv[1]))
        print(f"[demo] decoder in the bundle: {choice['chosen']} (export.choose = {choice['choose']!r}; "
              f"validation R² {vals}; margin over {choice['runner_up']} {choice['margin']:+.3f})", flush=True)
        if choice.get("warning"):
            print(f"[demo] WARNING: {choice['warning']}", flush=True)
        unseen = [r for r in choice.get("shipped") or [] if r.get("role") == "unseen"]
        names = list(bundle.output_names)
        for r in unseen:  # the run's own figure for this decoder, as shipped, on the held-out day's test block
            r2 = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, r["r2"]))
            print(f"[demo] the run's report, this decoder as shipped on {r['session']}'s test block (its last "
                  f"{100 * (prov.get('config') or {}).get('data', {}).get('test_fraction', 0.2):.0f} %, not the part "
                  f"replayed below): {r2}", flush=True)  # fmt: skip
        if choice.get("transfer_warning"):
            print(f"[demo] WARNING: {choice['transfer_warning']}", flush=True)
    elif prov.get("demo") == "quick":
        print("[demo] decoder in the bundle: ridge (--quick: a lagged ridge on the LFP features, no distillation)", flush=True)
    meta = heldout.meta or {}
    role = {"held_out": "held out: no decoder saw it", "train": "a training session: data.held_out_sessions = 0"}
    print(f"[demo] replaying {args.seconds:g} s of session {meta.get('session', '?')} "
          f"({role.get(meta.get('role'), meta.get('role', '?'))}) over LSL; decoded values on {args.address} "
          "(`python tools/subscribe.py` in another shell shows them)", flush=True)  # fmt: skip
    t = time.time()
    res = live_decode(bundle, heldout, seconds=args.seconds, address=args.address, out=out)
    t_live = time.time() - t
    res["wall_s"] = {"bundle": round(t_bundle, 1), "live": round(t_live, 1), "total": round(time.time() - t_start, 1)}
    (out / "demo_result.json").write_text(json.dumps(res, indent=1))
    lat = res["latency_ms_bin_end_to_received"]
    print(f"[demo] decoded {res['bins_decoded']} bins live over LSL -> ZeroMQ ({res['backend']})")
    span = res.get("scored_seconds")
    if "online_r2" in res:
        r2 = ", ".join(f"{k} {v:.2f}" for k, v in res["online_r2"].items())
        print(f"[demo] online R² against true behaviour: mean {res['online_r2_mean']:.2f} ({r2}); from the published "
              f"messages, {res['bins_scored']} bins ({span[0]:.1f}-{span[1]:.1f} s of the session), the "
              f"{res['bins_warmup']} WARMUP bins left out")  # fmt: skip
    else:
        print(f"[demo] no online R²: {res['bins_scored']} bins past WARMUP ({res['bins_warmup']} WARMUP bins; the chain "
              "settles in ~15 s): replay longer (--duration)")  # fmt: skip
    print(f"[demo] online == offline pass: max |diff| {res['max_abs_diff_online_vs_offline']:.2e}")
    print(f"[demo] latency, bin's last sample -> message received: p50 {lat['p50']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms; deadline overruns {res['overruns']}")  # fmt: skip
    w = res["wall_s"]
    print(f"[demo] wall time: {w['total']:.0f} s (bundle {w['bundle']:.0f} s, live replay and scoring {w['live']:.0f} s)")
    print(f"[demo] details: {out / 'demo_result.json'}")
    print(f"[demo] bundle: {Path(bundle.path).resolve()}")
    return 0
