"""Shared test setup.

LSL discovery is restricted to the local link (as mne-lsl's tests do): the liblsl config
file is written before anything loads liblsl, and child processes inherit it through
LSLAPICFG. Set LSL_TEST_LOG_LEVEL (liblsl levels: -3 fatal .. 9) to see liblsl's log.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

if "LSLAPICFG" not in os.environ:
    _level = int(os.environ.get("LSL_TEST_LOG_LEVEL", "-3"))
    _cfg = tempfile.NamedTemporaryFile("w", prefix="rtdecode-lsl-", suffix=".cfg", delete=False)
    with _cfg:
        _cfg.write(f"[log]\nlevel = {_level}\n\n[multicast]\nResolveScope = link\n")
    os.environ["LSLAPICFG"] = _cfg.name
    _CFG_PATH: str | None = _cfg.name
else:
    _CFG_PATH = None

OUTLET_SCRIPT = Path(__file__).parent / "sources" / "lsl_outlet_proc.py"


def pytest_sessionfinish(session, exitstatus) -> None:
    if _CFG_PATH:
        try:
            os.unlink(_CFG_PATH)
        except OSError:
            pass


def unique_name(prefix: str = "T") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class OutletProc:
    """A scripted LSL outlet running in another process (tests/sources/lsl_outlet_proc.py)."""

    proc: subprocess.Popen
    name: str
    type: str
    source_id: str
    t0: float

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_outlet(name: str, *, type: str = "LFP", source_id: str | None = None, timeout: float = 20.0,
                 **options) -> OutletProc:
    """Start an outlet process and wait until its outlet exists. options: channels, rate,
    chunk, format, duration, gap_at, gap_len, reset_at, reset_by, nan_at."""
    source_id = source_id or unique_name("sid")
    cmd = [sys.executable, str(OUTLET_SCRIPT), "--name", name, "--type", type, "--source-id", source_id]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return _wait_ready(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), name, type, source_id, timeout, cmd)


def _wait_ready(proc: subprocess.Popen, name: str, type: str, source_id: str, timeout: float, what) -> OutletProc:
    """Wait for the child's `READY <t0>` line; kill it and say so if none comes in time."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY"):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"outlet process did not start within {timeout} s (got {line!r}): {what}")
    return OutletProc(proc, name, type, source_id, float(line.split()[1]))


def start_replay(path, name: str, *, type: str = "LFP", source_id: str | None = None, chunk_size: int = 10,
                 loop: bool = False, speed: float = 1.0, timeout: float = 20.0) -> OutletProc:
    """`rtdecode.replay.replay` of the recording at `path` in another process, once its outlet exists."""
    source_id = source_id or unique_name("sid")
    code = (
        "from rtdecode.recording import Recording\n"
        "from rtdecode.replay import replay\n"
        f"replay(Recording.load({str(path)!r}), name={name!r}, type={type!r}, source_id={source_id!r}, "
        f"chunk_size={chunk_size}, loop={loop}, speed={speed}, "
        "on_start=lambda info: print('READY', info['t0'], flush=True))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return _wait_ready(proc, name, type, source_id, timeout, f"replay of {path}")


@pytest.fixture
def lsl_replay():
    """Factory: lsl_replay(path, name, **kw) -> OutletProc running rtdecode.replay in another
    process (for end-to-end tests of the runtime); killed at teardown."""
    started: list[OutletProc] = []

    def factory(path, name: str, **kw) -> OutletProc:
        o = start_replay(path, name, **kw)
        started.append(o)
        return o

    yield factory
    for o in started:
        o.kill()


@pytest.fixture
def lsl_outlet():
    """Factory: lsl_outlet(name, **options) -> OutletProc; every outlet is killed at teardown
    (after the test body, which closes its inlets first)."""
    started: list[OutletProc] = []

    def factory(name: str, **kw) -> OutletProc:
        o = start_outlet(name, **kw)
        started.append(o)
        return o

    yield factory
    for o in started:
        o.kill()
