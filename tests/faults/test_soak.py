"""The CI-sized soak: bench/soak.py for ~15 s with a fault every 1.5 s (the 30-minute run
is the same script with --minutes 30; README "Faults")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_with_random_faults(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "0.25", "--fault-every", "1.5",
                        "--channels", "32", "--seed", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=180)  # fmt: skip
    res = json.loads((tmp_path / "soak.json").read_text())
    assert len(res["faults_injected"]) >= 3, res["faults_injected"]  # the run really was faulty
    assert res["crashed"] is None and res["runtime_exit_code"] == 0, res["crashed"]
    assert res["bins_received"] > 500
    assert res["seq_lost"] == 0 and res["seq_duplicated_or_backwards"] == 0
    assert res["cadence_breaks_unexplained"] == 0
    s = res["runtime_summary"]
    assert s["published"] == res["bins_received"]  # every published bin reached the subscriber
    assert "SOAK OK" in r.stdout, r.stdout + r.stderr
