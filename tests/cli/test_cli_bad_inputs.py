"""The bad inputs of docs/errors.md (tools/bad_inputs.py), each through the real CLI in a
subprocess: the documented exit code, no traceback, a message that names the flag or file.
The fast cases (and a few that need streams, a busy port or corrupt bundles) run by default,
all of them with -m slow; `python tools/bad_inputs.py` rewrites the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "tools" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs"] = bad_inputs  # dataclasses look their module up
_spec.loader.exec_module(bad_inputs)

DEFAULT = {"run-address-busy", "run-bundle-sha", "run-bundle-schema", "run-config-typo", "run-stream-wrong",
           "run-stream-ambiguous", "run-source-id-wrong", "simulate-out-not-empty", "replay-foreign-npz",
           "run-config-bundle-beside"}  # fmt: skip


def _param(c):
    marks = [] if c.fast or c.id in DEFAULT else [pytest.mark.slow]
    if c.pending:
        marks.append(pytest.mark.xfail(reason=f"pending: {c.pending}", strict=False))
    return pytest.param(c, id=c.id, marks=marks)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    work = tmp_path_factory.mktemp("bad-inputs").resolve()
    bad_inputs.lsl_env(work)  # no-op under the test suite's own LSLAPICFG
    with bad_inputs.Fixtures(work) as fx:
        yield fx


@pytest.mark.parametrize("case", [_param(c) for c in bad_inputs.CASES])
def test_bad_input(case, fixtures):
    r = bad_inputs.run_case(case, fixtures)
    assert r.ok, f"rtdecode {' '.join(r.argv)}: {'; '.join(r.problems)}\n{r.stderr}"


def test_every_case_is_in_the_table():
    doc = (ROOT / "docs" / "errors.md").read_text()
    assert "tools/bad_inputs.py" in doc
    missing = [c.id for c in bad_inputs.CASES if f"| {c.id} |" not in doc]
    assert not missing, f"docs/errors.md lacks {missing}: run python tools/bad_inputs.py"
    assert "| **NO**" not in doc.replace("| as documented |", "")
