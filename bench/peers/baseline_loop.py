"""The loop a lab writes by hand: pylsl pull_chunk, scipy sosfilt per chunk, PyTorch eager, pyzmq + msgpack.

Deliberately the obvious code, not a straw man: pull_chunk(timeout=0) into Python lists
(no preallocated buffer) with a 1 ms sleep when nothing came, scipy.signal.sosfilt per
chunk with carried zi (the bundle's own coefficients), common-average reference, bin
means, z-scoring with the bundle's statistics, the same model's weights in PyTorch
eager (one thread), one msgpack dict per bin on a PUB socket. Started by `rtdecode bench`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pylsl
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Publisher, parse_args, stop_on_signals, torch_model, warm  # noqa: E402

from rtdecode.bundle import load_bundle  # noqa: E402  (reads the manifest: coefficients, statistics)


class ScipyChain:
    """The bundle's chain with scipy.signal.sosfilt per chunk: filters -> CAR -> branches -> bin mean -> z-score."""

    def __init__(self, spec):
        c = spec.n_channels
        self.spec = spec
        self.zi_pre = np.zeros((len(spec.pre_sos), 2, c))
        self.zi_br = [np.zeros((len(b.sos), 2, c)) for b in spec.branches]
        self.zi_sm = [np.zeros((len(b.smooth_sos), 2, c)) for b in spec.branches]
        self.acc = np.zeros(spec.n_features)
        self.count = 0

    def process(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(n, C) chunk -> [(index in chunk of the bin's last sample, features (F,) float32)]."""
        s = self.spec
        y = x.astype(np.float64)
        if len(s.pre_sos):
            y, self.zi_pre = signal.sosfilt(s.pre_sos, y, axis=0, zi=self.zi_pre)
        if s.car:
            y = y - y.mean(axis=1, keepdims=True)
        outs = []
        for i, b in enumerate(s.branches):
            w = y
            if len(b.sos):
                w, self.zi_br[i] = signal.sosfilt(b.sos, w, axis=0, zi=self.zi_br[i])
            if b.rectify == "square":
                w = w * w
            elif b.rectify == "abs":
                w = np.abs(w)
            if len(b.smooth_sos):
                w, self.zi_sm[i] = signal.sosfilt(b.smooth_sos, w, axis=0, zi=self.zi_sm[i])
            outs.append(w)
        feats = np.stack(outs, -1).reshape(len(x), -1)  # (n, C * branches), channel-major
        done = []
        start = 0
        while start < len(x):
            take = min(s.bin_samples - self.count, len(x) - start)
            self.acc += feats[start : start + take].sum(axis=0)
            self.count += take
            start += take
            if self.count == s.bin_samples:
                f = self.acc / s.bin_samples
                if s.normalized:
                    f = (f - s.norm_mean) / s.norm_std
                done.append((start - 1, f.astype(np.float32)))
                self.acc = np.zeros(s.n_features)
                self.count = 0
        return done


def main() -> int:
    a = parse_args(__doc__)
    stop = stop_on_signals()
    bundle = load_bundle(a.bundle)
    step = torch_model(a.bundle, a.torch_model, a.threads)
    warm(step, bundle.chain.n_features)
    pub = Publisher(a.address)  # bound once ready: the bench starts the stream when it can connect
    chain = ScipyChain(bundle.chain)
    pred = f"name='{a.stream}'" + (f" and source_id='{a.source_id}'" if a.source_id else "")
    infos = []
    while not infos and not stop.is_set():
        infos = pylsl.resolve_bypred(pred, 1, 1.0)
    if stop.is_set():  # stopped before the stream was found: say so, and close the socket (a context
        pub.final({"first_sample_ts": None, "samples": 0, "published": 0, "bins": 0})  # with an open socket
        pub.close()  # never terminates: the process would hang at exit)
        return 0
    inlet = pylsl.StreamInlet(infos[0], max_buflen=1)
    inlet.open_stream(timeout=10)
    offset = inlet.time_correction(timeout=5)
    seq = samples = 0
    first_ts = first_raw = None
    last_tc = time.monotonic()
    try:
        while not stop.is_set():
            chunk, ts = inlet.pull_chunk(timeout=0.0)
            if not ts:
                time.sleep(0.001)
                continue
            t_arrive = pylsl.local_clock()
            x = np.asarray(chunk, dtype=np.float32)
            if first_ts is None:
                first_raw = ts[0]  # as the outlet stamped it: the harness finds it among the stamps sent
                first_ts = ts[0] + offset
            samples += len(ts)
            bins = chain.process(x)
            t_chain = pylsl.local_clock()
            chain_ms = (t_chain - t_arrive) * 1e3
            for idx, f in bins:
                t_i = pylsl.local_clock()
                y = step(f)
                t_pub = pylsl.local_clock()
                pub.kinematics(seq, ts[idx] + offset, t_pub, (t_pub - t_arrive) * 1e3, y, chain_ms, (t_pub - t_i) * 1e3)
                seq += 1
            if time.monotonic() - last_tc > 1.0:
                offset = inlet.time_correction()
                last_tc = time.monotonic()
    finally:
        inlet.close_stream()
        pub.final({"first_sample_ts": first_ts, "first_sample_raw_ts": first_raw, "samples": samples,
                   "published": seq, "bins": seq})  # fmt: skip
        time.sleep(0.1)
        pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
