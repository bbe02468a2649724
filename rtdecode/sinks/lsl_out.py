"""Decoded output on LSL as well (`rtdecode run --lsl-out NAME`), so that LabRecorder
stores it beside the raw stream, on the same clock.

One float32 channel per output (name, unit and type in the stream's desc,
``channels/channel/{label,unit,type}``), nominal rate one sample per bin, source_id
``rtdecode-<NAME>``. Every sample is stamped with its bin's ``t_lsl``: the dejittered,
clock-corrected LSL time of the bin's last input sample, the same value as the ZeroMQ
message's ``t_lsl``. A recording that holds both streams therefore lines each decoded
value up with the input sample it was decoded from, not with when it was computed.

Pushing never blocks: liblsl copies the sample into each consumer's send queue (a
consumer that does not read loses the oldest samples, after ``max_buffered_s``), and the
push goes through a preallocated ctypes buffer, so nothing is allocated per bin.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pylsl


class LslOutlet:
    """A float32 LSL outlet for decoded bins: `push(values, t_lsl)`."""

    def __init__(self, name: str, output_names, output_units=None, bin_rate: float = 100.0, *,
                 type: str = "Decoded", source_id: str | None = None, bundle: str = "",
                 max_buffered_s: float = 10.0):  # fmt: skip
        if not name:
            raise ValueError("--lsl-out needs a stream name, e.g. --lsl-out Decoded")
        names = [str(n) for n in output_names]
        units = [str(u) for u in (output_units or [""] * len(names))]
        self.name = name
        self.n = len(names)
        info = pylsl.StreamInfo(name, type, self.n, float(bin_rate), pylsl.cf_float32, source_id or f"rtdecode-{name}")
        chans = info.desc().append_child("channels")
        for label, unit in zip(names, units):
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", "decoded")
        info.desc().append_child_value("manufacturer", "rtdecode")
        if bundle:
            info.desc().append_child_value("bundle", bundle)
        self._outlet = pylsl.StreamOutlet(info, chunk_size=1, max_buffered=max(1, int(np.ceil(max_buffered_s))))
        self._buf = (ctypes.c_float * self.n)()
        self._view = np.frombuffer(self._buf, dtype=np.float32)
        # liblsl's lsl_push_sample_ftp (outlet, float*, double timestamp, int pushthrough), as pylsl
        # binds it, called with the preallocated buffer: no per-bin list or ctypes array
        self._push = self._outlet.do_push_sample
        self._obj = self._outlet.obj
        self._ptr = self._buf
        self.pushed = 0
        self.errors = 0

    def push(self, values: np.ndarray, t_lsl: float) -> bool:
        """One decoded bin, stamped t_lsl. Never raises on the hot path (errors are counted)."""
        try:
            np.copyto(self._view, values.reshape(-1)[: self.n], casting="unsafe")
            if self._push(self._obj, self._ptr, ctypes.c_double(t_lsl), ctypes.c_int(1)) < 0:
                self.errors += 1
                return False
        except Exception:
            self.errors += 1
            return False
        self.pushed += 1
        return True

    def have_consumers(self) -> bool:
        return bool(self._outlet.have_consumers())

    def close(self) -> None:
        outlet, self._outlet = self._outlet, None
        if outlet is not None:
            del outlet
