"""LabRecorder records the raw LFP and `rtdecode run --lsl-out`'s decoded stream side by side;
check that each decoded sample sits on its bin's last raw sample, with the offline values.

    python tools/labrecorder/record_decoded.py /tmp/labrec/LabRecorderCLI --seconds 20 --work /tmp/labrec/decoded

Processes, as on a rig: `rtdecode replay` (the amplifier: a 4-channel recording at 1 kHz,
schedule stamps), `rtdecode run --lsl-out Decoded` (a 4-channel ridge bundle), and
LabRecorderCLI recording `Amp-LFP` and `Decoded`. Then, from the XDF alone (pyxdf; the stamps
as recorded, both streams being on this host's clock, and again synchronised as LabRecorder's
ClockOffset chunks say, where each stream's own offset measurements differ by some µs): every
decoded sample's stamp equals a raw sample's stamp to 0.1 period (the runtime's `t_lsl` is on its
own clock, the raw stamp plus the inlet's clock-offset estimate: some µs on one host), at a bin's end on the runtime's bin grid, one bin after the previous one;
its values equal the offline decode of the raw samples up to it (rtdecode.batch), to float32
precision. Prints the figures; exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recorder")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--work", default="/tmp/labrec/decoded")
    a = ap.parse_args()
    import pyxdf

    from rtdecode.batch import decode_recording
    from rtdecode.recording import Recording
    from tests.helpers import make_bundle, synthetic_recording

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = make_bundle(work / "bundle", n_channels=4, window_bins=10, highpass_hz=None, overwrite=True)
    lfp, _ = synthetic_recording(n_samples=int((a.seconds + 20) * 1000), n_channels=4, seed=5)
    Recording(lfp, 1000.0).save(work / "raw.npz")
    tag = f"{int(time.time()) % 100000}"
    raw_name, dec_name = f"Amp-LFP-{tag}", f"Decoded-{tag}"
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sk.getsockname()[1]}"
    py = sys.executable
    rep = subprocess.Popen([py, "-m", "rtdecode.cli", "replay", str(work / "raw.npz"), "--name", raw_name], stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    rep.stdout.readline()
    run = subprocess.Popen([py, "-m", "rtdecode.cli", "run", "--bundle", str(bundle.path), "--stream", raw_name, "--lsl-out",
                            dec_name, "--quiet", "--address", address])  # fmt: skip
    time.sleep(4.0)  # the runtime's outlet exists once it has connected
    xdf = work / "decoded.xdf"
    rec = subprocess.Popen([a.recorder, str(xdf), f'name="{raw_name}"', f'name="{dec_name}"'], stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    time.sleep(a.seconds)
    rec.communicate("\n", timeout=60)
    run.terminate()
    run.wait(20)
    rep.kill()
    rep.wait()
    by = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(xdf), synchronize_clocks=False, dejitter_timestamps=False)[0]}
    sync = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(xdf), synchronize_clocks=True, dejitter_timestamps=False)[0]}
    raw, dec = by[raw_name], by[dec_name]
    x, tx = np.asarray(raw["time_series"], np.float32), np.asarray(raw["time_stamps"])
    y, ty = np.asarray(dec["time_series"], np.float32), np.asarray(dec["time_stamps"])
    sx, sy = np.asarray(sync[raw_name]["time_stamps"]), np.asarray(sync[dec_name]["time_stamps"])
    j = np.clip(np.searchsorted(sx, sy), 1, len(sx) - 1)
    near = np.minimum(np.abs(sx[j] - sy), np.abs(sx[j - 1] - sy))[(sy > sx[0]) & (sy < sx[-1])]
    print(f"synchronised clocks: decoded stamp to the nearest raw stamp, max {near.max() * 1e6:.1f} µs")
    k0 = int(np.flatnonzero((lfp == x[0]).all(1))[0])  # the file's first raw sample in the recording
    # the runtime's first sample (before the recorder joined): from the first decoded stamp on the raw grid
    idx = np.searchsorted(tx, ty - 5e-4)  # the raw sample nearest each decoded stamp
    inside = (idx < len(tx)) & (ty >= tx[0])
    on_grid = inside.copy()
    on_grid[inside] = np.abs(tx[np.minimum(idx[inside], len(tx) - 1)] - ty[inside]) < 1e-4
    ends = k0 + idx[on_grid]  # recording sample index of each decoded sample's stamp
    print(f"as recorded: decoded stamp minus its raw sample's stamp {np.median(ty[on_grid] - tx[idx[on_grid]]) * 1e6:+.1f} µs "
          "(median; the runtime's clock-offset estimate)")
    steps = np.diff(ends)
    print(f"raw samples in the file {len(x)} (from recording sample {k0}); decoded samples {len(y)}, "
          f"{int(on_grid.sum())} of the {int(inside.sum())} inside the raw stream's span on a raw sample's stamp")
    print(f"decoded stamps one bin apart: {int((steps == 10).sum())} of {len(steps)}")
    # offline: decode the recording from the runtime's first sample; its bin j ends at start + 10 (j + 1) - 1
    best = None
    for start in range(0, 10):
        off = decode_recording(bundle, lfp[start:])
        j = (ends - start + 1) // 10 - 1
        ok = ((ends - start + 1) % 10 == 0) & (j >= 0) & (j < len(off))
        if ok.sum() == len(ends):
            d = float(np.abs(off[j] - y[on_grid]).max())
            best = (start, d) if best is None or d < best[1] else best
    ok = (near.max() < 1e-4 and on_grid.sum() == inside.sum() and (steps == 10).all() and best is not None
          and best[1] < 1e-4 * max(1.0, float(np.abs(y).max())))  # fmt: skip
    print(f"values against the offline decode (runtime started at sample {best[0] if best else '?'} mod 10): "
          f"max |diff| {best[1] if best else float('nan'):.3g} (|values| up to {np.abs(y).max():.3g})")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
