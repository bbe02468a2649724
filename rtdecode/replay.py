"""Play a `Recording` as an LSL outlet at its real rate, so anyone can drive the runtime.

The schedule is drift-free: sample k is stamped t0 + k / rate_eff (rate_eff = rate * speed)
and the chunk ending with it is pushed at that time, computed from the sample count and
never from the previous wake-up. The loop sleeps until each
deadline (no busy spin); a late wake-up is caught up by the next chunk, not accumulated.
Channel labels go into the stream's desc (``channels/channel/label``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import numpy as np
import pylsl

from .recording import Recording

log = logging.getLogger(__name__)


def make_info(recording: Recording, name: str, type: str, source_id: str) -> pylsl.StreamInfo:
    info = pylsl.StreamInfo(
        name, type, recording.n_channels, recording.sampling_rate, pylsl.cf_float32, source_id
    )
    labels = recording.channel_names or [f"ch{i}" for i in range(recording.n_channels)]
    chans = info.desc().append_child("channels")
    for label in labels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", type)
    info.desc().append_child_value("manufacturer", "rtdecode replay")
    return info


def replay(
    recording: Recording,
    *,
    name: str = "LFP",
    type: str = "LFP",
    source_id: str | None = None,
    chunk_size: int = 10,
    loop: bool = False,
    speed: float = 1.0,
    duration: float | None = None,
    stop_event: threading.Event | None = None,
    on_start: Callable[[dict], None] | None = None,
    stamping: str = "schedule",
    jitter_s: float = 0.003,
    on_end: Callable[[int], None] | None = None,
) -> int:
    """Push `recording` to a new LSL outlet; returns the number of samples pushed.

    Stops at the end of the recording (or loops), after `duration` seconds of wall time,
    or when `stop_event` is set. `on_start(info_dict)` is called once the outlet exists.
    stamping="arrival" stamps each chunk as acquisition software does: `local_clock()` at
    push time plus a uniform 0..jitter_s (liblsl back-dates the chunk's other samples),
    instead of the schedule time (speed 1 only).
    on_end(n_pushed), if given, is called after the last push while the outlet still exists:
    a caller that blocks in it keeps the stream open (`rtdecode replay --hold`), so that
    inlets can be closed first and never see the stream vanish."""
    if stamping not in ("schedule", "arrival"):
        raise ValueError(f"stamping must be 'schedule' or 'arrival', got {stamping!r}")
    jitter_rng = np.random.default_rng()
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not (speed > 0 and np.isfinite(speed)):
        raise ValueError(f"speed must be a finite number > 0, got {speed}")
    if duration is not None and not (duration > 0):
        raise ValueError(f"duration must be > 0 seconds (None: the whole recording), got {duration}")
    source_id = source_id or f"rtdecode-replay-{uuid.uuid4().hex[:12]}"
    info = make_info(recording, name, type, source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=max(1, int(np.ceil(10 / speed))))
    data = recording.data
    n_total = data.shape[0]
    rate_eff = recording.sampling_rate * speed
    limit = None if duration is None else int(round(duration * rate_eff))
    if not loop:
        limit = n_total if limit is None else min(limit, n_total)
    pushed = 0
    try:
        t0 = pylsl.local_clock()
        if on_start is not None:
            on_start(
                {"name": name, "type": type, "source_id": source_id, "n_channels": recording.n_channels,
                 "rate": recording.sampling_rate, "t0": t0}
            )
        pos = 0  # index into the recording
        while limit is None or pushed < limit:
            if stop_event is not None and stop_event.is_set():
                break
            c = chunk_size if limit is None else min(chunk_size, limit - pushed)
            due = t0 + (pushed + c - 1) / rate_eff  # when the chunk's last sample is 'acquired'
            delay = due - pylsl.local_clock()
            if delay > 0:
                if stop_event is not None:
                    if stop_event.wait(delay):
                        break
                else:
                    time.sleep(delay)
            if pos + c <= n_total:
                chunk = data[pos : pos + c]
                pos += c
            else:  # wrap around (loop=True)
                head = data[pos:]
                pos = c - head.shape[0]
                chunk = np.concatenate([head, data[:pos]])
            if pos == n_total:
                pos = 0
            if stamping == "arrival":  # the clock at push time, with the pusher's jitter
                outlet.push_chunk(chunk, pylsl.local_clock() + jitter_rng.uniform(0.0, jitter_s))
            elif speed == 1.0:  # liblsl back-dates the chunk's other samples by 1 / nominal rate
                outlet.push_chunk(chunk, due)
            else:  # stamp every sample: the nominal back-dating would not match the faster clock
                outlet.push_chunk(chunk, (t0 + (pushed + np.arange(c)) / rate_eff).tolist())
            pushed += c
        if stop_event is None or not stop_event.is_set():
            time.sleep(0.2)  # let the last chunk reach the inlets before the outlet goes
        if on_end is not None:
            on_end(pushed)
    finally:
        del outlet
    return pushed
