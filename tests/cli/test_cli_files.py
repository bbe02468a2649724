"""Files are written with the user's umask (atomic writes included); simulate's --out rules;
`rtdecode demo` prints its bundle's path."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from rtdecode._fs import atomic_file, atomic_path, make_temp_dir
from rtdecode.recording import Recording
from tests.helpers import make_bundle


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_bundle_and_recording_follow_the_umask(tmp_path, umask):
    b = make_bundle(tmp_path / "bundle", n_channels=4)
    want_dir, want_file = 0o777 & ~umask, 0o666 & ~umask  # 0755/0644 under umask 022
    assert _mode(b.path) == want_dir
    for f in b.path.iterdir():
        assert _mode(f) == want_file, f
    rec = tmp_path / "rec.npz"
    Recording(np.zeros((100, 4), np.float32), 1000.0).save(rec)
    assert _mode(rec) == want_file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_nwb_and_checkpoint_follow_the_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from offline.data.nwb import write_session
    from offline.data.simulate import SimConfig, simulate_session
    from offline.train.checkpoint import atomic_save

    s = simulate_session(SimConfig(duration_s=1.0, n_channels=4, n_units=20, n_units_jitter=5, unit_pool=40), 0, 0)
    p = write_session(s, tmp_path / "s.nwb")
    assert _mode(p) == 0o666 & ~umask
    atomic_save({"w": torch.zeros(2)}, tmp_path / "ck" / "x.pt")
    assert _mode(tmp_path / "ck" / "x.pt") == 0o666 & ~umask
    assert sorted(q.name for q in tmp_path.rglob("*")) == ["ck", "s.nwb", "x.pt"]


def test_atomic_writes_leave_nothing_on_error(tmp_path):
    (tmp_path / "keep").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "keep", "w") as f:
            f.write("new")
            raise RuntimeError("writer failed")
    assert (tmp_path / "keep").read_text() == "old"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "other") as tmp:
            tmp.write_text("x")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    d = make_temp_dir(tmp_path, prefix=".b.")
    assert d.is_dir() and d.parent == tmp_path


def _simulate(*args):
    return subprocess.run([sys.executable, "-m", "rtdecode.cli", "simulate", "--minutes", "0.01", "--channels", "4",
                           *args], capture_output=True, text=True, timeout=120)  # fmt: skip


def test_simulate_refuses_a_non_empty_out_and_overwrite_replaces_the_old_sessions(tmp_path):
    out = tmp_path / "sim"
    r = _simulate("--out", str(out), "--sessions", "2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.nwb")) == ["sim-s00.nwb", "sim-s01.nwb"]
    again = _simulate("--out", str(out), "--sessions", "1")
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert again.stderr.startswith("rtdecode simulate: error: --out ")
    over = _simulate("--out", str(out), "--sessions", "1", "--overwrite")
    assert over.returncode == 0, over.stderr
    assert sorted(p.name for p in out.glob("*.nwb")) == ["sim-s00.nwb"]  # the earlier second session is gone
    assert json.loads((out / "simulation.json").read_text())["n_sessions"] == 1


def test_simulate_leaves_no_folder_behind_on_a_bad_config(tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text("[simulate]\nn_units = 5\nn_units_jitter = 30\n")  # refused by SimConfig
    r = _simulate("--out", str(tmp_path / "new"), "--config", str(cfg))
    assert r.returncode == 2 and "n_units" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_demo_quick_prints_its_bundle_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtdecode.cli", "demo", "--quick", "--out", str(tmp_path / "demo"),
                        "--duration", "5", "--address", "tcp://127.0.0.1:5597"], capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("[demo] bundle: "))
    path = line.removeprefix("[demo] bundle: ").split(" (")[0]
    assert (tmp_path / "demo" / "bundle").resolve() == __import__("pathlib").Path(path)
    assert (tmp_path / "demo" / "bundle" / "manifest.json").is_file()
