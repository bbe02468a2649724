"""End to end `run_distill` on tiny sessions: bundle, runtime, determinism, resume, bad configs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sessions import tiny_sessions  # noqa: E402

torch.set_num_threads(1)
STAGE = {"steps": 12, "batch_size": 4, "warmup": 2}


def tiny_cfg(design="window", **over):
    cfg = {
        "seed": 0, "threads": 1, "window_bins": 8, "design": design, "checkpoint_every": 5,
        "data": {"held_out_sessions": 1, "guard_bins": 10},
        "chain": {"line_freq": 0, "lowpass_hz": 40.0},
        "teacher": {"dim": 16, "n_layers": 1, "n_heads": 2, "n_patches": 2},
        "student": {"dim": 16, "n_layers": 1, "n_heads": 2, "patch_channels": 4},
        "teacher_train": STAGE, "distill": STAGE, "supervised": STAGE, "single": STAGE,
        "eval": {"new_embedding_bins": 200, "new_embedding_steps": 3, "fit_stride": 3},
        "export": {"choose": "distilled"},  # the student's graph (the choice itself: test_export_choice...)
    }  # fmt: skip
    cfg.update(over)
    return cfg


def metrics(out: Path) -> dict:
    return json.loads((out / "report" / "metrics.json").read_text())


@pytest.mark.parametrize("design", ["window", "streaming"])
def test_run_distill_writes_a_bundle_the_runtime_runs(design, tmp_path):
    from offline.train.pipeline import run_distill
    from rtdecode.backends.onnxruntime import OnnxRuntimeBackend
    from rtdecode.batch import decode_recording
    from rtdecode.bundle import load_bundle

    sessions = tiny_sessions(n_bins=900)
    path = run_distill(tiny_cfg(design), tmp_path / "run", sessions=sessions)
    b = load_bundle(path)
    assert b.model.kind == design and b.model.window_bins == 8
    assert b.output_names == ("vx", "vy")
    prov = b.provenance
    assert prov["export"]["parity"]["max_rel_error"] < 1e-4
    assert prov["config"]["seed"] == 0 and prov["metrics"]["table"]["teacher"]
    assert [s["role"] for s in prov["sessions"]] == ["train", "train", "held_out"]
    assert (path / "report" / "r2.png").stat().st_size > 1000
    be = OnnxRuntimeBackend(b)
    y = decode_recording(b, sessions[0].lfp, backend=be)
    assert y.shape == (900, 2) and np.isfinite(y).all() and y.std() > 0
    rows = metrics(tmp_path / "run")["rows"]
    splits = {(r["model"], r["split"]) for r in rows}
    for m in ("teacher", "distilled", "distilled_sup", "lfp_multi", "lfp_multi_unsup", "lfp_single", "ridge_lfp"):
        assert (m, "held_out_time") in splits or m == "teacher"
    assert ("distilled", "held_out_sessions_zero_shot") in splits
    assert ("lfp_multi_unsup", "held_out_sessions_zero_shot") in splits
    assert ("distilled", "held_out_sessions_new_embedding") in splits
    assert ("teacher", "held_out_sessions_new_embedding") in splits


def test_bundle_decodes_as_the_torch_student_does(tmp_path, monkeypatch):
    """The bundle's online output (chain -> window ring -> ONNX) equals the offline decoding
    the pipeline evaluated (student latents on compute_features -> head)."""
    import offline.train.pipeline as pl
    from rtdecode.batch import decode_recording
    from rtdecode.bundle import load_bundle

    captured = {}
    real_export = pl.__dict__.get("export_bundle")
    import offline.export as ex

    orig = ex.export_bundle

    def spy(out, student, head, session, chain, window_bins, *a, **k):
        captured.update(student=student, head=head, session=session, chain=chain)
        return orig(out, student, head, session, chain, window_bins, *a, **k)

    monkeypatch.setattr(ex, "export_bundle", spy)
    del real_export
    sessions = tiny_sessions(n_bins=900)
    path = pl.run_distill(tiny_cfg("window", eval={"single_session": False, "new_embedding_steps": 1}), tmp_path / "r", sessions=sessions)
    b = load_bundle(path)
    lfp = sessions[0].lfp
    online = decode_recording(b, lfp)
    from rtdecode.dsp import compute_features

    feats = compute_features(captured["chain"], lfp)
    from offline.train.distill import student_latents

    with torch.no_grad():
        offline = captured["head"](torch.from_numpy(student_latents(captured["student"], feats, captured["session"], 8))).numpy()
    np.testing.assert_allclose(online, offline, rtol=1e-4, atol=1e-4)


def test_same_seed_same_metrics_and_resume_after_kill(tmp_path, monkeypatch):
    import offline.train.ddp as ddp
    import offline.train.pipeline as pl

    sessions = tiny_sessions(n_bins=700)
    cfg = tiny_cfg("window", eval={"single_session": False, "new_embedding_steps": 2})
    pl.run_distill(cfg, tmp_path / "a", sessions=sessions)

    real = ddp.run_stage

    class Killed(RuntimeError):
        pass

    def killing(name, objective, params, stage, ckpt=None, dd=ddp.Dist(), **kw):
        if name == "distill":  # die after the first partial checkpoint (step 5 of 12)
            def bomb(step, rank=0, world=1, _f=objective.forward):
                if step == 7:
                    raise Killed()
                return _f(step, rank, world)

            objective.forward = bomb
        return real(name, objective, params, stage, ckpt, dd, **kw)

    monkeypatch.setattr(pl, "run_stage", killing)
    with pytest.raises(Killed):
        pl.run_distill(cfg, tmp_path / "b", sessions=sessions)
    ck = tmp_path / "b" / "checkpoints"
    assert (ck / "teacher.pt").exists() and (ck / "distill.partial.pt").exists()
    assert torch.load(ck / "distill.partial.pt", weights_only=False)["step"] == 5
    monkeypatch.setattr(pl, "run_stage", real)
    pl.run_distill(cfg, tmp_path / "b", sessions=sessions, resume=True)
    a, b = metrics(tmp_path / "a")["rows"], metrics(tmp_path / "b")["rows"]
    assert a == b


def test_two_processes_give_the_same_models_and_metrics(tmp_path, capfd):
    """jobs = 2: the baselines train in a spawned process while this one trains the teacher
    chain, and the evaluation is split by session; every number equals the one-process run.
    Both processes print one line per finished stage (a run whose output goes to a log shows
    where it is)."""
    from offline.train.pipeline import _eval_shares, run_distill

    sessions = tiny_sessions(n_bins=700)
    cfg = tiny_cfg("streaming", eval={"new_embedding_bins": 200, "new_embedding_steps": 2, "fit_stride": 3})
    run_distill(cfg, tmp_path / "one", sessions=sessions)
    capfd.readouterr()
    run_distill({**cfg, "jobs": 2}, tmp_path / "two", sessions=sessions)
    err = capfd.readouterr().err
    for line in ("[distill] teacher: done in", "[distill 2nd process] lfp_multi: done in", "[distill] export: done in",
                 "the LFP-only baselines in a 2nd process"):  # fmt: skip
        assert line in err, err
    assert metrics(tmp_path / "one")["rows"] == metrics(tmp_path / "two")["rows"]
    for name in ("distill_sup", "lfp_multi", "lfp_single_2"):
        a = torch.load(tmp_path / "one" / "checkpoints" / f"{name}.pt", weights_only=False)["model"]
        b = torch.load(tmp_path / "two" / "checkpoints" / f"{name}.pt", weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    times = json.loads((tmp_path / "two" / "timings.json").read_text())
    assert "lfp_multi (2nd process)" in times and "lfp_multi" not in times
    # the evaluation shares: every session once, unseen sessions (3x the cost) spread out
    shares = _eval_shares(8, 5, 2)
    assert sorted(sum(shares, [])) == list(range(8))
    assert sorted(len([i for i in sh if i >= 5]) for sh in shares) == [1, 2]
    assert [3 * len([i for i in sh if i >= 5]) + len([i for i in sh if i < 5]) for sh in shares] == [7, 7]  # equal cost


def test_an_error_in_the_worker_process_is_raised_here(tmp_path):
    """jobs = 2: the baselines' process fails (single-session windows longer than a session's
    training time): its error, not a hang or a silent result, comes out of run_distill, and
    no worker is left running."""
    import multiprocessing as mp

    from offline.train.pipeline import run_distill

    before = set(mp.active_children())  # other tests' children, if any
    cfg = tiny_cfg("window", jobs=2, single={**STAGE, "seq_bins": 650})
    with pytest.raises(ValueError, match="no session has 650 bins of train time"):
        run_distill(cfg, tmp_path / "r", sessions=tiny_sessions(n_bins=700))
    assert set(mp.active_children()) - before == set()


def test_bad_config_key_is_rejected(tmp_path, capsys):
    from offline.train.config import load_config
    from offline.train.pipeline import main_distill
    from rtdecode.config import ConfigError

    p = tmp_path / "bad.toml"
    p.write_text("seed = 1\n[student]\ndim = 32\nn_layer = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'n_layer' \\(did you mean 'n_layers'\\?\\)"):
        load_config(p)
    assert main_distill(str(p), str(tmp_path / "out"), False) == 2
    assert "n_layer" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="design must be"):
        load_config({"design": "recurrent"})
    # a key an earlier version took: refused with what replaced it; a finished run's stored config loads
    old = {"seed": 1, "baseline": {"steps": 10}, "eval": {"unsupervised_baseline": True, "fit_stride": 3}}
    with pytest.raises(ConfigError, match=r"\[baseline\] is no longer a setting: .*\[supervised\] steps of fine-tuning"):
        load_config(old)
    assert load_config(old, legacy=True).eval.fit_stride == 3
    with pytest.raises(ConfigError, match="jobs must be >= 1"):
        load_config({"jobs": 0})


def test_shapes_that_do_not_fit_the_data_are_refused(tmp_path):
    from offline.train.pipeline import run_distill
    from rtdecode.config import ConfigError

    with pytest.raises(ValueError, match="patch_channels"):
        run_distill(tiny_cfg(student={"dim": 16, "n_layers": 1, "n_heads": 2, "patch_channels": 3}), tmp_path / "x",
                    sessions=tiny_sessions(n_bins=600))  # fmt: skip
    with pytest.raises(ValueError, match="too short"):
        run_distill(tiny_cfg(window_bins=400), tmp_path / "y", sessions=tiny_sessions(n_bins=600))
    with pytest.raises(ConfigError, match="leaves no training session"):
        run_distill(tiny_cfg(data={"held_out_sessions": 3}), tmp_path / "z", sessions=tiny_sessions(n_bins=600))
    with pytest.raises(ConfigError, match="choose_by = \"transfer\" scores the candidates on the training sessions other"):
        run_distill(tiny_cfg(data={"held_out_sessions": 2, "guard_bins": 10}, export={"choose": "best", "choose_by": "transfer"}),
                    tmp_path / "t", sessions=tiny_sessions(n_bins=600))  # fmt: skip (one training session: refused before training)
    assert not (tmp_path / "t" / "checkpoints").exists() or not any((tmp_path / "t" / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match="choose_by = \"unseen\" scores the candidates as shipped on the unseen"):
        run_distill(tiny_cfg(data={"held_out_sessions": 0}, export={"choose": "best", "choose_by": "unseen"}),
                    tmp_path / "u", sessions=tiny_sessions(n_bins=600))  # fmt: skip (refused before training)
    assert not (tmp_path / "u" / "checkpoints").exists() or not any((tmp_path / "u" / "checkpoints").iterdir())
    with pytest.raises(ConfigError, match=r"export.choose_outputs names \['speed'\].*its outputs are"):
        run_distill(tiny_cfg(export={"choose": "best", "choose_outputs": ["speed"]}), tmp_path / "w",
                    sessions=tiny_sessions(n_bins=600))  # fmt: skip
