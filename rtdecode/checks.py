"""Value checks shared by the command-line flags and the config files that set the same keys.

Each check takes the text (or a TOML value), returns the value and raises
`argparse.ArgumentTypeError` naming what it wants, so that argparse prints
"argument --x: must be ..." for a flag and `rtdecode.run_config` says the same of a file's key.

    positive_int("4") -> 4;  zmq_address("tcp://127.0.0.1:5556");  int_list("96, 256") -> "96,256"
"""

from __future__ import annotations

import argparse
import math


def _number(kind: type, lo: float, strict: bool, what: str):
    def parse(text):
        try:
            v = kind(text) if kind is float else int(str(text), 10)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v

    parse.__name__ = what  # argparse's "invalid <name> value" for other failures
    return parse


positive_float = _number(float, 0.0, True, "a number > 0")
nonneg_float = _number(float, 0.0, False, "a number >= 0")
positive_int = _number(int, 0, True, "a whole number >= 1")
nonneg_int = _number(int, 0, False, "a whole number >= 0")


def rt_priority(text) -> int:
    """0 (off) or a SCHED_FIFO priority 1..99."""
    v = nonneg_int(text)
    if v > 99:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a SCHED_FIFO priority 1..99, got {text!r}")
    return v


def stream_name(text) -> str:
    """A non-empty LSL stream name (surrounding spaces dropped)."""
    v = str(text).strip()
    if not v:
        raise argparse.ArgumentTypeError("is empty: pass the name of the LSL stream to create, e.g. Decoded")
    return v


def port(text) -> int:
    v = nonneg_int(text)
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {text!r}")
    return v


def zmq_address(text: str) -> str:
    """tcp://HOST:PORT (PORT 1..65535 or *), ipc://PATH or inproc://NAME."""
    text = str(text)
    example = "e.g. tcp://127.0.0.1:5556"
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise argparse.ArgumentTypeError(f"must be a ZeroMQ address tcp://HOST:PORT, {example}; got {text!r} (no tcp://)")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise argparse.ArgumentTypeError(f"{scheme}:// needs a name, got {text!r}")
        return text
    if scheme != "tcp":
        raise argparse.ArgumentTypeError(f"must start with tcp://, ipc:// or inproc://, {example}; got {text!r}")
    host, colon, p = rest.rpartition(":")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"must be tcp://HOST:PORT, {example}; got {text!r} (no port)")
    if p != "*":
        try:
            port(p)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"port must be 1..65535 or *, {example}; got {text!r}") from None
    return text


def int_list(text: str) -> str:
    """A comma list of whole numbers >= 1 (returned normalised, as text)."""
    try:
        vals = [positive_int(x.strip()) for x in str(text).split(",") if x.strip()]
    except argparse.ArgumentTypeError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"must be a comma list of whole numbers >= 1, e.g. 96,256; got {text!r}")
    return ",".join(str(v) for v in vals)
