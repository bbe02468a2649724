"""The runtime in a thread of the test process and a real ZeroMQ subscriber in the test
thread: the harness the online end-to-end and fault tests share."""

from __future__ import annotations

import threading
import time

from rtdecode.runtime import RunConfig, Runtime
from rtdecode.sinks.zmq import Subscriber


def free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Harness:
    """Runtime in a thread, subscriber in the test thread."""

    def __init__(self, bundle, stream: str, backend_wrapper=None, **cfg):
        self.address = free_address()
        cfg = {"quiet": True, "resolve_timeout_s": 20.0, "status_interval_s": 0.2, **cfg}
        self.cfg = RunConfig(stream=stream, bundle=str(bundle.path), address=self.address, backend="onnxruntime",
                             **cfg)  # fmt: skip
        self.sub = Subscriber(self.address, topics=("kinematics", "status"))
        self.msgs: list[dict] = []
        self.status: list[dict] = []
        self.summary: dict | None = None
        self.error: BaseException | None = None
        self.rt: Runtime | None = None
        self.backend_wrapper = backend_wrapper  # fault injection: wraps the real backend
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            rt = Runtime.from_config(self.cfg)
            if self.backend_wrapper is not None:
                rt.backend = self.backend_wrapper(rt.backend)
            self.rt = rt
            self.summary = self.rt.run()
        except BaseException as e:  # surfaced in the test thread
            self.error = e

    def start(self):
        self.thread.start()
        return self

    def collect(self, until, timeout: float):
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not until(self):
            got = self.sub.recv(timeout_ms=100)
            if got is None:
                if self.error:
                    raise self.error
                continue
            topic, msg = got
            (self.msgs if topic == "kinematics" else self.status).append(msg)

    def stop(self):
        if self.rt is not None:
            self.rt.stop_event.set()
        self.thread.join(timeout=10)
        self.collect(lambda h: False, timeout=0.3)
        self.sub.close()
        if self.error:
            raise self.error
        return self.summary


def run_outlet(bundle, prefix: str, *, channels: int = 4, wait_s: float = 20.0, harness: dict | None = None,
               **outlet) -> tuple[Harness, dict, float]:  # fmt: skip
    """The runtime (`Harness(bundle, name, **harness)`) on a scripted outlet of `channels`
    channels (tests/conftest.py start_outlet(**outlet)) until the outlet ends, at most `wait_s`;
    returns the harness, the summary and the outlet's t0 (sample k is stamped t0 + k / rate)."""
    from tests.conftest import start_outlet, unique_name

    name = unique_name(prefix)
    h = Harness(bundle, name, **(harness or {})).start()
    out = start_outlet(name, channels=channels, **outlet)
    try:
        h.collect(lambda h: out.proc.poll() is not None, timeout=wait_s)
    finally:
        out.kill()
        summary = h.stop()
    return h, summary, out.t0
