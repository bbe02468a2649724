"""mne-lsl's StreamLSL with its online filters feeding the same model (PyTorch eager), pyzmq + msgpack out.

The usual mne-lsl pattern: `StreamLSL(bufsize, name=..., source_id=...).connect()`
(acquisition in a background thread every 1 ms), `notch_filter` at the bundle's line
frequency and harmonics and a causal IIR `filter` (Butterworth SOS, the bundle's
high-pass and low-pass) applied by mne-lsl as data arrive; the loop polls
`n_new_samples`, takes the new samples with `get_data`, applies common-average
reference, bin means and the bundle's z-scoring, runs the model, publishes.
mne-lsl designs its own filters, so the features are close to, not identical with,
the bundle's chain: this peer is for latency and CPU, not for decoding accuracy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Publisher, parse_args, stop_on_signals, torch_model, warm  # noqa: E402

from rtdecode.bundle import load_bundle  # noqa: E402


def main() -> int:
    a = parse_args(__doc__)
    stop = stop_on_signals()
    from mne_lsl.lsl import local_clock
    from mne_lsl.stream import StreamLSL

    bundle = load_bundle(a.bundle)
    spec = bundle.chain
    d = spec.design
    step = torch_model(a.bundle, a.torch_model, a.threads)
    warm(step, spec.n_features)
    pub = Publisher(a.address)  # bound once ready: the bench starts the stream when it can connect
    bufsize = 0.5  # s
    stream = StreamLSL(bufsize=bufsize, name=a.stream, source_id=a.source_id)
    t_end = time.monotonic() + 30
    while not stop.is_set():
        try:
            stream.connect(acquisition_delay=0.001, timeout=2)
            break
        except RuntimeError:
            if time.monotonic() > t_end:
                raise
    if stop.is_set():  # stopped before the stream was found: close the socket, or the process hangs at exit
        pub.final({"first_sample_ts": None, "samples": 0, "published": 0, "bins": 0})
        pub.close()
        return 0
    sos_params = {"order": d.get("filter_order", 4), "ftype": "butter", "output": "sos"}
    if d.get("line_freq"):
        for h in range(1, d.get("n_harmonics", 1) + 1):
            if d["line_freq"] * h < spec.fs / 2 * 0.98:
                stream.notch_filter(d["line_freq"] * h, iir_params={"order": 2, "ftype": "butter", "output": "sos"},
                                    verbose="ERROR")  # fmt: skip
    stream.filter(d.get("highpass_hz"), d.get("lowpass_hz"), iir_params=sos_params, verbose="ERROR")
    bs = spec.bin_samples
    acc = np.zeros(spec.n_channels)
    count = 0
    last_ts = -np.inf
    seq = samples = 0
    first_ts = None
    try:
        while not stop.is_set():
            n_new = stream.n_new_samples
            if n_new == 0:
                time.sleep(0.0005)
                continue
            t_arrive = local_clock()
            data, ts = stream.get_data(winsize=min(n_new + 50, bufsize * spec.fs) / spec.fs)  # (C, n) filtered, timestamps
            # the samples after the last one taken, found by its stamp (stamps at push time are not
            # monotonic across chunks, so `ts > last_ts` would drop samples); the window is wider
            # than n_new in case the acquisition thread added some meanwhile
            hit = np.flatnonzero(ts == last_ts)
            start = int(hit[-1]) + 1 if hit.size else max(0, ts.size - n_new)
            x, tn = data[:, start:].T, ts[start:]
            if not len(tn):
                continue
            last_ts = tn[-1]
            if first_ts is None:
                first_ts = float(tn[0])
            samples += len(tn)
            x = x - x.mean(axis=1, keepdims=True)  # common-average reference
            done = []
            start = 0
            while start < len(x):
                take = min(bs - count, len(x) - start)
                acc += x[start : start + take].sum(axis=0)
                count += take
                start += take
                if count == bs:
                    f = ((acc / bs - spec.norm_mean) / spec.norm_std).astype(np.float32)
                    done.append((start - 1, f))
                    acc = np.zeros(spec.n_channels)
                    count = 0
            chain_ms = (local_clock() - t_arrive) * 1e3
            for idx, f in done:
                t_i = local_clock()
                y = step(f)
                t_pub = local_clock()
                pub.kinematics(seq, tn[idx], t_pub, (t_pub - t_arrive) * 1e3, y, chain_ms, (t_pub - t_i) * 1e3)
                seq += 1
    finally:
        stream.disconnect()
        pub.final({"first_sample_ts": first_ts, "samples": samples, "published": seq, "bins": seq})
        time.sleep(0.1)
        pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
