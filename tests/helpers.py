"""Small builders shared by tests: a synthetic recording and a real bundle (ridge + ONNX)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def synthetic_recording(n_samples: int = 20_000, n_channels: int = 8, fs: float = 1000.0, seed: int = 0):
    """LFP that linearly carries two slow behavioural signals, plus noise; behaviour per 10 ms bin."""
    mixing = np.random.default_rng(1234).standard_normal((2, n_channels))  # the same "electrodes" every seed
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / fs + seed * 7.3
    beh = np.stack([np.sin(2 * np.pi * 0.5 * t), np.cos(2 * np.pi * 0.3 * t)], 1)
    lfp = (beh @ mixing * 20 + rng.standard_normal((n_samples, n_channels)) * 5).astype(np.float32)
    bin_samples = int(fs * 0.01)
    behavior = beh[bin_samples - 1 :: bin_samples][: n_samples // bin_samples].astype(np.float32)
    return lfp, behavior


def make_bundle(path, n_channels: int = 8, fs: float = 1000.0, window_bins: int = 10, seed: int = 0, **kw):
    from offline.linear import fit_linear_bundle

    lfp, beh = synthetic_recording(n_channels=n_channels, fs=fs, seed=seed)
    return fit_linear_bundle(lfp, fs, beh, ["vel_x", "vel_y"], path, window_bins=window_bins, line_freq=None, **kw)




def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + bytes([n])
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes, stream_id: int | None = None) -> bytes:
    body = struct.pack("<H", tag) + (b"" if stream_id is None else struct.pack("<I", stream_id)) + content
    return _varlen(len(body)) + body


def write_xdf(path: Path, streams: list[dict], per_chunk: int = 64) -> Path:
    """A minimal XDF writer (the format: https://github.com/sccn/xdf/wiki/Specifications; pyxdf
    only reads). streams: dicts of id, name, type, rate (0: irregular), fmt ("float32",
    "double64", "string"), data (n, ch) (a list of lists of str for strings), times (n,),
    labels or None, and clock_offsets: [(collection_time, offset_s), ...] for a stream from a
    host whose clock is offset_s behind the recorder's (LabRecorder's ClockOffset chunks)."""
    out = [b"XDF:", _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    for s in streams:
        ch = len(s["data"][0])
        labels = "".join(f"<channel><label>{lb}</label><unit>microvolts</unit></channel>" for lb in s.get("labels") or [])
        hdr = (f'<?xml version="1.0"?><info><name>{s["name"]}</name><type>{s["type"]}</type>'
               f'<channel_count>{ch}</channel_count><nominal_srate>{s["rate"]}</nominal_srate>'
               f'<channel_format>{s["fmt"]}</channel_format><source_id>src-{s["id"]}</source_id>'
               f'<created_at>100.0</created_at><desc><channels>{labels}</channels></desc></info>')  # fmt: skip
        out.append(_chunk(2, hdr.encode(), s["id"]))
    longest = max(len(s["data"]) for s in streams)
    for lo in range(0, longest, per_chunk):  # samples of the streams interleaved, as a recorder writes them
        for s in streams:
            rows = range(lo, min(lo + per_chunk, len(s["data"])))
            if not rows:
                continue
            body = [_varlen(len(rows))]
            for k in rows:
                body.append(b"\x08" + struct.pack("<d", float(s["times"][k])))
                if s["fmt"] == "string":
                    body += [_varlen(len(v.encode())) + v.encode() for v in s["data"][k]]
                else:
                    body.append(np.asarray(s["data"][k], dtype="<f4" if s["fmt"] == "float32" else "<f8").tobytes())
            out.append(_chunk(3, b"".join(body), s["id"]))
    for s in streams:
        for t, off in s.get("clock_offsets") or []:
            out.append(_chunk(4, struct.pack("<dd", float(t), float(off)), s["id"]))
    for s in streams:
        ft = (f'<?xml version="1.0"?><info><first_timestamp>{s["times"][0]}</first_timestamp><last_timestamp>'
              f'{s["times"][-1]}</last_timestamp><sample_count>{len(s["data"])}</sample_count></info>')  # fmt: skip
        out.append(_chunk(6, ft.encode(), s["id"]))
    path.write_bytes(b"".join(out))
    return path
