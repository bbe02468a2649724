"""The `rtdecode run` settings: a TOML file's [run] table, then the flags given, as a RunConfig.

    cfg = load_run_config("configs/run.toml", {"stream": "LFP", "threads": None}, {"stream": "--stream"})

A file's values pass the same checks as the flags that set them (`rtdecode.checks`), and
every error names the file or the flag and what to do (ConfigError).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from pathlib import Path
from typing import Mapping

from .checks import nonneg_float, positive_float, positive_int, rt_priority, stream_name, zmq_address
from .config import ConfigError, from_dict, load_toml

# the checks of the numeric flags, applied to a --config file's values as well
RUN_CHECKS = {
    "threads": positive_int, "deadline_ms": positive_float, "status_interval_s": positive_float,
    "max_chunk": positive_int, "pull_timeout_s": positive_float, "stall_timeout_s": positive_float,
    "resolve_timeout_s": positive_float, "max_fill_s": nonneg_float, "duration_s": positive_float,
    "address": zmq_address, "spin_s": nonneg_float, "rt_priority": rt_priority, "input_scale": positive_float,
    "renormalize_s": nonneg_float, "lsl_out": stream_name,
}  # fmt: skip


def load_run_config(config: str | None = None, overrides: Mapping | None = None, flags: Mapping | None = None):
    """The RunConfig of TOML file `config` ([run] table, or the whole file), with `overrides`
    (RunConfig field -> value; None and other keys are passed over, so `vars(args)` will do)
    on top. `flags` (field -> flag) names the flag in messages."""
    from .runtime import RunConfig

    base: dict = {}
    where = "rtdecode run"
    if config:
        tables = load_toml(config)
        if "run" in tables:  # the [run] table and nothing beside it: a key above it, or another table, is a mistake
            stray = [k for k in tables if k != "run"]
            if stray:
                k = stray[0]
                v = tables[k]
                if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
                    what = f"table [{k}]" if isinstance(v, dict) else f"array of tables [[{k}]]"
                    raise ConfigError(f"{config}: {what} beside [run] would be ignored: a run config holds only the [run] table")
                raise ConfigError(f"{config}: key {k!r} above [run] would be ignored: move it into [run]")
            base = dict(tables["run"])
        else:
            for k, v in tables.items():  # the whole file is the table; a sub-table is a misspelt [run]
                if isinstance(v, dict):
                    close = difflib.get_close_matches(k, ["run"], n=1, cutoff=0.5)
                    raise ConfigError(f"{config}: table [{k}]: a run config is a [run] table (or its keys alone)"
                                      + (f": did you mean [{close[0]}]?" if close else ""))  # fmt: skip
            base = dict(tables)
        where = f"{config} [run]"
    flags = flags or {}
    overrides = overrides or {}
    for key, check in RUN_CHECKS.items():  # a config file's values pass the flags' checks
        if base.get(key) is not None and not isinstance(base[key], bool):
            try:
                check(base[key])
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"{where}: {key} {e} (flag {flags.get(key, key)})") from None
    for f in dataclasses.fields(RunConfig):
        v = overrides.get(f.name)
        if v is not None:
            base[f.name] = v
    cfg = from_dict(RunConfig, base, where=where)
    if not cfg.bundle:
        raise ConfigError("no bundle given: pass --bundle DIR (a folder written by `rtdecode distill`)")
    if config and overrides.get("bundle") is None:
        _check_file_relative_path(config, where, "bundle", cfg.bundle)
    if not cfg.stream.strip():
        raise ConfigError("--stream is empty: pass the LSL stream's name or type (`rtdecode streams` lists them)")
    for key in ("stream", "source_id"):
        v = getattr(cfg, key) or ""
        if "'" in v and '"' in v:
            raise ConfigError(f"{flags.get(key, key)} {v!r} holds both quote characters; LSL queries cannot match it")
    if cfg.summary_path and not Path(cfg.summary_path).resolve().parent.is_dir():
        raise ConfigError(f"--summary {cfg.summary_path}: folder {Path(cfg.summary_path).resolve().parent} does not exist")
    return cfg


def _check_file_relative_path(config: str, where: str, key: str, value: str) -> None:
    """A relative path in a config file is read from the working directory (as for every config
    in rtdecode). If it is missing there but present beside the config file, say so instead of
    "does not exist": that is the usual slip when a config is kept with its bundle."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return
    beside = Path(config).resolve().parent / p
    if beside.exists():
        raise ConfigError(f"{where}: {key} {value!r} does not exist in the working directory ({Path.cwd()}): "
                          f"paths in a config file are relative to the working directory, not to the file. "
                          f"It does exist beside the config file: write {key} = {str(beside)!r}, "
                          f"or run from {Path(config).resolve().parent}")  # fmt: skip
