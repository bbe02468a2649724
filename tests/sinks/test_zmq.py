"""rtdecode.sinks.zmq against real ZeroMQ sockets on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtdecode.sinks.zmq import (
    FLAG_GAP,
    FLAG_WARMUP,
    SCHEMA_VERSION,
    TOPIC_KINEMATICS,
    SchemaError,
    Subscriber,
    ZmqPublisher,
    decode,
    encode,
    flag_names,
)

ROOT = Path(__file__).resolve().parents[2]
ANY = "tcp://127.0.0.1:*"  # the OS picks a free port: tests never collide with a running rtdecode


def wait_joined(pub: ZmqPublisher, sub: Subscriber, timeout: float = 5.0) -> None:
    """PUB/SUB 'slow joiner': publish hello until the subscriber sees one."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        pub.publish_hello({"names": ["x", "y"], "units": ["mm/s", "mm/s"], "bundle": "b"})
        got = sub.recv(timeout_ms=20)
        if got is not None:
            return
    raise AssertionError("subscriber never joined")


@pytest.fixture
def pair():
    pub = ZmqPublisher(ANY)
    sub = Subscriber(pub.endpoint)
    wait_joined(pub, sub)
    yield pub, sub
    sub.close()
    pub.close()


def test_subscriber_receives_kinematics_status_and_hello(pair):
    pub, sub = pair
    vals = np.array([[1.5, -2.0], [3.25, np.nan]], dtype=np.float32)
    for seq in range(200):  # a burst within the publisher's queue (sndhwm 500)
        assert pub.publish_kinematics(seq, 10.0 + seq * 0.01, 10.5 + seq * 0.01, 0.3, vals[seq % 2], FLAG_GAP)
    assert pub.publish_status({"published": 200, "lat_p99_ms": np.float64(0.7), "gaps": np.int64(1)})
    got = []
    while True:
        m = sub.recv(timeout_ms=2000)
        assert m is not None, "message lost on an idle loopback"
        if m[0] == "kinematics":
            got.append(m[1])
        if m[0] == "status":
            status = m[1]
            break
    assert [g["seq"] for g in got] == list(range(200)) and sub.missed == 0
    for g in got:
        np.testing.assert_array_equal(g["values"], vals[g["seq"] % 2])
        assert g["names"] == ["x", "y"] and g["flags"] == FLAG_GAP and g["v"] == SCHEMA_VERSION
        assert g["t_lsl"] == 10.0 + g["seq"] * 0.01
    assert status["published"] == 200 and status["gaps"] == 1 and status["lat_p99_ms"] == 0.7
    assert status["hello"]["units"] == ["mm/s", "mm/s"]
    assert pub.sent >= 201 and pub.dropped == 0


finite_or_not = st.floats(width=32, allow_nan=True, allow_infinity=True)


@pytest.fixture(scope="module")
def module_pair():
    pub = ZmqPublisher(ANY)
    sub = Subscriber(pub.endpoint, topics=["kinematics"])
    t_end = time.monotonic() + 5
    while sub.recv(timeout_ms=20) is None:
        pub.publish_kinematics(0, 0.0, 0.0, 0.0, np.zeros(1, np.float32))
        assert time.monotonic() < t_end
    while sub.recv(timeout_ms=50) is not None:
        pass
    yield pub, sub
    sub.close()
    pub.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seq=st.integers(0, 2**63 - 1),
    t_lsl=st.floats(allow_nan=False),
    lat=st.floats(allow_nan=False, allow_infinity=True),
    flags=st.integers(0, 2**31 - 1),
    values=st.lists(finite_or_not, min_size=0, max_size=64),
    dtype=st.sampled_from(["<f4", ">f4", "<f8"]),
)
def test_decode_round_trips_anything_the_publisher_sends(module_pair, seq, t_lsl, lat, flags, values, dtype):
    pub, sub = module_pair
    arr = np.asarray(values, dtype=dtype)
    assert pub.publish_kinematics(seq, t_lsl, 1.0, lat, arr, flags)
    topic, msg = sub.recv(timeout_ms=2000)
    assert topic == "kinematics" and msg["seq"] == seq and msg["flags"] == flags
    assert msg["t_lsl"] == t_lsl and (msg["lat_ms"] == lat)
    expect = arr.astype("<f4")  # what any input dtype becomes on the wire: float32 little-endian
    got = msg["values"]
    assert got.dtype == np.dtype("<f4") and got.shape == expect.shape
    np.testing.assert_array_equal(got.view(np.uint32), expect.view(np.uint32))  # bitwise, NaN included


def test_decode_refuses_bad_messages():
    ok = encode(TOPIC_KINEMATICS, {"seq": 1, "t_lsl": 1.0, "t_pub": 1.0, "lat_ms": 0.1, "flags": 0,
                                   "values": b"\0" * 8})
    assert decode(ok)[1]["values"].size == 2
    newer = [b"kinematics", msgpack.packb({"v": SCHEMA_VERSION + 1, "seq": 1})]
    with pytest.raises(SchemaError, match=r"schema version 2, this subscriber reads version 1: upgrade"):
        decode(newer)
    with pytest.raises(SchemaError, match="2 frames"):
        decode([b"kinematics"])
    with pytest.raises(SchemaError, match="not msgpack"):
        decode([b"kinematics", b"\xc1"])
    missing = [b"kinematics", msgpack.packb({"v": 1, "seq": 1, "t_lsl": 1.0})]
    with pytest.raises(SchemaError, match="'t_pub' is NoneType"):
        decode(missing)
    odd = encode(TOPIC_KINEMATICS, {"seq": 1, "t_lsl": 1.0, "t_pub": 1.0, "lat_ms": 0.1, "flags": 0,
                                    "values": b"\0" * 6})
    with pytest.raises(SchemaError, match="multiple of 4"):
        decode(odd)
    assert flag_names(FLAG_GAP | FLAG_WARMUP | 4096) == ["GAP", "WARMUP", "BIT12"]


def publish_burst(pub: ZmqPublisher, n: int) -> tuple[float, float, int]:
    vals = np.zeros(8, np.float32)
    worst, ok = 0.0, 0
    t0 = time.perf_counter()
    for seq in range(n):
        t = time.perf_counter()
        ok += pub.publish_kinematics(seq, 0.0, 0.0, 0.0, vals)
        worst = max(worst, time.perf_counter() - t)
    return time.perf_counter() - t0, worst, ok


def test_absent_subscriber_never_blocks():
    with ZmqPublisher(ANY, sndhwm=10) as pub:
        total, worst, ok = publish_burst(pub, 20_000)
    assert total < 2.0 and worst < 0.05, f"{total:.2f} s total, worst {worst * 1e3:.1f} ms"


def test_stuck_subscriber_never_blocks_and_sees_its_losses():
    with ZmqPublisher(ANY, sndhwm=10) as pub, Subscriber(pub.endpoint, topics=["kinematics"], rcvhwm=10) as sub:
        t_end = time.monotonic() + 5
        while sub.recv(timeout_ms=20) is None:  # joined; from now on it stops reading
            pub.publish_kinematics(0, 0.0, 0.0, 0.0, np.zeros(8, np.float32))
            assert time.monotonic() < t_end
        sub.last_seq = -1
        total, worst, ok = publish_burst(pub, 20_000)
        assert total < 2.0 and worst < 0.05, f"{total:.2f} s total, worst {worst * 1e3:.1f} ms"
        seqs = []
        while (m := sub.recv(timeout_ms=200)) is not None:
            seqs.append(m[1]["seq"])
    # kernel TCP buffers hold some messages beyond the two HWMs of 10; most must be dropped
    assert len(seqs) < 5000 and sub.missed > 10_000, f"the queue bound (HWM) did not apply: {len(seqs)} received"
    assert seqs == sorted(seqs)


def test_nodrop_publisher_counts_drops_and_returns_quickly():
    with ZmqPublisher(ANY, sndhwm=10, nodrop=True) as pub, \
            Subscriber(pub.endpoint, topics=["kinematics"], rcvhwm=10) as sub:
        t_end = time.monotonic() + 5
        while sub.recv(timeout_ms=20) is None:
            pub.publish_kinematics(0, 0.0, 0.0, 0.0, np.zeros(8, np.float32))
            assert time.monotonic() < t_end
        total, worst, ok = publish_burst(pub, 20_000)
        assert pub.publish_status({"x": 1}) in (True, False)
    assert total < 2.0 and worst < 0.05
    assert pub.dropped > 10_000 and ok == 20_000 - pub.dropped


def test_status_with_unpackable_values_never_raises():
    with ZmqPublisher(ANY) as pub:
        assert pub.publish_status({"obj": object(), "path": Path("/x"), "arr": np.arange(3)})
        assert pub.errors == 0


def test_bind_conflict_says_what_to_do():
    with ZmqPublisher(ANY) as pub:
        with pytest.raises(OSError, match="--address"):
            ZmqPublisher(pub.endpoint)


def test_docs_subscriber_example_runs():
    text = (ROOT / "docs" / "schema.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) <= 12  # the subscriber, then latest()
    with ZmqPublisher(ANY) as pub:
        code = blocks[0].replace("tcp://127.0.0.1:5556", pub.endpoint)
        pub.publish_hello({"names": ["vx", "vy"], "units": ["m/s", "m/s"]})
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        seq, t_end = 0, time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < t_end:
            pub.publish_kinematics(seq, 1.0, 1.0, 0.1, np.array([seq, -seq], np.float32), 0)
            seq += 1
            time.sleep(0.01)
        out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 5
    s = int(lines[0].split()[0])
    assert lines[0] == f"{s} {{'vx': {float(s)}, 'vy': {float(-s)}}} 0"


def test_latest_keeps_a_slow_subscriber_on_fresh_bins():
    """A task loop that takes 50 ms per step, against a real publisher at 100 bins/s: with
    latest() it always acts on a bin < 100 ms old; reading in order (recv) falls behind."""
    import threading

    from pylsl import local_clock

    pub = ZmqPublisher(ANY)
    stop = threading.Event()

    def publish():  # the runtime's cadence: one bin every 10 ms, t_lsl = its last sample's time
        seq, t_next = 0, time.monotonic()
        vals = np.zeros(2, np.float32)
        while not stop.is_set():
            now = local_clock()
            pub.publish_kinematics(seq, now, now, 0.1, vals, 0, age_ms=0.0)
            if seq % 50 == 0:
                pub.publish_status({"published": seq})
            seq += 1
            t_next += 0.01
            time.sleep(max(0.0, t_next - time.monotonic()))

    th = threading.Thread(target=publish, daemon=True)
    try:
        with Subscriber(pub.endpoint, topics=("kinematics", "status")) as fresh, \
                Subscriber(pub.endpoint, topics=("kinematics",)) as ordered:  # fmt: skip
            th.start()
            assert fresh.recv(timeout_ms=5000) is not None and ordered.recv(timeout_ms=5000) is not None
            ages_latest, ages_recv = [], []
            for _ in range(30):
                m = fresh.latest(timeout_ms=1000)
                assert m is not None
                ages_latest.append((local_clock() - m["t_lsl"]) * 1e3)
                got = ordered.recv(timeout_ms=1000)
                assert got is not None
                ages_recv.append((local_clock() - got[1]["t_lsl"]) * 1e3)
                time.sleep(0.05)  # the task's step
            skipped, missed, seq = fresh.skipped, fresh.missed, fresh.last_seq
    finally:
        stop.set()
        th.join(timeout=5)
        pub.close()
    assert max(ages_latest) < 100.0, ages_latest
    assert skipped > 30 * 3 and missed == 0 and seq > 100  # ~5 older bins dropped per step, none lost
    assert ages_recv[-1] > 500.0, ages_recv  # in order: 1.5 s of backlog after 30 steps


def test_kinematics_carry_age_ms(pair):
    pub, sub = pair
    pub.publish_kinematics(0, 10.0, 10.004, 0.5, np.zeros(2, np.float32), 0, age_ms=4.0)
    while (m := sub.recv(timeout_ms=2000)) is not None and m[0] != "kinematics":
        pass
    assert m is not None and m[1]["age_ms"] == 4.0 and m[1]["lat_ms"] == 0.5


def test_docs_latest_snippet_returns_the_newest_bin():
    text = (ROOT / "docs" / "schema.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[1]
    scope = {"zmq": zmq, "msgpack": msgpack}
    exec(code, scope)
    with ZmqPublisher(ANY) as pub:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"kinematics")
        sock.connect(pub.endpoint)
        try:
            t_end = time.monotonic() + 5
            while time.monotonic() < t_end:  # slow joiner: until one arrives
                pub.publish_kinematics(0, 1.0, 1.0, 0.1, np.zeros(2, np.float32), 0)
                if sock.poll(20):
                    break
            for seq in range(1, 31):
                pub.publish_kinematics(seq, 1.0, 1.0, 0.1, np.zeros(2, np.float32), 0)
            time.sleep(0.3)
            assert scope["latest"](sock)["seq"] == 30
            assert scope["latest"](sock) is None  # drained
        finally:
            sock.close(0)
            ctx.term()


def test_every_flag_is_documented_and_the_source_bits_pass_to_the_bins():
    """docs/schema.md's flag table, FLAG_NAMES and the docstring agree bit for bit, and the
    source's per-pull flags that mean the same thing have the same bit and reach the bins."""
    import rtdecode.runtime as rt
    import rtdecode.sinks.zmq as z
    import rtdecode.sources.lsl as lsl

    text = (ROOT / "docs" / "schema.md").read_text()
    table = {int(b): n for b, n in re.findall(r"^\| (\d+) +\| `([A-Z_]+)` +\|", text, flags=re.M)}
    assert table == z.FLAG_NAMES, (table, z.FLAG_NAMES)
    for bit, name in z.FLAG_NAMES.items():
        assert re.search(rf"^{bit} +FLAG_{name} ", z.__doc__, flags=re.M), name
    for pull, flag in ((lsl.PULL_STALE, z.FLAG_STALE), (lsl.PULL_CLOCK_RESET, z.FLAG_CLOCK_RESET),
                       (lsl.PULL_RATE, z.FLAG_RATE)):  # fmt: skip
        assert pull == flag and rt._SOURCE_FLAGS & flag
