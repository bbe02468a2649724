"""ONNX export of the student: parity with PyTorch for every model size in configs/, the
parity record in the manifest, and refusal of operators a target cannot run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from offline.export import ExportError, SUPPORTED_OPS, TENSORRT10_OPS, check_operators, export_onnx, parity  # noqa: E402
from offline.models.heads import BehaviorHead  # noqa: E402
from offline.models.student import LFPStudent, StudentConfig  # noqa: E402
from rtdecode.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("distill_*.toml"))  # the student sizes


def _sizes():
    """(id, StudentConfig, window_bins, n_channels, teacher_dim) for every student size in
    configs/ plus the dataclass default (the paper's 6-layer 64-dim student)."""
    from offline.train.config import load_config

    out = []
    for c in CONFIGS:
        cfg = load_config(c)
        out.append((c.stem, cfg.student, cfg.window_bins, int(cfg.data.sim.get("n_channels", 32)), cfg.teacher.dim))
    out.append(("dataclass-default", StudentConfig(), 32, 32, None))
    return out


SIZES = _sizes()


@pytest.mark.parametrize("design", ["window", "streaming"])
@pytest.mark.parametrize("size", SIZES, ids=[s[0] for s in SIZES])
def test_onnxruntime_equals_pytorch_for_every_config_size(size, design, tmp_path):
    _, scfg, wb, n_ch, tdim = size
    scfg = replace(scfg, attn_window=wb if design == "streaming" else 0)
    torch.manual_seed(0)
    student = LFPStudent(scfg, n_ch, 1, n_sessions=2, teacher_dim=tdim).eval()
    head = BehaviorHead(scfg.dim, 2)
    spec = export_onnx(student, head, 1, wb, tmp_path / "m.onnx")
    assert spec.kind == design
    fresh = int(np.random.SeedSequence().entropy % 2**31)  # fresh random inputs every run
    par = parity(student, head, 1, spec, tmp_path / "m.onnx", n_trials=3, seed=fresh)
    assert par["random"]["n_inputs"] == (3 if design == "window" else 12)
    assert par["max_rel_error"] < 1e-4, (fresh, par)


def test_parity_record_separates_random_and_real(window_bundle):
    b, student, head = window_bundle
    par = b.provenance["export"]["parity"]
    for part in ("random", "real"):
        assert par[part]["n_inputs"] >= 1 and 0 <= par[part]["max_rel_error"] < 1e-4
        assert par[part]["max_abs_error"] <= par["max_abs_error"]
    assert par["max_rel_error"] == max(par["random"]["max_rel_error"], par["real"]["max_rel_error"])
    assert par["runtime"].startswith("onnxruntime ")
    exp = b.provenance["export"]
    assert exp["simplify"]["simplified"] in (True, False) and "why" in exp["simplify"] or exp["simplify"]["simplified"]
    assert set(exp["operators"]) <= TENSORRT10_OPS and "MatMul" in exp["operators"]


def test_streaming_parity_record(streaming_bundle):
    b, _, _ = streaming_bundle
    par = b.provenance["export"]["parity"]
    assert b.model.kind == "streaming" and b.model.state_layout == "ring_v1"
    assert len(b.model.state) == 2 * student_layers(b) + 2  # k and v ring per layer, n_seen, phase
    assert par["random"]["n_inputs"] == 20 and par["real"]["n_inputs"] == 20
    assert par["max_rel_error"] < 1e-4


def student_layers(b) -> int:
    return sum(1 for s in b.model.state if s.input.startswith("k_ring_"))


def test_bundle_backend_equals_pytorch(window_bundle, streaming_bundle):
    """The bundle written by export_bundle, run by the runtime's ONNX Runtime backend,
    decodes what PyTorch decodes (window: per window; streaming: a whole sequence)."""
    from offline.models.heads import StreamingDecoder, WindowDecoder

    rng = np.random.default_rng(7)
    b, student, head = window_bundle
    mod = WindowDecoder(student, head, 1).eval()
    with OnnxRuntimeBackend(b) as be, torch.no_grad():
        for _ in range(3):
            x = rng.standard_normal(be.input_shape).astype(np.float32)
            np.testing.assert_allclose(be.infer(x), mod(torch.from_numpy(x))[0].numpy(), rtol=1e-4, atol=1e-5)
    b, student, head = streaming_bundle
    mod = StreamingDecoder(student, head, 1).eval()  # the shift_v0 step: the ring graph must decode the same
    with OnnxRuntimeBackend(b) as be, torch.no_grad():
        assert be.state_inplace
        states = [torch.zeros(student.cache_shape()), torch.zeros(student.cache_shape()), torch.zeros(1)]
        for _ in range(20):  # longer than the ring (8 bins): the state must carry across a wrap
            x = rng.standard_normal(be.input_shape).astype(np.float32)
            y, *states = mod(torch.from_numpy(x), *states)
            np.testing.assert_allclose(be.infer(x), y[0].numpy(), rtol=1e-4, atol=1e-5)


def _graph(tmp_path, op: str, domain: str = "") -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(op, ["x"], ["y"], name=f"the_{op.lower()}", domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, str(path))
    return path


def test_operator_outside_the_tensorrt_set_is_refused(tmp_path):
    p = _graph(tmp_path, "Hardmax")  # standard ONNX, not converted by TensorRT's parser
    assert check_operators(p, ("onnxruntime",)) == ["Hardmax"]
    with pytest.raises(ExportError, match=r"tensorrt cannot run operator Hardmax \(node 'the_hardmax'"):
        check_operators(p)
    assert check_operators(_graph(tmp_path, "Relu")) == ["Relu"]


def test_custom_domain_operator_is_refused_for_every_target(tmp_path):
    p = _graph(tmp_path, "MyOp", domain="com.example")
    with pytest.raises(ExportError) as ei:
        check_operators(p, ("onnxruntime",))
    assert "onnxruntime cannot run operator com.example::MyOp" in str(ei.value)
    with pytest.raises(ExportError, match="unknown export target"):
        check_operators(_graph(tmp_path, "Relu"), ("tflite",))


def test_export_refuses_a_student_using_an_undeclared_operator(tmp_path, monkeypatch):
    """export_onnx runs the check: with Softmax taken out of the declared TensorRT set,
    exporting the real student is refused, naming Softmax and one of its nodes."""
    monkeypatch.setitem(SUPPORTED_OPS, "tensorrt", TENSORRT10_OPS - {"Softmax"})
    student = LFPStudent(StudentConfig(dim=16, n_layers=1, n_heads=2, patch_channels=4), 8, 1, 2).eval()
    with pytest.raises(ExportError, match=r"tensorrt cannot run operator Softmax \(node '.*Softmax"):
        export_onnx(student, BehaviorHead(16, 2), 0, 8, tmp_path / "m.onnx")
    spec = export_onnx(student, BehaviorHead(16, 2), 0, 8, tmp_path / "m.onnx", targets=("onnxruntime",))
    assert spec.kind == "window"
