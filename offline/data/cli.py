"""`rtdecode simulate`: write simulated sessions as NWB files.

    rtdecode simulate --out sim/ --sessions 10 --minutes 10 --channels 96 --seed 0 [--config sim.toml]

The TOML's [simulate] table holds SimConfig knobs (unknown keys are refused). Its
`duration_s` and `n_channels` win over the flags' defaults; a flag given with another
value than its default and a conflicting table key is an error. A non-empty --out is
refused unless --overwrite (which replaces the files of an earlier simulation there);
on an error, a folder this command created is removed again.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rtdecode.config import ConfigError, from_dict, load_toml

FLAG_DEFAULTS = {"minutes": 2.0, "channels": 96}  # rtdecode/cli.py's defaults
_FLAGS = {"duration_s": "minutes", "n_channels": "channels"}  # SimConfig field -> the flag that sets it


def sim_config_from_args(args):
    from .simulate import SimConfig

    if (getattr(args, "family", None) or "linear") != "linear":  # --family: offline.data.families' knobs
        from .families import FamilyConfig as SimConfig  # noqa: N814
    table: dict = {}
    where = "rtdecode simulate"
    if getattr(args, "config", None):
        tables = load_toml(args.config)
        if "simulate" not in tables:
            raise ConfigError(f"{args.config}: no [simulate] table (found: {sorted(tables) or 'nothing'}); "
                              "put SimConfig knobs under [simulate]")  # fmt: skip
        table = dict(tables["simulate"])
        where = f"{args.config} [simulate]"
    flags = {"duration_s": ("minutes", float(args.minutes) * 60.0), "n_channels": ("channels", int(args.channels))}
    from_flags = []
    for key, (flag, value) in flags.items():
        given = getattr(args, flag) != FLAG_DEFAULTS[flag]
        if key in table and given and table[key] != value:
            raise ConfigError(f"{where}: {key} = {table[key]!r} but --{flag} {getattr(args, flag)} asks for {value!r}; "
                              "drop one of them")  # fmt: skip
        if key not in table:
            table[key] = value
            from_flags.append(key)
    if "duration_s" in from_flags:  # the flag's own bound, named as the flag (not as SimConfig's field)
        bin_width = float(table.get("bin_width", SimConfig.bin_width))
        shortest = 10 * bin_width
        if table["duration_s"] < shortest:
            raise ConfigError(f"--minutes {args.minutes:g} is too short: a session needs at least 10 bins "
                              f"({shortest:g} s, --minutes {shortest / 60:.4g})")  # fmt: skip
    try:
        return from_dict(SimConfig, table, where=where)
    except ConfigError as e:
        if where == "rtdecode simulate":  # only flags: say which flag, not which field
            msg = str(e).removeprefix(f"{where}: ")
            for key, flag in _FLAGS.items():
                msg = msg.replace(key, f"--{flag}")
            raise ConfigError(msg) from None
        raise


def _check_out(out: Path, overwrite: bool) -> list[Path]:
    """Refuse a non-empty folder unless `overwrite`; return the files of an earlier simulation to replace."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: pass a folder to write the sessions into")
    if not out.is_dir() or not any(out.iterdir()):
        return []
    if not overwrite:
        n = sum(1 for _ in out.iterdir())
        raise ConfigError(f"--out {out} is not empty ({n} entries): pass an empty or new folder, "
                          "or --overwrite to replace an earlier simulation there")  # fmt: skip
    old: list[Path] = []
    manifest = out / "simulation.json"
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text()).get("files", [])
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            files = []
        old = [out / str(f) for f in files if (out / str(f)).is_file() and Path(str(f)).name == str(f)]
        old.append(manifest)
    return old


def main_simulate(args) -> int:
    """CLI entry: 0 on success, 2 on a bad flag, config or --out (one line, as rtdecode.cli prints)."""
    try:
        return _simulate(args)
    except ConfigError as e:
        from rtdecode.cli import error_message

        print(f"rtdecode simulate: error: {error_message(e)}", file=sys.stderr)
        return 2


def _simulate(args) -> int:
    from .simulate import write_dataset

    cfg = sim_config_from_args(args)
    if args.sessions < 1:
        raise ConfigError(f"--sessions must be >= 1, got {args.sessions}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    out = Path(args.out)
    old = _check_out(out, bool(getattr(args, "overwrite", False)))
    created = not out.exists()
    t = time.perf_counter()
    try:
        for p in old:  # an earlier simulation's sessions: none of them may outlive this one
            p.unlink()
        fam = getattr(args, "family", None) or "linear"
        if fam == "linear":
            paths = write_dataset(cfg, args.sessions, args.seed, out)
        else:
            from .families import write_family

            paths = write_family(fam, args.sessions, args.seed, out, cfg)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    dt = time.perf_counter() - t
    knobs = {k: v for k, v in asdict(cfg).items() if k in ("duration_s", "n_channels", "lfp_rate", "n_units")}
    print(f"[simulate] {len(paths)} sessions in {args.out} ({knobs}) in {dt:.1f} s")
    return 0
