"""ZeroMQ output: a PUB socket that never blocks the loop, and the versioned message schema.

Every message is two frames: ``[topic, msgpack map]``. Topics:

=============  ==========================================================================
``kinematics`` one per decoded bin: ``v, seq, t_lsl, t_pub, lat_ms, flags, values, names``
``status``     about once a second: telemetry, ``final: true`` in the last one, and the
               hello map again under ``hello`` (so late subscribers learn names and units)
``hello``      once at start: output names and units, bundle and stream information
=============  ==========================================================================

Kinematics fields (schema version 1, docs/schema.md is the reference):

- ``v`` int: schema version (``SCHEMA_VERSION``); `decode` refuses other versions.
- ``seq`` int: bin sequence number, +1 per published bin; a jump means the subscriber
  missed messages (PUB drops per subscriber when its queue is full).
- ``t_lsl`` float: LSL timestamp of the bin's last sample, clock-corrected to the
  publisher's `pylsl.local_clock()`.
- ``t_pub`` float: `pylsl.local_clock()` when the message was handed to ZeroMQ.
- ``lat_ms`` float: processing latency of this bin (the pull that completed it had its first
  sample in hand -> publish; the source's dejittering and gap checks included), in ms.
- ``age_ms`` float: age of the bin at publication: ``t_pub - t_lsl`` in ms (the bin's last
  sample to publish, on one clock). The deadline and OVERRUN go by this one.
- ``flags`` int: bitmask, table below.
- ``values`` bytes: float32 little-endian, one per output (``np.frombuffer(b, "<f4")``).
- ``chain_ms``, ``infer_ms`` float (optional): the parts of ``lat_ms`` spent in the signal
  chain (the call on the chunk that completed the bin) and in this bin's window push and
  inference; ``rtdecode bench`` uses them to split the latency.
- ``names`` list of str: output names, in the order of ``values`` (present once
  `publish_hello` named them). They cost 0.16 µs and ~17 bytes per message for four
  outputs, and make every message readable on its own, without waiting for a status.

Flags:

=====  ====================  ==============================================================
bit    name                  meaning
=====  ====================  ==============================================================
1      FLAG_GAP              samples were missing before or inside this bin (filled)
2      FLAG_REPAIRED         non-finite samples in this bin were replaced
4      FLAG_OVERRUN          this bin missed its deadline (age_ms above it)
8      FLAG_RECONNECTED      bins after a reconnect or a chain reset (not a fresh start)
16     FLAG_WARMUP           the model window is not yet full, or the filters not yet settled
32     FLAG_STALE            the newest sample was older than the source's stale limit
64     FLAG_CLOCK_RESET      the source's timestamps jumped backwards
128    FLAG_TIME_JITTER      reserved, no longer set (jitter is absorbed by the dejittered clock)
256    FLAG_FLAT_CHANNEL     a channel did not change over the last status period (dead or railed)
512    FLAG_INPUT_SCALE      the input's amplitude is not the training data's (volts for microvolts?)
1024   FLAG_RATE             the stream does not deliver the rate it announces (faster, or losing)
=====  ====================  ==============================================================

Never blocking: sends use ``zmq.NOBLOCK``. A PUB socket drops a message for a subscriber
whose queue (``sndhwm``) is full, silently and per subscriber, so a slow logger never
costs the task controller anything; subscribers see the loss as a jump in ``seq``
(`Subscriber.missed`). ``sndhwm`` is 500 messages (5 s of 10 ms bins), down from 1000: it
must hold the largest legitimate burst (a filled gap of up to 50 bins, plus up to 30
bins held while a jittery gap's size is settled, plus a stall's backlog of up to 50)
with room for ZeroMQ's I/O thread being starved of CPU; measured on a loaded 2-core
machine, 10 lost 14 of the 20 bins of one filled gap and 100 lost 6 bins in a 60 s soak.
Freshness does not come from this queue (the kernel's socket buffers hold thousands of
messages anyway) but from the subscriber side: a task loop that must act on the newest bin
calls `Subscriber.latest()`, which drains what is queued and returns the newest kinematics.
With ``nodrop=True`` the socket is an XPUB with ``XPUB_NODROP``:
a full queue then raises ``zmq.Again``, counted in ``dropped`` (but a slow subscriber then
costs every subscriber that message). ``dropped`` also counts messages that could not be
encoded or sent for any other reason; publish never raises on the hot path.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import PurePath

import msgpack
import numpy as np
import zmq

SCHEMA_VERSION = 1
TOPIC_KINEMATICS = b"kinematics"
TOPIC_STATUS = b"status"
TOPIC_HELLO = b"hello"
TOPICS = (TOPIC_KINEMATICS, TOPIC_STATUS, TOPIC_HELLO)

FLAG_GAP = 1
FLAG_REPAIRED = 2
FLAG_OVERRUN = 4
FLAG_RECONNECTED = 8
FLAG_WARMUP = 16
FLAG_STALE = 32
FLAG_CLOCK_RESET = 64
FLAG_TIME_JITTER = 128
FLAG_FLAT_CHANNEL = 256
FLAG_INPUT_SCALE = 512
FLAG_RATE = 1024
FLAG_NAMES = {
    FLAG_GAP: "GAP",
    FLAG_REPAIRED: "REPAIRED",
    FLAG_OVERRUN: "OVERRUN",
    FLAG_RECONNECTED: "RECONNECTED",
    FLAG_WARMUP: "WARMUP",
    FLAG_STALE: "STALE",
    FLAG_FLAT_CHANNEL: "FLAT_CHANNEL",
    FLAG_CLOCK_RESET: "CLOCK_RESET",
    FLAG_TIME_JITTER: "TIME_JITTER",
    FLAG_INPUT_SCALE: "INPUT_SCALE",
    FLAG_RATE: "RATE",
}

_KIN_FIELDS = {"seq": int, "t_lsl": float, "t_pub": float, "lat_ms": float, "flags": int, "values": bytes}


class SchemaError(ValueError):
    """A message that does not follow the schema (wrong version, missing or mistyped field)."""


def flag_names(flags: int) -> list[str]:
    """['GAP', 'WARMUP'] for 17; unknown bits as 'BIT<n>'."""
    out = [name for bit, name in FLAG_NAMES.items() if flags & bit]
    rest = flags & ~sum(FLAG_NAMES)
    out += [f"BIT{b}" for b in range(rest.bit_length()) if rest >> b & 1]
    return out


def _plain(o):
    """msgpack `default`: numpy scalars and arrays, paths, dataclasses, sets -> plain types."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, PurePath):
        return str(o)
    if is_dataclass(o) and not isinstance(o, type):
        return asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def encode(topic: bytes, msg: dict) -> list[bytes]:
    """The two frames for msg (a "v" field is added). For tests and other publishers."""
    return [topic, msgpack.packb({"v": SCHEMA_VERSION, **msg}, default=_plain, use_bin_type=True)]


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """(topic, message) from a received multipart message; raises SchemaError when invalid.

    For kinematics, ``values`` comes back as a read-only float32 array."""
    if len(frames) != 2:
        raise SchemaError(f"expected 2 frames [topic, msgpack map], got {len(frames)}")
    topic_b, payload = frames
    topic = bytes(topic_b).decode("ascii", "replace")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types
        raise SchemaError(f"topic '{topic}': payload is not msgpack ({type(e).__name__}: {e})") from None
    if not isinstance(msg, dict):
        raise SchemaError(f"topic '{topic}': payload is a {type(msg).__name__}, expected a map")
    v = msg.get("v")
    if v != SCHEMA_VERSION:
        hint = "upgrade rtdecode on the subscriber side" if isinstance(v, int) and v > SCHEMA_VERSION else ""
        raise SchemaError(
            f"topic '{topic}': schema version {v!r}, this subscriber reads version {SCHEMA_VERSION}"
            + (f": {hint}" if hint else "")
        )
    if topic == TOPIC_KINEMATICS.decode():
        for key, typ in _KIN_FIELDS.items():
            val = msg.get(key)
            if typ is float and isinstance(val, int) and not isinstance(val, bool):
                val = msg[key] = float(val)
            if not isinstance(val, typ) or isinstance(val, bool):
                raise SchemaError(f"kinematics field '{key}' is {type(val).__name__}, expected {typ.__name__}")
        if len(msg["values"]) % 4:
            raise SchemaError(f"kinematics 'values' has {len(msg['values'])} bytes, not a multiple of 4 (float32)")
        msg["values"] = np.frombuffer(msg["values"], dtype="<f4")
        for key in ("chain_ms", "infer_ms", "age_ms"):  # optional, additive within version 1
            val = msg.get(key)
            if val is None:
                continue
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise SchemaError(f"kinematics field '{key}' is {type(val).__name__}, expected float")
            msg[key] = float(val)
        names = msg.get("names")
        if names is not None and len(names) != msg["values"].size:
            raise SchemaError(f"kinematics has {msg['values'].size} values but {len(names)} names")
    return topic, msg


class PublishAddressError(OSError):
    """The PUB socket cannot bind: a malformed address, a busy port, or not this machine's address."""


def _bind_problem(address: str, e: "zmq.ZMQError") -> str:
    """One line for a failed bind that tells a malformed address from a busy port."""
    import errno

    example = "e.g. tcp://127.0.0.1:5556 (this machine only) or tcp://*:5556 (every interface)"
    if e.errno == errno.EADDRINUSE:
        return (f"cannot publish on {address}: the port is already in use (another `rtdecode run` or another "
                f"program is bound to it): stop that program, or pass another --address, e.g. tcp://127.0.0.1:5557")
    if "://" not in address or e.errno in (errno.EINVAL, errno.EPROTONOSUPPORT):
        return f"--address {address!r} is not a ZeroMQ address ({e.strerror}): write it as tcp://HOST:PORT, {example}"
    if e.errno in (errno.ENODEV, errno.EADDRNOTAVAIL):
        return (f"cannot publish on {address}: the host is not an address or interface of this machine "
                f"({e.strerror}): pass --address with one of this machine's addresses, {example}")
    if e.errno == errno.EACCES:
        return f"cannot publish on {address}: permission denied ({e.strerror}; ports below 1024 need root): pass another --address, {example}"
    return f"cannot publish on {address}: {e.strerror or e}: pass another --address, {example}"


class ZmqPublisher:
    """PUB socket bound to `address`; every publish is non-blocking and returns False on a drop."""

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5556",
        sndhwm: int = 500,  # 5 s of 10 ms bins: see the module docstring
        linger_ms: int = 0,
        nodrop: bool = False,
    ):
        self.address = address
        self.dropped = 0
        self.sent = 0
        self.errors = 0  # messages that could not be encoded (also counted in dropped)
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.XPUB if nodrop else zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, int(sndhwm))
        self._sock.setsockopt(zmq.LINGER, int(linger_ms))
        if nodrop:
            self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._nodrop = nodrop
        try:
            self._sock.bind(address)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._ctx.term()
            raise PublishAddressError(_bind_problem(address, e)) from None
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()  # real port for tcp://...:*
        self._packer = msgpack.Packer(default=_plain, use_bin_type=True)
        self._hello: dict = {}
        self._names: list[str] | None = None
        self._closed = False

    # -- hot path ---------------------------------------------------------------------------
    def publish_kinematics(
        self, seq: int, t_lsl: float, t_pub: float, latency_ms: float, values: np.ndarray, flags: int = 0,
        chain_ms: float | None = None, infer_ms: float | None = None, age_ms: float | None = None,
    ) -> bool:
        if values.dtype != np.dtype("<f4") or not values.flags.c_contiguous:
            values = np.ascontiguousarray(values, dtype="<f4")
        msg = {
            "v": SCHEMA_VERSION,
            "seq": int(seq),
            "t_lsl": float(t_lsl),
            "t_pub": float(t_pub),
            "lat_ms": float(latency_ms),
            "flags": int(flags),
            "values": values.tobytes(),
        }
        if chain_ms is not None:  # optional split of lat_ms (additive keys, still version 1)
            msg["chain_ms"] = float(chain_ms)
        if infer_ms is not None:
            msg["infer_ms"] = float(infer_ms)
        if age_ms is not None:
            msg["age_ms"] = float(age_ms)
        if self._names is not None:
            msg["names"] = self._names
        return self._send(TOPIC_KINEMATICS, msg)

    def publish_status(self, status: dict) -> bool:
        self._drain_subscriptions()
        return self._send(TOPIC_STATUS, {**status, "v": SCHEMA_VERSION, "t_pub": _now(), "hello": self._hello})

    def publish_hello(self, meta: dict) -> bool:
        """Output names/units and bundle/stream info; kept and resent inside every status."""
        self._hello = dict(meta)
        names = meta.get("names")
        self._names = [str(n) for n in names] if names is not None else None
        return self._send(TOPIC_HELLO, {**meta, "v": SCHEMA_VERSION, "t_pub": _now()})

    def _send(self, topic: bytes, msg: dict) -> bool:
        try:
            payload = self._packer.pack(msg)
        except Exception:
            self._packer.reset()
            self.errors += 1
            self.dropped += 1
            return False
        try:
            self._sock.send_multipart((topic, payload), flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self.dropped += 1
            return False
        except zmq.ZMQError:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def _drain_subscriptions(self) -> None:
        """XPUB queues subscription messages for us: read them so that queue never fills."""
        if not self._nodrop:
            return
        try:
            while True:
                self._sock.recv(flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=None)
        self._ctx.term()

    def __enter__(self) -> "ZmqPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


try:  # the runtime's clock; the schema only needs plain floats
    from pylsl import local_clock as _now
except ImportError:  # pragma: no cover - a subscriber machine without pylsl
    _now = time.monotonic


class Subscriber:
    """A small SUB helper for tools, tests and the bench: recv() -> (topic, msg) | None, and
    latest() -> the newest kinematics message | None, for a task loop.

    Tracks `received`, `missed` (jumps in kinematics seq not explained by `latest()`),
    `skipped` (older bins `latest()` drained and dropped) and the latest output `names`.
    `rcvhwm` (1000 messages, 10 s of bins, by default) bounds what queues up here."""

    def __init__(self, address: str | None = None, topics=TOPICS, rcvhwm: int = 1000):
        self._ctx = zmq.Context(io_threads=1)
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
        self._sock.setsockopt(zmq.LINGER, 0)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self.received = 0
        self.missed = 0
        self.skipped = 0
        self.invalid = 0
        self.last_seq: int | None = None
        self.names: list[str] | None = None
        self.hello: dict | None = None
        if address is not None:
            self.connect(address, topics)

    def connect(self, address: str, topics=TOPICS) -> None:
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode() if isinstance(t, str) else bytes(t))
        self._sock.connect(address)

    def recv(self, timeout_ms: int = 1000) -> tuple[str, dict] | None:
        """The next valid message, or None when none came within timeout_ms.

        Invalid messages are counted in `invalid` and skipped."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self._poller.poll(math.ceil(left * 1000)):
                return None
            frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            try:
                topic, msg = decode(frames)
            except SchemaError:
                self.invalid += 1
                if time.monotonic() >= deadline:
                    return None
                continue
            self.received += 1
            if topic == "kinematics":
                seq = msg["seq"]
                if self.last_seq is not None and seq > self.last_seq + 1:
                    self.missed += seq - self.last_seq - 1
                self.last_seq = seq
                if msg.get("names") is not None:
                    self.names = msg["names"]
            elif topic in ("hello", "status"):
                hello = msg if topic == "hello" else msg.get("hello")
                if hello:
                    self.hello = hello
                    if hello.get("names") is not None:
                        self.names = list(hello["names"])
            return topic, msg

    def latest(self, timeout_ms: int = 1000) -> dict | None:
        """The newest kinematics message: everything already queued is drained without
        blocking (hello and status on the way are taken in), older bins are dropped and
        counted in `skipped`. If nothing is queued, waits up to timeout_ms for one.

        Only the newest bin is decoded, so draining costs a few µs per queued message.
        Returns None when no kinematics message came in time."""
        sock = self._sock
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            newest = None
            drained = 0
            while True:
                try:
                    frames = sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) == 2 and frames[0] == TOPIC_KINEMATICS:
                    if newest is not None:
                        drained += 1
                    newest = frames
                    continue
                try:
                    topic, msg = decode(frames)
                except SchemaError:
                    self.invalid += 1
                    continue
                self.received += 1
                hello = msg if topic == "hello" else msg.get("hello") if topic == "status" else None
                if hello:
                    self.hello = hello
                    if hello.get("names") is not None:
                        self.names = list(hello["names"])
            if newest is not None:
                try:
                    _, msg = decode(newest)
                except SchemaError:
                    self.invalid += 1
                    msg = None
                if msg is not None:
                    self.received += 1 + drained
                    self.skipped += drained
                    seq = msg["seq"]
                    if self.last_seq is not None and seq > self.last_seq + 1 + drained:
                        self.missed += seq - self.last_seq - 1 - drained
                    self.last_seq = seq
                    if msg.get("names") is not None:
                        self.names = msg["names"]
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or not self._poller.poll(math.ceil(left * 1000)):
                return None

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
