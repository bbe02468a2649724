"""`rtdecode streams` and the choice among several matching streams, against real LSL outlets
in other processes (tests/sources/lsl_outlet_proc.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rtdecode.sources.lsl import AmbiguousStreamError, LSLSource, StreamMismatchError, StreamNotFoundError
from tests.conftest import unique_name
from tests.helpers import make_bundle


@pytest.fixture(scope="module")
def bundle8(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b8") / "bundle", n_channels=8)


def _source(query: str, n_channels: int = 8, **kw) -> LSLSource:
    kw.setdefault("resolve_timeout", 5.0)
    return LSLSource(query, n_channels=n_channels, sampling_rate=1000.0, **kw)


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "rtdecode.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_streams_lists_every_stream_and_marks_which_fit(lsl_outlet, bundle8):
    kind = unique_name("LFPkind")
    fit = lsl_outlet(unique_name("Fit"), type=kind, channels=8)
    wrong = lsl_outlet(unique_name("Wrong"), type=kind, channels=4, format="int16", rate=500.0)
    r = _cli("streams", "--bundle", str(bundle8.path), "--json", "--timeout", "1.5")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}  # JSON only on stdout
    assert {fit.name, wrong.name} <= set(rows)
    a, b = rows[fit.name], rows[wrong.name]
    assert (a["type"], a["n_channels"], a["rate"], a["format"], a["source_id"]) == (kind, 8, 1000.0, "float32", fit.source_id)
    assert a["host"] and a["fits"] is True and a["problems"] == []
    assert b["fits"] is False and b["format"] == "int16" and b["rate"] == 500.0
    why = " ".join(b["problems"])
    assert "has 4 channels, bundle expects 8" in why and "500 Hz" in why
    assert "int16" not in why  # int16 is read (converted): only channels and rate are wrong

    t = _cli("streams", "--bundle", str(bundle8.path), "--timeout", "1.5")
    assert t.returncode == 0, t.stderr
    line_fit = next(ln for ln in t.stdout.splitlines() if ln.startswith(fit.name))
    line_wrong = next(ln for ln in t.stdout.splitlines() if ln.startswith(wrong.name))
    assert fit.source_id in line_fit and line_fit.rstrip().endswith("yes")
    assert "no: has 4 channels" in line_wrong
    assert t.stdout.splitlines()[0].split()[:7] == ["name", "type", "channels", "rate_hz", "format", "source_id", "host"]


def test_streams_with_a_bundle_that_names_its_channels_checks_each_fitting_streams_labels(lsl_outlet, tmp_path):
    """`run` compares a stream's channel labels with the bundle's names at connect; `streams
    --bundle` says beforehand what it will decide, from the stream's full header (which a
    resolve does not carry): as named, another order (reordered), other names (decoded by
    position, warned), or no labels."""
    names = [f"e{c:02d}" for c in range(8)]
    b = make_bundle(tmp_path / "named", n_channels=8, channel_names=names)
    kind = unique_name("LFPlab")
    same = lsl_outlet(unique_name("Same"), type=kind, channels=8, labels=",".join(names))
    shuffled = lsl_outlet(unique_name("Shuf"), type=kind, channels=8, labels=",".join(names[::-1]))
    numbered = lsl_outlet(unique_name("Num"), type=kind, channels=8)  # ch0..ch7: the names' numbers, in order
    foreign = lsl_outlet(unique_name("Foreign"), type=kind, channels=8, labels=",".join(f"A{c + 30}" for c in range(8)))
    bare = lsl_outlet(unique_name("Bare"), type=kind, channels=8, labels="none")
    wrong = lsl_outlet(unique_name("Four"), type=kind, channels=4, labels="a,b,c,d")
    r = _cli("streams", "--bundle", str(b.path), "--json", "--timeout", "1.5")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows[same.name]["channel_order"] == "as named" and rows[same.name]["channel_warning"] is None
    assert rows[shuffled.name]["channel_order"] == "reordered by name"
    assert rows[numbered.name]["channel_order"] == "as numbered"
    assert rows[foreign.name]["channel_order"].startswith("by position (labels are not")
    assert "A30, A31" in rows[foreign.name]["channel_warning"] and "e00, e01" in rows[foreign.name]["channel_warning"]
    assert rows[bare.name]["channel_order"] == "by position (the stream's channels carry no labels)"
    assert rows[wrong.name]["fits"] is False and "channel_order" not in rows[wrong.name]  # labels not read
    assert all(rows[o.name]["fits"] for o in (same, shuffled, numbered, foreign, bare))  # labels never make a misfit

    t = _cli("streams", "--bundle", str(b.path), "--timeout", "1.5")
    assert t.returncode == 0, t.stderr
    cell = {o.name: next(ln for ln in t.stdout.splitlines() if ln.startswith(o.name)) for o in (same, shuffled, numbered, foreign, bare)}
    assert cell[same.name].rstrip().endswith("yes") and cell[numbered.name].rstrip().endswith("yes")
    assert "yes, reordered by name" in cell[shuffled.name]
    assert "yes, but its channel labels (A30, A31" in cell[foreign.name] and "rtdecode info BUNDLE" in cell[foreign.name]
    assert "carry no labels" in cell[bare.name] and "nothing can check" in cell[bare.name]
    info = _cli("info", str(b.path))  # where the warning sends the user: the names, in the order decoded
    assert info.returncode == 0 and "channels (8), the order it decodes: " + ", ".join(names) in info.stdout


def test_streams_json_is_json_only(tmp_path):
    r = _cli("streams", "--timeout", "0.3", "--json")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)


@pytest.mark.parametrize("fit_first", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_of_two_streams_of_one_type_the_one_that_fits_is_taken_every_time(lsl_outlet, fit_first):
    kind = unique_name("LFP")
    names = {}
    for ch in ((8, 4) if fit_first else (4, 8)):
        names[ch] = lsl_outlet(unique_name(f"ch{ch}"), type=kind, channels=ch).name
    for _ in range(2):
        with _source(kind, n_channels=8) as src:
            assert src.info["name"] == names[8] and src.info["n_channels"] == 8
        with _source(kind, n_channels=4) as src:
            assert src.info["name"] == names[4]


def test_several_fitting_streams_are_refused_and_listed(lsl_outlet):
    kind = unique_name("LFP")
    a = lsl_outlet(unique_name("A"), type=kind, channels=8)
    b = lsl_outlet(unique_name("B"), type=kind, channels=8)
    lsl_outlet(unique_name("C"), type=kind, channels=4)
    src = _source(kind)
    with pytest.raises(AmbiguousStreamError) as err:
        src.open()
    msg = str(err.value)
    assert "2 LSL streams" in msg and a.source_id in msg and b.source_id in msg and "host '" in msg
    assert "--source-id" in msg and "rtdecode streams" in msg
    src.close()
    with _source(kind, source_id=b.source_id) as pinned:  # the fix the message names works
        assert pinned.info["name"] == b.name


def test_when_none_fits_each_candidate_says_why(lsl_outlet):
    kind = unique_name("LFP")
    a = lsl_outlet(unique_name("A"), type=kind, channels=4)
    b = lsl_outlet(unique_name("B"), type=kind, channels=8, rate=500.0)
    src = _source(kind, n_channels=8)
    with pytest.raises(StreamMismatchError) as err:
        src.open()
    msg = str(err.value)
    assert "none fits" in msg and a.name in msg and b.name in msg
    assert "has 4 channels, bundle expects 8" in msg and "nominal rate of 500 Hz, bundle expects 1000 Hz" in msg


def test_a_wrong_source_id_names_source_id_not_stream(lsl_outlet):
    o = lsl_outlet(unique_name("Sid"), channels=8)
    src = _source(o.name, source_id="not-" + o.source_id, resolve_timeout=0.5)
    with pytest.raises(StreamNotFoundError) as err:
        src.open()
    msg = str(err.value)
    assert o.source_id in msg and "--source-id" in msg and "rtdecode streams" in msg
    assert "--stream" not in msg


def test_run_resolve_timeout_flag_is_used(bundle8):
    missing = unique_name("Missing")
    r = _cli("run", "--bundle", str(bundle8.path), "--stream", missing, "--resolve-timeout", "0.4",
             "--address", "tcp://127.0.0.1:*")  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "within 0.4 s" in r.stderr and missing in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("error:") == 1


@pytest.mark.parametrize("labels, names, decided", [
    ("ch0,ch1,ch2", "0,1,2", "as numbered"),
    ("ch2,ch0,ch1", "0,1,2", "reordered by number"),
    ("E1,E2,E3", "chan-1,chan-2,chan-3", "as numbered"),
    ("a1,a2,a3", "A-01,A-02,A-03", "as numbered"),  # one group, written two ways
    ("e02,e00,e01", "e00,e01,e02", "reordered by name"),
    ("O1,O2,T3,T4", "Fp1,Fp2,C3,C4", "by position (labels are not the bundle's names)"),  # other electrodes
    ("O2,O1,T4,T3", "Fp1,Fp2,C3,C4", "by position (labels are not the bundle's names)"),
    ("B-000,B-001,B-002", "A-000,A-001,A-002", "by position (labels are not the bundle's names)"),  # another port
    ("ch0,ch1,", "0,1,2", "by position (1 of 3 channels carry no label)"),
])  # fmt: skip
def test_channels_match_by_number_only_within_one_unnamed_group(labels, names, decided):
    """A trailing number is the same channel only when neither side names an electrode group:
    'ch25' is '25', but 'B-025' (another headstage port) is not 'A-025', nor are O1, T3 (other
    electrodes of a montage) Fp1, C3. Those are decoded by position, with the warning."""
    from rtdecode.sources.lsl import channel_order

    perm, got, why = channel_order(labels.split(","), names.split(","))
    assert got == decided
    assert (perm is not None) == got.startswith("reordered")
    assert bool(why) == (got.startswith("reordered") or got.startswith("by position (labels"))
    if got == "reordered by number":
        assert [labels.split(",")[i] for i in perm] == ["ch0", "ch1", "ch2"]
