"""`rtdecode simulate`: write simulated sessions as NWB files.

    rtdecode simulate --out sim/ --sessions 10 --minutes 10 --channels 96 --seed 0 [--config sim.toml]

The TOML's [simulate] table holds SimConfig knobs (unknown keys are refused). Its
`duration_s` and `n_channels` win over the flags' defaults; a flag given with another
value than its default and a conflicting table key is an error.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

from rtdecode.config import ConfigError, from_dict, load_toml

FLAG_DEFAULTS = {"minutes": 2.0, "channels": 96}  # rtdecode/cli.py's defaults


def sim_config_from_args(args):
    from .simulate import SimConfig

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
    for key, (flag, value) in flags.items():
        given = getattr(args, flag) != FLAG_DEFAULTS[flag]
        if key in table and given and table[key] != value:
            raise ConfigError(f"{where}: {key} = {table[key]!r} but --{flag} {getattr(args, flag)} asks for {value!r}; "
                              "drop one of them")  # fmt: skip
        if key not in table:
            table[key] = value
    return from_dict(SimConfig, table, where=where)


def main_simulate(args) -> int:
    """CLI entry: 0 on success, 2 on a bad config."""
    from .simulate import write_dataset

    try:
        cfg = sim_config_from_args(args)
    except ConfigError as e:
        print(f"rtdecode simulate: {e}", file=sys.stderr)
        return 2
    if args.sessions < 1:
        print(f"rtdecode simulate: --sessions must be >= 1, got {args.sessions}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    paths = write_dataset(cfg, args.sessions, args.seed, args.out)
    dt = time.perf_counter() - t
    knobs = {k: v for k, v in asdict(cfg).items() if k in ("duration_s", "n_channels", "lfp_rate", "n_units")}
    print(f"[simulate] {len(paths)} sessions in {args.out} ({knobs}) in {dt:.1f} s")
    return 0
