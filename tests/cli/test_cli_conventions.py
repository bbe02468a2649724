"""CLI conventions: --version, -v anywhere, help and defaults for every flag, units in
metavars, JSON-only output, exit codes and one error prefix, liblsl quiet, run settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from rtdecode import cli
from rtdecode.config import from_dict, load_toml
from rtdecode.runtime import RunConfig
from tests.conftest import start_outlet, unique_name
from tests.harness import free_address
from tests.helpers import make_bundle

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "rtdecode.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    act = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(act.choices)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle", n_channels=4)


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"rtdecode {version('rtdecode')}"


@pytest.mark.parametrize("argv", [["-v", "info", "B"], ["info", "B", "-v"], ["info", "-v", "B"], ["run", "--verbose"]])
def test_verbose_before_or_after_the_command(argv):
    assert cli.build_parser().parse_args(argv).verbose is True


def test_not_verbose_by_default():
    assert cli.build_parser().parse_args(["info", "B"]).verbose is False


def test_every_flag_has_help_and_shows_its_default():
    parser = cli.build_parser()
    for name, sp in _subparsers(parser).items():
        text = sp.format_help()
        assert cli.EXIT_CODES.split(";")[0] in " ".join(text.split()), f"{name}: no exit codes in --help"
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and len(a.help) > 3, f"rtdecode {name} {a.option_strings or a.dest}: no help text"
            if not a.option_strings:
                continue
            flag = max(a.option_strings, key=len)
            switch = isinstance(a, (argparse._StoreTrueAction, argparse.BooleanOptionalAction))
            if a.default is not None and not switch:  # a flag with a default shows it
                shown = cli._Formatter("x")._get_help_string(a) % {"default": a.default}
                assert f"(default: {a.default}" in shown, f"rtdecode {name} {flag}: default not shown ({shown!r})"
    assert cli.EXIT_CODES.split(";")[0] in " ".join(parser.format_help().split())


def test_time_flags_say_seconds():
    for name, sp in _subparsers(cli.build_parser()).items():
        for a in sp._actions:
            if not a.option_strings:
                continue
            flag = max(a.option_strings, key=len)
            timed = a.dest.endswith("_s") or flag in ("--duration", "--timeout", "--warmup", "--lead")
            if timed:
                assert a.metavar == "SECONDS", f"rtdecode {name} {flag}: metavar {a.metavar!r}, want SECONDS"
            if a.dest.endswith("_ms"):
                assert a.metavar == "MS", f"rtdecode {name} {flag}: metavar {a.metavar!r}"


def test_every_run_setting_has_a_flag_with_the_runtime_default():
    run = _subparsers(cli.build_parser())["run"]
    dests = {a.dest for a in run._actions if a.option_strings}
    missing = [f.name for f in dataclasses.fields(RunConfig) if f.name not in dests]
    assert not missing, f"RunConfig fields without a flag: {missing}"
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for key, value in cli.RUN_DEFAULTS.items():
        assert defaults[key] == value, f"--help says {key} defaults to {value!r}, RunConfig says {defaults[key]!r}"
    for a in run._actions:  # flags default to None: a --config file's value stays unless the flag is given
        if a.option_strings and a.dest in defaults:
            assert a.default is None, a.dest


def test_configs_run_toml_holds_every_setting():
    path = ROOT / "configs" / "run.toml"
    cfg = from_dict(RunConfig, load_toml(path)["run"], where=str(path))
    assert isinstance(cfg, RunConfig)
    text = path.read_text()
    set_keys = set(load_toml(path)["run"])
    commented = set(re.findall(r"^#\s*(\w+)\s*=", text, flags=re.M))
    missing = [f.name for f in dataclasses.fields(RunConfig) if f.name not in set_keys | commented]
    assert not missing, f"configs/run.toml lacks {missing}"
    for f in dataclasses.fields(RunConfig):  # the values set are the defaults (except the bundle path)
        if f.name in set_keys and f.name != "bundle":
            assert getattr(cfg, f.name) == f.default, f.name
    runtime_doc = (ROOT / "rtdecode" / "runtime.py").read_text()
    assert "configs/run.toml" in runtime_doc


def test_run_config_file_values_are_checked_like_flags(tmp_path, bundle):
    toml = tmp_path / "run.toml"
    toml.write_text(f'[run]\nbundle = "{bundle.path}"\nresolve_timeout_s = 0\n')
    r = _cli("run", "--config", str(toml))
    assert r.returncode == 2 and "resolve_timeout_s" in r.stderr and "--resolve-timeout" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("text, expect", [
    ('resolve_timeout_s = 1.0\n[run]\nbundle = "{b}"\n', "key 'resolve_timeout_s' above [run] would be ignored: move it into [run]"),
    ('[run]\nbundle = "{b}"\n[runn]\nthreads = 2\n', "table [runn] beside [run] would be ignored"),
    ('[run]\nbundle = "{b}"\n[[run2]]\nx = 1\n', "array of tables [[run2]] beside [run] would be ignored"),
    ('[rn]\nbundle = "{b}"\n', "did you mean [run]?"),
    ('[run]\nbundle = "{b}"\nstall_policy = "newst"\n', "'newst' is not one of 'all', 'newest' (did you mean 'newest'?)"),
    ('[run]\nbundle = "{b}"\ngc_mode = "off"\n', "'off' is not one of 'tick', 'python'"),
])
def test_a_run_config_refuses_keys_it_would_ignore_and_lists_a_choice(tmp_path, bundle, text, expect):
    """A key above the [run] table, a second table or a misspelt [run] would be silently
    ignored; a choice outside its allowed values names them. Exit 2, one line, before any
    stream is looked for."""
    toml = tmp_path / "run.toml"
    toml.write_text(text.format(b=bundle.path))
    r = _cli("run", "--config", str(toml), "--stream", "never-looked-for")
    assert r.returncode == 2 and expect in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_info_json_prints_json_only(bundle):
    r = _cli("info", str(bundle.path), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)  # the whole of stdout
    assert m["input"]["n_channels"] == 4 and "chain" not in m


def test_importing_the_cli_does_not_load_pylsl():
    code = "import sys, rtdecode.cli; print('pylsl' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def _env_without_lsl_config(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    env["HOME"] = str(tmp_path / "home")  # no ~/lsl_api/lsl_api.cfg
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def test_liblsl_info_lines_are_off_unless_the_user_configured_liblsl(tmp_path, bundle):
    env = _env_without_lsl_config(tmp_path)
    args = ("run", "--bundle", str(bundle.path), "--stream", unique_name("none"), "--resolve-timeout", "0.3",
            "--address", free_address())  # fmt: skip
    quiet = subprocess.run([sys.executable, "-m", "rtdecode.cli", *args], capture_output=True, text=True, timeout=60,
                           env=env, cwd=tmp_path)  # fmt: skip
    assert quiet.returncode == 2 and "no LSL stream" in quiet.stderr
    assert " INFO|" not in quiet.stderr, quiet.stderr
    cfg = tmp_path / "mine.cfg"  # the user's own liblsl config wins: here, liblsl's INFO level
    cfg.write_text("[log]\nlevel = 0\n")
    loud = subprocess.run([sys.executable, "-m", "rtdecode.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**env, "LSLAPICFG": str(cfg)}, cwd=tmp_path)  # fmt: skip
    assert loud.returncode == 2 and " INFO|" in loud.stderr, loud.stderr


def test_liblsl_prints_only_fatal_errors_unless_verbose(tmp_path):
    """rtdecode reports stream events itself, so liblsl's "ERR| Stream transmission broke off" at
    a normal stream end is not shown; with -v liblsl's errors are (the config handed to liblsl)."""
    env = _env_without_lsl_config(tmp_path)
    code = ("import os, sys; from rtdecode.lsl_config import quiet_liblsl; quiet_liblsl(verbose=sys.argv[1] == 'v'); "
            "print(open(os.environ['LSLAPICFG']).read())")  # fmt: skip
    for arg, level in (("q", "level = -3"), ("v", "level = -2")):
        r = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert r.returncode == 0 and level in r.stdout, (r.stdout, r.stderr)


def test_quiet_hides_the_status_line_but_prints_the_summary(tmp_path, bundle):
    name = unique_name("quiet")
    out = start_outlet(name, channels=4, duration=30.0)
    try:
        r = _cli("run", "--bundle", str(bundle.path), "--stream", name, "--quiet", "--duration", "1",
                 "--address", free_address(), "--backend", "onnxruntime", timeout=90)  # fmt: skip
    finally:
        out.kill()
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["bins"] > 0 and "lat_ms" in summary
    assert "bins/s" not in r.stderr


def test_user_errors_exit_2_once_prefixed_and_unexpected_ones_keep_their_traceback(monkeypatch, capsys, tmp_path):
    from rtdecode.config import ConfigError

    assert cli.main(["info", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtdecode info: error: ") and err.count("error:") == 1 and "nope" in err

    def prefixed(args):  # an exception whose text already carries a prefix is not prefixed twice
        raise ConfigError("rtdecode info: rtdecode info: doubled")

    monkeypatch.setattr(cli, "cmd_info", prefixed)
    assert cli.main(["info", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "rtdecode info: error: doubled\n", err

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_info", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # not swallowed: Python prints the traceback, exit 1
        cli.main(["info", "x"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info", "x"]) == 130
