"""The bundle contract: round trip, and refusal of every kind of broken bundle."""

import json
import shutil

import numpy as np
import pytest

from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
from rtdecode.batch import decode_recording, r2_score
from rtdecode.bundle import SCHEMA_VERSION, BundleError, load_bundle, update_manifest
from tests.helpers import make_bundle, synthetic_recording


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("b") / "bundle"
    make_bundle(path)
    return path


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def _edit(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


def test_round_trip_and_decoding(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.n_channels == 8 and b.sampling_rate == 1000.0 and b.model.window_bins == 10
    assert set(b.files) == {"model.onnx"} and b.manifest["schema_version"] == SCHEMA_VERSION
    lfp, beh = synthetic_recording(seed=1)  # another recording of the same "subject"
    y = decode_recording(b, lfp)
    assert y.shape == beh.shape
    assert (r2_score(beh[200:], y[200:]) > 0.9).all()


def test_the_manifest_says_the_input_is_microvolts_and_older_ones_read_as_such(bundle_dir, tmp_path):
    """input.unit: every training source is read in microvolts; a manifest written before the
    field existed loads as microvolts too (what those bundles were trained on)."""
    b = load_bundle(bundle_dir)
    assert b.manifest["input"]["unit"] == "uV" and b.input_unit == "uV"
    p = _copy(bundle_dir, tmp_path)
    _edit(p, lambda m: m["input"].pop("unit"))
    assert load_bundle(p).input_unit == "uV"


def test_refuses_a_changed_file(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    with open(p / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match=r"model.onnx \[files.model.onnx\]: sha256 mismatch"):
        load_bundle(p)


def test_refuses_a_truncated_model(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    data = (p / "model.onnx").read_bytes()
    (p / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(p)


def test_refuses_a_missing_file(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    (p / "model.onnx").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        load_bundle(p)


def test_refuses_newer_schema(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    _edit(p, lambda m: m.__setitem__("schema_version", SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match=r"\[schema_version\]: is 2, this rtdecode reads up to 1. upgrade rtdecode"):
        load_bundle(p)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m["input"].__setitem__("n_channels", 7), r"\[chain.n_channels\]: is 8, input.n_channels is 7"),
        (lambda m: m["input"].__setitem__("sampling_rate", 2000.0), r"\[chain.fs\]"),
        (lambda m: m["model"].__setitem__("kind", "rnn"), r"\[model.kind\]"),
        (lambda m: m["model"].__setitem__("window_bins", "10"), r"\[model.window_bins\]: must be int"),
        (lambda m: m["chain"].__setitem__("norm_std", [1.0]), r"\[chain\]: chain.norm_std has 1 values"),
        (lambda m: m["chain"].__setitem__("bins", 3), r"\[chain\]: chain: unknown key"),
        (lambda m: m["outputs"].__setitem__("names", []), r"\[outputs.names\]: is empty"),
        (lambda m: m.pop("files"), r"\[files\]: is missing"),
        (lambda m: m.__setitem__("format", "other"), r"\[format\]"),
        # found by a new-user probe: each names its own field once
        (lambda m: m["input"].__setitem__("n_channels", -1), r"\[input.n_channels\]: is -1, must be >= 1"),
        (lambda m: m["input"].__setitem__("sampling_rate", 0), r"\[input.sampling_rate\]: is 0, must be > 0 Hz"),
        (lambda m: m["input"].__setitem__("unit", "V"), r"\[input.unit\]: is 'V'; the chain's statistics are in microvolts"),
        (lambda m: m.pop("chain"), r"\[chain\]: is missing\. rebuild the bundle$"),
    ],
)
def test_refuses_bad_fields_naming_file_and_field(bundle_dir, tmp_path, mutate, match):
    p = _copy(bundle_dir, tmp_path)
    _edit(p, mutate)
    with pytest.raises(BundleError, match=r"manifest.json " + match):
        load_bundle(p)


def test_refuses_corrupt_json_and_non_bundles(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(p)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="manifest.json: is missing"):
        load_bundle(tmp_path / "empty")


def test_update_manifest_adds_a_hashed_file(bundle_dir, tmp_path):
    p = _copy(bundle_dir, tmp_path)
    extra = tmp_path / "report.txt"
    extra.write_text("hello")
    b = update_manifest(p, lambda m: m["provenance"].__setitem__("note", "x"), add_files={"report.txt": extra})
    assert "report.txt" in b.files and b.provenance["note"] == "x"
    (p / "report.txt").write_text("changed")
    with pytest.raises(BundleError, match="report.txt"):
        load_bundle(p)


def test_write_refuses_overwrite_and_unnormalised_chain(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="already exists"):
        make_bundle(bundle_dir)
    from rtdecode.bundle import ModelSpec, write_bundle
    from rtdecode.dsp.design import design_chain

    with pytest.raises(BundleError, match="no normalisation statistics"):
        write_bundle(tmp_path / "x", chain=design_chain("lfp", fs=1000.0, n_channels=2),
                     model_file=bundle_dir / "model.onnx", model=ModelSpec(), output_names=["a"])  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_onnxruntime_backend_output_is_a_stable_buffer(bundle_dir):
    b = load_bundle(bundle_dir)
    be = OnnxRuntimeBackend(b)
    x = np.random.default_rng(0).standard_normal((1, 10, 8)).astype(np.float32)
    y1 = be.infer(x)
    v1 = y1.copy()
    y2 = be.infer(x * 2)
    assert y1 is not None and np.shares_memory(y1, y2)  # no allocation per call
    assert not np.allclose(v1, y2)
