"""TOML configs into frozen dataclasses, with errors that name the key and the fix.

    @dataclass(frozen=True)
    class TrainConfig:
        lr: float = 1e-3
        steps: int = 100

    cfg = from_dict(TrainConfig, {"lr": 3e-4, "stpes": 10}, where="configs/x.toml [train]")
    # ConfigError: configs/x.toml [train]: unknown key 'stpes' (did you mean 'steps'?); allowed: lr, steps

Nested dataclass fields take nested tables; `tuple[...]`/`list[...]` fields take arrays;
ints are accepted where floats are expected; nothing else is coerced.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that does not fit: names the file, the key and what to do."""


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check `value` against annotation `tp`; return (ok, converted)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False, value
            pairs = list(zip(value, args))
        else:
            elem = args[0] if args else Any
            pairs = [(v, elem) for v in value]
        out = []
        for v, a in pairs:
            ok, cv = _type_ok(v, a)
            if not ok:
                return False, value
            out.append(cv)
        return True, origin(out)
    if origin is dict:
        return isinstance(value, dict), value
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict), value
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)), float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(cls: type[T], d: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a table, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in d if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown key {k!r}{hint}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in d.items():
        tp = hints[name]
        sub = where + (f".{name}" if where.endswith("]") or "." in where else f" {name}")
        inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if inner and isinstance(value, dict):
            kwargs[name] = from_dict(inner[0], value, where=f"{where}.{name}")
            continue
        ok, conv = _type_ok(value, tp)
        if not ok:
            allowed = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is typing.Literal else []
            if allowed:
                close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
                raise ConfigError(f"{sub}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))  # fmt: skip
            raise ConfigError(f"{sub}: expected {_tname(tp)}, got {type(value).__name__} ({value!r})")
        kwargs[name] = conv
    missing = [
        n for n, f in fields.items()
        if n not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict/list/scalars (TOML/JSON ready)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
