"""The ring K/V cache (state layout "ring_v1"): parity with the older streaming step
(shift_v0) over 300 steps with many ring wraps, in PyTorch and in ONNX Runtime, for every
student size in configs/; the lean graph (the rings are only written, one slot a step);
bundles of the older layout still load and run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from offline.export import TENSORRT10_OPS, check_operators, export_bundle, export_onnx  # noqa: E402
from offline.models.heads import BehaviorHead, RingStreamingDecoder, StreamingDecoder  # noqa: E402
from offline.models.student import LFPStudent  # noqa: E402
from rtdecode.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from rtdecode.bundle import BundleError, load_bundle, update_manifest  # noqa: E402

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("distill_*.toml"))
W = 32  # ring of 32 bins: 300 steps wrap it 9 times
STEPS = 300


def _sizes():
    from offline.train.config import load_config

    out = []
    for c in CONFIGS:
        cfg = load_config(c)
        out.append((c.stem, replace(cfg.student, attn_window=W), int(cfg.data.sim.get("n_channels", 32))))
    return out


SIZES = _sizes()
IDS = [s[0] for s in SIZES]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these models are tiny, and the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _student(scfg, n_ch, dtype=torch.float32):
    torch.manual_seed(0)
    s = LFPStudent(scfg, n_ch, 1, n_sessions=2).eval().to(dtype)
    head = BehaviorHead(scfg.dim, 2).to(dtype)
    return s, head


def _rel(a, b) -> float:
    """|a - b| relative to b, floored at 1 % of b's largest magnitude (offline.export.parity)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / (np.abs(b) + 1e-2 * np.abs(b).max())).max())


def _inputs(n_ch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((STEPS, 1, 1, n_ch)).astype(np.float32)


def _shift_tokens(s, xs, dtype=torch.float32):
    """The older streaming step (shift_v0), per-token outputs (STEPS, P, D)."""
    kc, vc, n = torch.zeros(s.cache_shape(), dtype=dtype), torch.zeros(s.cache_shape(), dtype=dtype), torch.zeros(1)
    out = []
    with torch.no_grad():
        for x in xs:
            h, kc, vc, n = s.step_tokens(torch.from_numpy(x).to(dtype), 1, kc, vc, n)
            out.append(h[0].double().numpy())
    return np.stack(out)


def _ring_tokens(s, xs, phase0: float = 0.0):
    st = s.ring_state()
    ks, vs, n, ph = st[: s.cfg.n_layers], st[s.cfg.n_layers : -2], st[-2], st[-1] + phase0
    out = []
    with torch.no_grad():
        for x in xs:
            h, ks, vs, n, ph = s.step_ring_tokens(torch.from_numpy(x), 1, ks, vs, n, ph)
            out.append(h[0].double().numpy())
    return np.stack(out), n, ph


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_ring_step_equals_shift_step_in_pytorch(size):
    """300 steps, 9 wraps of a 32-bin ring: every token's output equals the older step's
    to float32 rounding (max error < 1e-5 of the largest output), and is as close to a
    float64 run of the older step as the older float32 step itself is. (Per value, near-zero
    outputs differ by ~2.5e-5 relative from float64 in both steps alike: float32 rounding.)"""
    _, scfg, n_ch = size
    s, _ = _student(scfg, n_ch)
    xs = _inputs(n_ch)
    old = _shift_tokens(s, xs)
    new, n, ph = _ring_tokens(s, xs)
    assert n.item() == W + STEPS % W  # folded counter: R + t mod R
    assert ph.min() >= 0 and ph.max() < 2 * np.pi
    err = np.abs(new - old).max() / np.abs(old).max()
    assert err < 1e-5, err
    truth = _shift_tokens(_student(scfg, n_ch, torch.float64)[0], xs, torch.float64)
    e_new, e_old = np.abs(new - truth).max(), np.abs(old - truth).max()
    assert e_new <= 1.5 * e_old, (e_new, e_old)
    assert _rel(new, truth) <= 1.5 * _rel(old, truth)
    lat_new, lat_old = new.mean(1), old.mean(1)  # the per-bin latent the head reads
    err = float(np.abs(lat_new - lat_old).max() / np.abs(lat_old).max())
    assert err < 1e-5, err


def test_ring_outputs_do_not_depend_on_how_long_the_stream_has_run():
    """Scores depend on position differences only: starting the phase anywhere in
    [0, 2 pi) (a stream that has run for hours) changes nothing beyond rounding."""
    _, scfg, n_ch = SIZES[0]
    s, _ = _student(scfg, n_ch)
    xs = _inputs(n_ch, seed=1)[: 2 * W + 5]
    ref, _, _ = _ring_tokens(s, xs)
    for phase0 in (1.0, 6.2):
        got, _, _ = _ring_tokens(s, xs, phase0)
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        assert err < 1e-5, err


def _old_bundle_step(s, head, xs):
    mod = StreamingDecoder(s, head, 1).eval()
    st = [torch.zeros(s.cache_shape()), torch.zeros(s.cache_shape()), torch.zeros(1)]
    out = []
    with torch.no_grad():
        for x in xs:
            y, *st = mod(torch.from_numpy(x), *st)
            out.append(y[0].numpy())
    return np.stack(out)


def _chain(n_ch):
    from rtdecode.dsp.design import design_chain

    chain = design_chain("lfp", fs=1000.0, n_channels=n_ch, line_freq=None)
    return chain.with_normalization(np.zeros(chain.n_features), np.ones(chain.n_features))


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_ring_bundle_in_onnxruntime_equals_shift_step(size, tmp_path):
    """The exported ring graph, run by the runtime's backend with the rings updated in
    place, decodes what the older PyTorch step decodes, over 300 steps; so does the older
    graph (shift_v0) exported from the same weights."""
    _, scfg, n_ch = size
    s, head = _student(scfg, n_ch)
    chain = _chain(n_ch)
    xs = _inputs(chain.n_features)
    ref = _old_bundle_step(s, head, xs)
    errs = {}
    for layout in ("ring_v1", "shift_v0"):
        b = export_bundle(tmp_path / layout, s, head, 1, chain, W, ["x", "y"], layout=layout)
        assert b.model.state_layout == layout
        with OnnxRuntimeBackend(b) as be:
            assert be.state_inplace == (layout == "ring_v1"), be.describe()
            got = np.stack([be.infer(x).copy() for x in xs])
        errs[layout] = (float(np.abs(got - ref).max() / np.abs(ref).max()), _rel(got, ref))
    # max error relative to the largest output; per value (floored at 1 % of the largest),
    # ONNX Runtime's float32 differs from PyTorch's by ~1e-5 for either graph alike
    assert errs["ring_v1"][0] < 1e-5 and errs["shift_v0"][0] < 1e-5, errs
    assert errs["ring_v1"][1] < 3e-5 and errs["shift_v0"][1] < 3e-5, errs


def test_ring_manifest_and_lean_graph(streaming_bundle):
    """The manifest records the layout and which states are rings; every ring input is
    read by exactly one node, the ScatterND writing the newest slot into the ring output
    (what makes in-place binding sound); no node copies, moves or transposes a tensor the
    size of a ring; TensorRT's parser has every operator."""
    b, student, _ = streaming_bundle
    m = json.loads((b.path / "manifest.json").read_text())["model"]
    assert m["state_layout"] == "ring_v1"
    rings = [s for s in b.model.state if s.inplace]
    assert len(rings) == 2 * student.cfg.n_layers and all(s["inplace"] for s in m["state"][: len(rings)])
    assert {s.input for s in b.model.state if not s.inplace} == {"n_seen", "phase"}
    ring_numel = int(np.prod(rings[0].shape))
    model = onnx.shape_inference.infer_shapes(onnx.load(str(b.model_path)))
    g = model.graph
    for r in rings:
        readers = [n for n in g.node if r.input in n.input]
        assert [n.op_type for n in readers] == ["ScatterND"] and list(readers[0].output) == [r.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*g.value_info, *g.output)}
    movers = {"Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Where", "Pad"}
    big = [(n.op_type, o) for n in g.node if n.op_type in movers for o in n.output if o in shapes and np.prod(shapes[o]) >= ring_numel]
    assert not big, big
    ops = check_operators(b.model_path, ("tensorrt",))
    assert set(ops) <= TENSORRT10_OPS and "ScatterND" in ops


def test_bundle_of_the_older_format_still_loads_and_runs(shift_bundle, tmp_path):
    """A streaming bundle written before the ring (no state_layout, no inplace marks in
    the manifest) loads as shift_v0 and runs, every state ping-pong."""
    import shutil

    b, student, head = shift_bundle
    shutil.copytree(b.path, tmp_path / "old")

    def strip(m):
        m["model"].pop("state_layout")
        for s in m["model"]["state"]:
            s.pop("inplace", None)

    old = update_manifest(tmp_path / "old", strip)
    assert "state_layout" not in json.loads((old.path / "manifest.json").read_text())["model"]
    assert old.model.state_layout == "shift_v0" and not any(s.inplace for s in old.model.state)
    assert [s.input for s in old.model.state] == ["k_cache", "v_cache", "n_seen"]
    xs = np.random.default_rng(5).standard_normal((20, 1, 1, old.n_features)).astype(np.float32)
    ref = _old_bundle_step(student, head, xs)
    with OnnxRuntimeBackend(old) as be:
        assert not be.state_inplace and "0 in place, 3 ping-pong" in be.describe()
        got = np.stack([be.infer(x).copy() for x in xs])
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_unknown_state_layout_is_refused_in_one_line(shift_bundle, tmp_path):
    import shutil

    b = shift_bundle[0]
    shutil.copytree(b.path, tmp_path / "b")
    mpath = tmp_path / "b" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["model"]["state_layout"] = "ring_v9"
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError) as ei:
        load_bundle(tmp_path / "b")
    msg = str(ei.value)
    assert "model.state_layout" in msg and "ring_v9" in msg and "upgrade rtdecode" in msg and "\n" not in msg


def test_ring_decoder_module_matches_student_step_ring():
    """RingStreamingDecoder (what is exported) is student.step_ring plus the head, with the
    state flattened in the order of offline.export.ring_state_names."""
    from offline.export import deployable, ring_state_names

    _, scfg, n_ch = SIZES[0]
    s, head = _student(replace(scfg, attn_window=8), n_ch)
    mod, ex, spec = deployable(s, head, 1, 8)
    assert isinstance(mod, RingStreamingDecoder) and spec.state_layout == "ring_v1"
    assert [(st.input, st.output) for st in spec.state] == ring_state_names(scfg.n_layers)
    assert [tuple(t.shape) for t in ex[1:]] == [st.shape for st in spec.state]
    x = torch.randn(1, 1, n_ch)
    with torch.no_grad():
        y, *state = mod(x, *ex[1:])
        st = s.ring_state()
        lat, *_ = s.step_ring(x, 1, st[: scfg.n_layers], st[scfg.n_layers : -2], st[-2], st[-1])
    torch.testing.assert_close(y, head(lat))
    assert state[-2].item() == 1 and state[0].abs().sum() > 0


def test_export_onnx_refuses_an_unknown_layout(tmp_path):
    from offline.export import ExportError

    _, scfg, n_ch = SIZES[0]
    s, head = _student(replace(scfg, attn_window=8), n_ch)
    with pytest.raises(ExportError, match="unknown state layout 'ring_v2'"):
        export_onnx(s, head, 1, 8, tmp_path / "m.onnx", layout="ring_v2")
