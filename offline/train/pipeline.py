"""`rtdecode distill`: the whole chain, end to end, from one config.

    sessions (simulate or NWB) -> causal chain features (rtdecode.dsp, normalised on the
    training sessions' training time) -> teacher (masked Poisson) -> distilled student
    (cosine + autoencoding) -> decoders (ridge on frozen latents; supervised) -> LFP-only
    baselines -> evaluation (held-out time, held-out sessions) -> ONNX -> bundle

    run_distill("configs/distill_tiny.toml", "runs/tiny")          # -> runs/tiny/bundle
    # (jobs > 1 spawns workers that import the calling script: call it under
    #  `if __name__ == "__main__":` there, as multiprocessing requires)
    torchrun --nproc_per_node 2 -m offline.train.pipeline --config ... --out ...

Every stage checkpoints atomically under <out>/checkpoints; `resume=True` skips finished
stages and continues a killed one from its last partial checkpoint, with the same result.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rtdecode.batch import r2_score
from rtdecode.config import ConfigError
from rtdecode.dsp import compute_features
from rtdecode.dsp.design import design_chain, fit_normalization

from ..models.heads import BehaviorHead
from ..models.student import LFPStudent
from ..models.teacher import SpikeTeacher
from .baselines import train_lfp_only
from .checkpoint import Checkpoints
from .config import DistillRunConfig, load_config
from .ddp import Dist, init_distributed, progress, run_stage
from .decode import PooledRidge, Ridge, fit_pooled_ridge, fit_ridge, fit_ridge_alphas, fit_ridge_val, lagged_features
from .distill import StudentObjective, fit_new_embedding, standardize_targets, student_latents, validator
from ..analysis.stats import StatsConfig, block_stats, paired_summary, stats_markdown
from .evaluate import choice_mean, choose_decoder, summarize, write_report
from .teacher import TeacherObjective, teacher_latents
from .windows import SessionData, split_time, split_validation

LABELS = {
    "teacher": "spike teacher (lagged ridge on its latents, reference)",
    "teacher_1bin": "spike teacher (ridge on one bin of its latents)",
    "ridge_spikes": "lagged ridge on binned spikes (sqrt counts)",
    "distilled": "distilled LFP, unsupervised (lagged ridge)",
    "distilled_1bin": "distilled LFP, unsupervised (ridge on one bin)",
    "distilled_sup": "distilled LFP, supervised",
    "lfp_multi": "LFP-only multi-session, supervised (pre-trained, fine-tuned)",
    "lfp_multi_unsup": "LFP-only multi-session, unsupervised (lagged ridge)",
    "lfp_multi_unsup_1bin": "LFP-only multi-session, unsupervised (ridge on one bin)",
    "lfp_single": "LFP-only single-session",
    "ridge_lfp": "lagged ridge on LFP features",
    "ridge_pooled": "lagged ridge on LFP features, one for every training session",
}
COMPARISONS = [("distilled", "lfp_multi_unsup"), ("distilled", "lfp_multi"), ("distilled", "lfp_single"), ("distilled_sup", "lfp_multi"),
               ("distilled_sup", "lfp_single"), ("distilled", "ridge_lfp"), ("teacher_1bin", "ridge_spikes")]  # fmt: skip
# exported-decoder candidates (export.choose) -> the evaluation row that stands for it
CHOICES = {"distilled": None, "lfp_only": "lfp_multi", "ridge": "ridge_lfp", "ridge_pooled": "ridge_pooled"}  # distilled: export.model's row
BEST_LFP_LABEL = "best LFP decoder (the bundle's, chosen on validation)"
RIDGES = ("ridge", "ridge_pooled")  # the candidates that export as a lagged ridge (no student)


def lags(cfg) -> int:
    """Bins of history every lagged ridge sees (the LFP-feature and spike baselines and every
    frozen-latent readout alike)."""
    return min(cfg.window_bins, 10)


# ------------------------------------------------------------------------------------------
# data


def load_sessions(cfg: DistillRunConfig) -> list:
    """Sessions from the simulator (seeded) or from NWB files, as `offline.data.session.Session`."""
    d = cfg.data
    if d.source == "simulate":
        from offline.data.simulate import SimConfig, simulate_dataset
        from rtdecode.config import from_dict

        knobs = dict(d.sim)
        fam = knobs.pop("family", "linear")
        if fam != "linear":  # [data.sim] family = "dynamics" | "hga": offline.data.families, FamilyConfig knobs
            from offline.data.families import FAMILIES, FamilyConfig, simulate_family

            if fam not in FAMILIES:
                raise ConfigError(f"distill config [data.sim]: family = {fam!r} is not a simulator family; one of {', '.join(FAMILIES)}")
            return simulate_family(fam, d.n_sessions, cfg.seed, from_dict(FamilyConfig, knobs, where="distill config [data.sim]"))
        sim = from_dict(SimConfig, knobs, where="distill config [data.sim]")
        out = simulate_dataset(sim, d.n_sessions, cfg.seed)
        return list(out.sessions if hasattr(out, "sessions") else out)
    return d.load_nwb()  # each file with its [data.nwb] mapping (per-file overrides applied); outputs checked alike


def channel_orders(sessions: list, ref: int = 0) -> list[np.ndarray | None]:
    """LFP column order of every session that puts its channels in session `ref`'s order, by
    channel id (recordings reorder channels across days; the shared student's patches must see
    the same electrodes in every session, as the runtime maps them by name). None where no
    reordering is needed or the sessions carry no comparable channel ids."""
    ids = [getattr(s, "channel_ids", None) for s in sessions]
    if any(i is None for i in ids):
        return [None] * len(sessions)
    want = [str(c) for c in ids[ref]]
    out = []
    for i in ids:
        have = [str(c) for c in i]
        if sorted(have) != sorted(want) or len(set(have)) != len(have):
            return [None] * len(sessions)
        pos = {c: k for k, c in enumerate(have)}
        order = np.array([pos[c] for c in want])
        out.append(None if np.array_equal(order, np.arange(len(order))) else order)
    return out


def _lfp(s, order: np.ndarray | None) -> np.ndarray:
    return s.lfp if order is None else np.asarray(s.lfp)[:, order]


def prepare(sessions: list, cfg: DistillRunConfig):
    """Design the chain, fit its normalisation on the training sessions' training time (chain.normalize
    "pooled"; "session": each session, unseen ones too, on its own fit + validation bins, no
    behaviour read; the returned chain holds the export session's), and compute every session's
    features exactly as the runtime will (compute_features)."""
    n_train = len(sessions) - cfg.data.held_out_sessions
    if n_train < 1:
        raise ConfigError(f"data.held_out_sessions = {cfg.data.held_out_sessions} leaves no training session "
                          f"out of {len(sessions)}")  # fmt: skip
    s0 = sessions[0]

    def named(s) -> str:  # a session by its id, and its file when it came from one
        f = getattr(s, "source_file", None)
        return f"session {s.session_id}" + (f" ({f})" if f else "")

    for s in sessions:
        if s.lfp.shape[1] != s0.lfp.shape[1] or s.lfp_rate != s0.lfp_rate or s.bin_width != s0.bin_width:
            raise ConfigError(f"{named(s)}: LFP {s.lfp.shape[1]} ch @ {s.lfp_rate} Hz, bins {s.bin_width} s; "
                              f"{named(s0)}: {s0.lfp.shape[1]} ch @ {s0.lfp_rate} Hz, bins {s0.bin_width} s. "
                              "One bundle serves one channel layout: pick sessions recorded the same way")  # fmt: skip
        if s.behavior.shape[1] != s0.behavior.shape[1]:
            raise ConfigError(f"{named(s)} has {s.behavior.shape[1]} behaviour outputs, {named(s0)} has {s0.behavior.shape[1]}")
    c = cfg.chain
    chain = design_chain(c.kind, fs=float(s0.lfp_rate), n_channels=int(s0.lfp.shape[1]), bin_width_s=float(s0.bin_width),
                         line_freq=c.line_freq or None, n_harmonics=c.n_harmonics, highpass_hz=c.highpass_hz or None,
                         lowpass_hz=c.lowpass_hz, filter_order=c.filter_order, car=c.car)  # fmt: skip
    w = cfg.window_bins
    orders = channel_orders(sessions, cfg.export.session)
    splits, raw = [], []
    for s, order in zip(sessions, orders):
        n = len(s.spikes)
        tr, te = split_time(n, cfg.data.test_fraction, cfg.data.guard_bins, min_bins=2 * w)
        fit, val = split_validation(tr, cfg.validation.fraction, cfg.data.guard_bins, min_bins=2 * w)
        splits.append((fit, val, te))
        st: dict = {}
        raw.append(compute_features(chain, _lfp(s, order), stats=st))
        if st["nonfinite"]:
            print(f"[distill] session {s.session_id}: {st['nonfinite']} LFP values are NaN or infinite "
                  f"({st['nonfinite'] / max(1, s.lfp.shape[0] * s.lfp.shape[1]):.3%}); held at the channel's last "
                  "finite value, as the runtime repairs them", file=sys.stderr, flush=True)  # fmt: skip
        if len(raw[-1]) != n:
            raise ConfigError(f"session {s.session_id}: the chain makes {len(raw[-1])} bins from its LFP, the spikes have "
                              f"{n} bins: LFP and spikes must cover the same time")  # fmt: skip
    if c.normalize == "session":  # each session on its own training time (fit + validation bins; no behaviour read)
        chains = [chain.with_normalization(*fit_normalization(np.concatenate([r[f], r[v]]))) for r, (f, v, _) in zip(raw, splits)]
        chains = [replace(ch, norm_scope="session") for ch in chains]
        chain = chains[cfg.export.session]
    else:
        mean, std = fit_normalization(np.concatenate([raw[i][splits[i][0]] for i in range(n_train)]))
        chain = chain.with_normalization(mean, std)
        chains = [chain] * len(sessions)
    data = []
    for s, (fit, val, te), order, ch in zip(sessions, splits, orders, chains):
        feats = compute_features(ch, _lfp(s, order))  # the bundle's chain, normalisation included
        data.append(SessionData(str(s.session_id), feats, np.asarray(s.spikes, np.float32),
                                np.asarray(s.behavior, np.float32), fit, te, val))  # fmt: skip
    return chain, data, n_train


# ------------------------------------------------------------------------------------------
# stages


def _train_teacher(cfg, data, train, ckpt, dd) -> SpikeTeacher:
    torch.manual_seed(cfg.seed + 1)
    teacher = SpikeTeacher(cfg.teacher, [data[i].spikes.shape[1] for i in train])
    obj = TeacherObjective(teacher, data, train, cfg.seq_bins(cfg.teacher_train), cfg.teacher_train.batch_size, cfg.seed)
    done = ckpt.done("teacher")
    if done is None:
        teacher.train()
        log: dict = {}
        losses = run_stage("teacher", obj, list(teacher.parameters()), cfg.teacher_train, ckpt, dd,
                           validate=validator(obj, cfg.validation.batches), log=log)  # fmt: skip
        ckpt.finish("teacher", {"model": teacher.state_dict(), "losses": losses, "early_stopping": log})
    else:
        teacher.load_state_dict(done["model"])
    return teacher.eval()


def _train_student(name, cfg, data, train, targets, ckpt, dd, init: LFPStudent | None, stage, behavior: float, nb: int,
                   mask_ratio: float | None = None):  # fmt: skip
    """Distillation (behavior = 0) or supervised distillation (behavior > 0, from `init`).
    `targets` None: the stage is finished and only loaded. `mask_ratio`: the pre-training's
    input masking (default loss.distill_mask_ratio; fine-tuning is always plain)."""
    torch.manual_seed(cfg.seed + 2)
    f = data[0].features.shape[1]
    student = copy.deepcopy(init) if init is not None else LFPStudent(cfg.student_cfg, f, nb, len(train), cfg.teacher.dim)
    head = BehaviorHead(cfg.student.dim, data[0].behavior.shape[1]) if behavior else None
    # reconstruction at weight loss.recon, as the LFP-only models' (_baseline_side); plain in
    # fine-tuning for both; in pre-training each student's own input masking (loss.distill_mask_ratio
    # here, loss.mask_ratio for the LFP-only one: the better objective for each, docs/distill.md)
    obj = StudentObjective(student, data, train, cfg.seq_bins(stage), stage.batch_size, cfg.seed, name,
                           align=cfg.loss.align if targets is not None else 0.0, recon=cfg.loss.recon, behavior=behavior * cfg.loss.behavior,
                           head=head, targets=targets,
                           mask_ratio=0.0 if behavior else (cfg.loss.distill_mask_ratio if mask_ratio is None else mask_ratio))  # fmt: skip
    done = ckpt.done(name)
    if done is None:
        student.train()
        log: dict = {}
        losses = run_stage(name, obj, list(obj.parameters()), stage, ckpt, dd,
                           validate=validator(obj, cfg.validation.batches) if targets is not None else None, log=log)  # fmt: skip
        ckpt.finish(name, {"model": obj.state_dict(), "losses": losses, "early_stopping": log})
    else:
        obj.load_state_dict(done["model"])
    return student.eval(), head


def objective_markdown(objectives: dict | None) -> str:
    """The report's section on the pre-training objectives chosen on validation (loss.choose_masking)."""
    if not objectives:
        return ""
    lines = ["", "### Pre-training objective of each student (chosen on the validation block)", "",
             "Both students pre-trained twice, plain and masked autoencoding; each keeps the one whose frozen "
             "latents a lagged ridge decodes better on the validation block (mean R² of every output over the "
             "training sessions). The rows above are the chosen ones.", "",
             "| student | plain | masked | chosen (share of the input hidden) |", "|---|---|---|---|"]  # fmt: skip
    for k, label in (("distilled", "distilled"), ("lfp_only", "LFP-only multi-session")):
        c = objectives.get(k)
        if c:
            v = c["val_r2"]
            lines.append(f"| {label} | {v['plain']:.3f} | {v['masked']:.3f} | **{c['chosen']}** ({c['mask_ratio']:g}) |")
    starts = {k: c.get("finetune_from") for k, c in objectives.items() if c and c.get("finetune_from")}
    if any(objectives[k]["chosen"] != t for k, t in starts.items()):
        lines += ["", "Fine-tuning started from the " + ", ".join(f"{t} candidate ({k})" for k, t in starts.items())
                  + " (loss.finetune_from)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _frozen_val_r2(model, data, train: list[int], cfg) -> float:
    """Validation R² (mean over outputs, then over the training sessions) of the lagged ridge on
    a pre-trained student's frozen latents, fit on each session's fit block: the evaluation's
    readout (`_ridge_decoder`), scored on the validation block only (the test block is not read)."""
    vals = []
    for i in train:
        s = data[i]
        fi, vi = _fit_idx(s, cfg.eval.fit_stride, cfg.window_bins), _val_idx(s)
        lat = np.zeros((s.n_bins, model.cfg.dim), np.float32)
        idx = np.concatenate([fi, vi])
        idx = np.unique((idx[:, None] - np.arange(lags(cfg))[None, :]).ravel())
        idx = idx[idx >= 0]
        lat[idx] = student_latents(model, s.features, i, cfg.window_bins, idx)
        xf, xv = lagged_features(lat, fi, lags(cfg)), lagged_features(lat, vi, lags(cfg))
        alpha = cfg.eval.ridge_alpha
        if np.ndim(alpha):
            _, _, val_r2 = fit_ridge_val(xf, s.behavior[fi], xv, s.behavior[vi], alpha)
        else:
            val_r2 = r2_score(s.behavior[vi], fit_ridge(xf, s.behavior[fi], float(alpha)).predict(xv))
        vals.append(float(np.mean(val_r2)))
    return float(np.mean(vals))


def _pretrain_choice(name: str, cfg, data, train: list[int], ckpt, fixed_ratio: float, train_one,
                     keep: dict | None = None) -> tuple:  # fmt: skip
    """A student's pre-training (stage `name`). Without loss.choose_masking: `train_one(name,
    fixed_ratio)`. With it: `train_one(name + "_plain", 0.0)` and `train_one(name + "_masked",
    loss.mask_ratio)` (each its own stage: own checkpoint, own batch order), and the one whose
    frozen latents decode better on the validation block (`_frozen_val_r2`; a tie keeps plain)
    is stored as stage `name` with the choice beside it, so everything after (fine-tuning,
    evaluation, `rtdecode analyze`) reads `name` as before. The same rule for the distilled and
    the LFP-only student. Returns (student, choice dict or None); `keep` (a dict) receives the
    candidates trained here, {tag: student}, for `_finetune_start`."""
    if not cfg.loss.choose_masking:
        return train_one(name, fixed_ratio), None
    done = ckpt.done(name)
    if done is not None and "objective_choice" in done:  # resumed: the choice was made
        choice = done["objective_choice"]
        return train_one(name, choice["mask_ratio"]), choice
    cands = {}
    for tag, ratio in (("plain", 0.0), ("masked", cfg.loss.mask_ratio)):
        m = train_one(f"{name}_{tag}", ratio)
        cands[tag] = (ratio, m, _frozen_val_r2(m, data, train, cfg))
    best = max(cands, key=lambda t: cands[t][2])  # max keeps the first of equals: plain
    choice = {"chosen": best, "mask_ratio": cands[best][0], "stage": f"{name}_{best}",
              "val_r2": {t: round(v[2], 6) for t, v in cands.items()},
              "finetune_from": best if cfg.loss.finetune_from == "chosen" else cfg.loss.finetune_from,
              "rule": "lagged ridge on the frozen latents, validation block, mean of every output over the training sessions"}  # fmt: skip
    model = cands[best][1]
    ckpt.finish(name, {"model": {f"student.{k}": v for k, v in model.state_dict().items()}, "objective_choice": choice})
    if keep is not None:
        keep.update({t: v[1] for t, v in cands.items()})
    return model, choice


def _finetune_start(name: str, cfg, chosen, choice: dict | None, train_one, kept: dict):
    """The pre-trained student fine-tuning starts from: the chosen one, or with loss.finetune_from
    "masked" / "plain" that candidate (`kept` from `_pretrain_choice`, or, in a resumed run, its
    finished stage `name`_tag, loaded). The same for both students. Records the start in
    `choice` ("finetune_from")."""
    if choice is None:
        return chosen
    tag = choice["finetune_from"] = choice["chosen"] if cfg.loss.finetune_from == "chosen" else cfg.loss.finetune_from
    if tag == choice["chosen"]:
        return chosen
    if tag in kept:
        return kept[tag]
    return train_one(f"{name}_{tag}", cfg.loss.mask_ratio if tag == "masked" else 0.0)  # resumed: loads the finished stage


# ------------------------------------------------------------------------------------------
# evaluation


def _fit_idx(sess: SessionData, stride: int, w: int) -> np.ndarray:
    """Fit-block bins (every stride-th, from the first full window)."""
    return np.arange(sess.train.start + w - 1, sess.train.stop, stride)


def _val_idx(sess: SessionData) -> np.ndarray:
    return np.arange(sess.val.start, sess.val.stop)


def _test_idx(sess: SessionData) -> np.ndarray:
    return np.arange(sess.test.start, sess.test.stop)


def _ridge_decoder(sess, lat, cfg, n_lags: int) -> tuple[Ridge, np.ndarray, np.ndarray]:
    """A ridge from the last `n_lags` bins of `lat` (n_bins, D) to behaviour: the penalty
    (a grid: per output) chosen on the validation block with fits on the fit block, then refit
    on fit + validation with that penalty. Returns (the refit ridge, validation R² per output of
    the fit-block ridge, test R² per output of the refit). The test block only scores."""
    fi, vi, te = _fit_idx(sess, cfg.eval.fit_stride, cfg.window_bins), _val_idx(sess), _test_idx(sess)
    x = {k: lagged_features(lat, idx, n_lags) for k, idx in (("fit", fi), ("val", vi), ("test", te))}
    y = {"fit": sess.behavior[fi], "val": sess.behavior[vi], "test": sess.behavior[te]}
    alpha = cfg.eval.ridge_alpha
    if np.ndim(alpha):
        r_fit, best, val_r2 = fit_ridge_val(x["fit"], y["fit"], x["val"], y["val"], alpha)
    else:
        r_fit, best = fit_ridge(x["fit"], y["fit"], float(alpha)), np.full(y["fit"].shape[1], float(alpha))
        val_r2 = r2_score(y["val"], r_fit.predict(x["val"]))
    r = fit_ridge_alphas(np.concatenate([x["fit"], x["val"]]), np.concatenate([y["fit"], y["val"]]), best)
    return r, np.asarray(val_r2), r2_score(y["test"], r.predict(x["test"]))


def _ridge_rows(model, split, sess, lat, cfg, n_lags: int | None = None) -> dict:
    """Ridge readout row: `n_lags` bins (default `lags(cfg)`, as every lagged baseline) of the
    session's per-bin latents `lat` (n_bins, D)."""
    n_lags = lags(cfg) if n_lags is None else n_lags
    r, val_r2, r2 = _ridge_decoder(sess, lat, cfg, n_lags)
    te = _test_idx(sess)  # per-time-block statistics of the test block: the block bootstrap (offline.analysis.stats)
    blocks = block_stats(sess.behavior[te], r.predict(lagged_features(lat, te, n_lags)))
    return {"model": model, "split": split, "session": sess.session_id, "r2": r2.tolist(), "val_r2": val_r2.tolist(), "blocks": blocks}


def _head_rows(model, split, sess, lat, head) -> dict:
    """Supervised head row: its z-scored outputs put back in the session's units."""
    with torch.no_grad():
        pred = {k: sess.unz(head(torch.from_numpy(lat[idx])).numpy()) for k, idx in (("val", _val_idx(sess)), ("test", _test_idx(sess)))}
    return {"model": model, "split": split, "session": sess.session_id,
            "r2": r2_score(sess.behavior[_test_idx(sess)], pred["test"]).tolist(),
            "val_r2": r2_score(sess.behavior[_val_idx(sess)], pred["val"]).tolist(),
            "blocks": block_stats(sess.behavior[_test_idx(sess)], pred["test"])}  # fmt: skip


def _eval_bins(sess: SessionData, cfg) -> np.ndarray:
    """Every bin any decoder of this session reads (the same for all models): the fit,
    validation and test bins and the `lags(cfg)` - 1 bins before each."""
    idx = np.concatenate([_fit_idx(sess, cfg.eval.fit_stride, cfg.window_bins), _val_idx(sess), _test_idx(sess)])
    idx = (idx[:, None] - np.arange(lags(cfg))[None, :]).ravel()
    return np.unique(idx[idx >= 0])


def _latents(model, sess, emb, cfg) -> np.ndarray:
    """(n_bins, D) per-bin latents of one session, computed ONCE per (model, session, embedding)
    on the bins the evaluation uses (others are left at zero and never read)."""
    idx = _eval_bins(sess, cfg)
    out = np.zeros((sess.n_bins, model.cfg.dim), np.float32)
    out[idx] = student_latents(model, sess.features, emb, cfg.window_bins, idx)
    return out


def _spike_rows(split, sess, cfg) -> dict:
    """The lagged ridge on the binned spikes (square-root counts): the bar the teacher's
    single-bin latents must reach."""
    return _ridge_rows("ridge_spikes", split, sess, np.sqrt(sess.spikes), cfg)


def pooled_ridge(cfg, data, n_train: int) -> PooledRidge:
    """The lagged ridge on the LFP features of every training session at once (the same lags,
    fit bins and penalty grid as `_ridge_decoder`): the linear counterpart of the multi-session
    students, which also learn from every training session. It is shipped to days it never saw,
    so its penalty is chosen per output by the sessions' mean leave-one-session-out validation
    R² (`fit_pooled_ridge`), and those figures, one choice among the grid made on them, are its
    transfer estimate."""
    n = lags(cfg)

    def blocks(j):
        s = data[j]
        fi, vi = _fit_idx(s, cfg.eval.fit_stride, cfg.window_bins), _val_idx(s)
        return lagged_features(s.features, fi, n), s.behavior[fi], lagged_features(s.features, vi, n), s.behavior[vi]

    alpha = cfg.eval.ridge_alpha
    return fit_pooled_ridge(blocks, n_train, alpha if np.ndim(alpha) else [float(alpha)])


def pooled_rows(cfg, data, n_train: int, pr: PooledRidge) -> list[dict]:
    """The pooled ridge's held-out-time rows (each training session's test block, scored only),
    with its validation R² and, as "val_r2_loso", the same block from a ridge that never saw the session."""
    rows = []
    for j in range(n_train):
        s, te = data[j], _test_idx(data[j])
        pred = pr.ridge.predict(lagged_features(s.features, te, lags(cfg)))
        rows.append({"model": "ridge_pooled", "split": "held_out_time", "session": s.session_id,
                     "r2": r2_score(s.behavior[te], pred).tolist(), "val_r2": pr.val_r2[j].tolist(),
                     "val_r2_loso": pr.loso_val_r2[j].tolist(), "blocks": block_stats(s.behavior[te], pred), "_i": j})  # fmt: skip
    return rows


def _unsup_rows(name, split, sess, lat, cfg) -> list[dict]:
    """A frozen-latent readout with the baselines' lags, and the single-bin figure beside it."""
    return [_ridge_rows(name, split, sess, lat, cfg), _ridge_rows(f"{name}_1bin", split, sess, lat, cfg, 1)]


_ROW_ORDER = ("ridge_lfp", "ridge_pooled", "ridge_spikes", "lfp_single", "teacher", "distilled", "distilled_sup", "lfp_multi", "lfp_multi_unsup")
_SPLIT_ORDER = ("held_out_time", "held_out_sessions_zero_shot", "held_out_sessions_new_embedding")


def row_order(r: dict) -> tuple:
    """A row's place in the report: session, model (its single-bin row after it), split. The same
    whichever process computed the row, so that one and two processes give the same list."""
    m = r["model"]
    base = m[: -len("_1bin")] if m.endswith("_1bin") else m
    k = _ROW_ORDER.index(base) if base in _ROW_ORDER else len(_ROW_ORDER)
    return (r["_i"], k, m != base, _SPLIT_ORDER.index(r["split"]) if r["split"] in _SPLIT_ORDER else 9, m)


def evaluate_all(cfg, data, n_train, models: dict, which: list[int] | None = None, bar: bool = True,
                 part: str = "all") -> list[dict]:  # fmt: skip
    """R² rows for every model and split (of sessions `which`, default all; each row tagged
    "_i": its session's index), on the test block, with "val_r2" on the validation block.
    Ridge decoders are fit on the fit block with their penalty chosen on the validation block,
    refit on both and tested on the test block of the same session, with the same bins for
    every model; every frozen-latent readout gets the lagged baselines' lags (and a single-bin
    row "<model>_1bin"). Every session's numbers depend on that session alone (its random
    draws are seeded by its index). `part`: "all", "baselines" (the ridges and the LFP-only
    models: what `_baseline_side` trains, so that its process evaluates them while the teacher
    chain still trains) or "teacher" (the teacher, distilled and distilled_sup rows). Sort with `row_order`."""
    if part not in ("all", "baselines", "teacher"):
        raise ValueError(f"part must be 'all', 'baselines' or 'teacher', got {part!r}")
    do_base, do_teacher = part in ("all", "baselines"), part in ("all", "teacher")
    train = list(range(n_train))
    which = list(range(len(data))) if which is None else list(which)
    tseq = cfg.seq_bins(cfg.teacher_train)
    z = cfg.eval.zero_shot_from
    out: list[dict] = []
    for i in progress(which, "evaluate", len(which), enabled=bar):
        rows: list[dict] = []
        s = data[i]
        split0 = "held_out_time" if i < n_train else "held_out_sessions_zero_shot"
        if do_base:
            # lagged ridge on the raw features and on the spikes, fit on this session's training time
            rows.append(_ridge_rows("ridge_lfp", split0, s, s.features, cfg))
            rows.append(_spike_rows(split0, s, cfg))
            if i >= n_train:
                rows += [{**r, "split": "held_out_sessions_new_embedding"} for r in rows[-2:]]
            if cfg.eval.single_session:
                st, hd = models["singles"][i]
                r = _head_rows("lfp_single", "held_out_time", s, _latents(st, s, 0, cfg), hd)
                if i < n_train:
                    rows.append(r)
                else:
                    rows += [{**r, "split": "held_out_sessions_zero_shot"}, {**r, "split": "held_out_sessions_new_embedding"}]
        if i < n_train:
            if do_teacher:
                lat_t = teacher_latents(models["teacher"], s.spikes, i, tseq)
                rows += _unsup_rows("teacher", "held_out_time", s, lat_t, cfg)
                rows += _unsup_rows("distilled", "held_out_time", s, _latents(models["distilled"], s, i, cfg), cfg)
                rows.append(_head_rows("distilled_sup", "held_out_time", s, _latents(models["sup"], s, i, cfg), models["sup_head"]))
            if do_base:
                rows.append(_head_rows("lfp_multi", "held_out_time", s, _latents(models["multi"], s, models["multi_map"][i], cfg),
                                       models["multi_head"]))  # fmt: skip
                if models["unsup"] is not None:  # its embeddings follow the training sessions' order, as the distilled student's
                    rows += _unsup_rows("lfp_multi_unsup", "held_out_time", s, _latents(models["unsup"], s, i, cfg), cfg)
            out += [{**r, "_i": i} for r in rows]
            continue
        # unseen session: the encoders are not trained on it; ridge on its latents
        unseen = []
        if do_teacher:
            unseen += [("distilled", models["distilled"], z), ("distilled_sup", models["sup"], z)]
        if do_base:
            unseen.append(("lfp_multi", models["multi"], models["multi_map"][train[z]]))
            if models["unsup"] is not None:
                unseen.append(("lfp_multi_unsup", models["unsup"], z))
        for name, model, emb0 in unseen:
            one = _unsup_rows if name in ("distilled", "lfp_multi_unsup") else (lambda *a: [_ridge_rows(*a)])
            rows += one(name, "held_out_sessions_zero_shot", s, _latents(model, s, emb0, cfg), cfg)
            m2 = copy.deepcopy(model)
            e2 = fit_new_embedding(m2, s, emb0, cfg.eval.new_embedding_bins, cfg.eval.new_embedding_steps,
                                   cfg.seq_bins(cfg.distill), 8, cfg.seed)  # fmt: skip
            m2.eval()
            rows += one(name, "held_out_sessions_new_embedding", s, _latents(m2, s, e2, cfg), cfg)
        if do_teacher:  # the teacher needs a read-in for the new units: fit it (masked modelling) on a little data
            t2 = copy.deepcopy(models["teacher"])
            torch.manual_seed(cfg.seed + 1000 + i)  # the new read-in's initial weights
            k = t2.add_session(s.spikes.shape[1], z)
            obj = TeacherObjective(t2, data, [i], tseq, 8, cfg.seed, f"teacher_new_{i}", max_bins=cfg.eval.new_embedding_bins)
            obj.session_map = {i: k}
            opt = torch.optim.Adam([*t2.session_parameters(k), t2.patch_emb], lr=3e-3)
            t2.train()
            for step in range(cfg.eval.new_embedding_steps):
                loss = obj(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t2.patch_emb.grad[:k] = 0
                opt.step()
            t2.eval()
            lat_t = teacher_latents(t2, s.spikes, k, tseq)
            rows += _unsup_rows("teacher", "held_out_sessions_new_embedding", s, lat_t, cfg)
        out += [{**r, "_i": i} for r in rows]
    return out


def _distilled_row(cfg) -> str:
    """The evaluation row that stands for the exported distilled student: the fine-tuned one's
    head, or the single-bin ridge on the unsupervised one's latents (its exported head)."""
    return "distilled_sup" if cfg.export.model == "distilled_sup" else "distilled_1bin"


def _real_units(head: BehaviorHead, sess: SessionData) -> BehaviorHead:
    """A head trained on z-scored behaviour with `sess`'s de-standardisation folded in: the
    bundle outputs the session's units."""
    out = copy.deepcopy(head)
    with torch.no_grad():
        sd, mu = torch.from_numpy(sess.beh_sd), torch.from_numpy(sess.beh_mu)
        out.linear.weight.mul_(sd[:, None])
        out.linear.bias.mul_(sd).add_(mu)
    return out


def _exported(cfg, data, models, chosen: str):
    """(student, head, session embedding) of the chosen decoder; for "ridge", (None, the lagged
    ridge on the export session's features, None); for "ridge_pooled", (None, the ridge of every
    training session, None)."""
    e = cfg.export.session
    s = data[e]
    if chosen == "ridge_pooled":
        return None, models["ridge_pooled"].ridge, None
    if chosen == "ridge":
        return None, _ridge_decoder(s, s.features, cfg, lags(cfg))[0], None
    if chosen == "lfp_only":
        return models["multi"], _real_units(models["multi_head"], s), models["multi_map"][e]
    if cfg.export.model == "distilled_sup":
        return models["sup"], _real_units(models["sup_head"], s), e
    # unsupervised: the single-bin ridge on its latents (fit as in the evaluation) becomes the head
    r = _ridge_decoder(s, _latents(models["distilled"], s, e, cfg), cfg, 1)[0]
    return models["distilled"], BehaviorHead.from_ridge(r.w, r.b), e


def _shipped(cfg, data, models, chosen: str):
    """A candidate as its bundle computes it: (session, bins) -> predictions in the export
    session's units, with the export session's readout and session embedding; nothing is refit
    on the session it is applied to (what `rtdecode run` does on a new day)."""
    student, head, emb = _exported(cfg, data, models, chosen)
    if student is None:  # the lagged ridge
        n = lags(cfg)
        return lambda s, idx: head.predict(lagged_features(s.features, idx, n))

    def predict(s, idx):
        lat = student_latents(student, s.features, emb, cfg.window_bins, idx)
        with torch.no_grad():
            return head(torch.from_numpy(lat)).numpy()

    return predict


def _trained(cfg, models, candidates) -> list[str]:
    """The candidates this run has a model for (a config can leave a student out)."""
    need = {"ridge": None, "ridge_pooled": "ridge_pooled", "lfp_only": "multi",
            "distilled": "sup" if cfg.export.model == "distilled_sup" else "distilled"}  # fmt: skip
    return [k for k in candidates if k in need and (need[k] is None or models.get(need[k]) is not None)]


def shipped_scores(cfg, data, n_train: int, models, candidates, idx: list[int] | None) -> dict:
    """Validation R² of each candidate as shipped (`_shipped`) on the training sessions other
    than export.session (mean over the outputs `idx`, then over those sessions): what
    export.choose_by = "transfer" compares. {} with a single training session. Reads only
    validation blocks. The pooled ridge was fit on those sessions too: its figure on each is that
    of a ridge fit on the other training sessions (`PooledRidge.loso_val_r2`), so it is not
    flattered as the multi-session students' figures are (its penalty was chosen on the same
    figures, one value of the grid per output)."""
    others = [j for j in range(n_train) if j != cfg.export.session]
    out = {}
    for k in _trained(cfg, models, candidates) if others else ():
        if k == "ridge_pooled":  # it was fit on every training session: leave the scored one out
            loso = models["ridge_pooled"].loso_val_r2
            out[k] = round(float(np.mean([choice_mean(loso[j], idx) for j in others])), 6)
            continue
        f = _shipped(cfg, data, models, k)
        per = []
        for j in others:
            vi = _val_idx(data[j])
            r2 = r2_score(data[j].behavior[vi], f(data[j], vi))
            per.append(choice_mean(r2, idx))  # each output floored, as the choice scores it
        out[k] = round(float(np.mean(per)), 6)
    return out


def shipped_rows(cfg, data, n_train: int, models, chosen: str) -> list[dict]:
    """The exported decoder as shipped on every session's test block (scored only: nothing is
    chosen on these): R² per output, with the session's role (export session, other training
    session, unseen session)."""
    f = _shipped(cfg, data, models, chosen)
    rows = []
    for i, s in enumerate(data):
        te = _test_idx(s)
        role = "export" if i == cfg.export.session else "training" if i < n_train else "unseen"
        rows.append({"session": s.session_id, "role": role, "r2": [round(float(v), 6) for v in r2_score(s.behavior[te], f(s, te))]})
    return rows


def shipped_unseen(cfg, data, n_train: int, models, candidates, idx: list[int] | None, block: str = "test") -> dict:
    """Every candidate as shipped on the unseen sessions' test blocks (`block` "test": scored
    only, after the choice: what each would have given on new days) or validation blocks ("val":
    what export.choose_by = "unseen" compares; no candidate trained on these sessions, and their
    test blocks are not read): mean R² (outputs `idx`, then sessions)."""
    blocks = {"test": _test_idx, "val": _val_idx}[block]
    out = {}
    for k in _trained(cfg, models, candidates) if len(data) > n_train else ():
        f = _shipped(cfg, data, models, k)
        per = []
        for s in data[n_train:]:
            te = blocks(s)
            r2 = r2_score(s.behavior[te], f(s, te))
            # validation (the choice): each output floored as the choice scores it; test: raw R²
            per.append(choice_mean(r2, idx) if block == "val" else float(np.mean(r2 if idx is None else r2[idx])))
        out[k] = round(float(np.mean(per)), 6)
    return out


def shipped_markdown(rows: list[dict], names: list[str], choice: dict, idx: list[int] | None,
                     unseen_all: dict | None = None, session_norm: bool = False) -> tuple[str, str | None]:  # fmt: skip
    """The report's table of the exported decoder as shipped, and a warning when it does not
    carry over to the unseen sessions (their mean R² on the chosen outputs below half its
    validation figure, or not positive). `unseen_all`: every candidate's mean there (`shipped_unseen`)."""
    pick = (lambda r: r) if idx is None else (lambda r: [r[k] for k in idx])
    pooled = choice["chosen"] == "ridge_pooled"
    whose = ("its one readout for every training session" if pooled else
             f"export session {next((r['session'] for r in rows if r['role'] == 'export'), '?')}'s "
             + ("readout" if choice["chosen"] == "ridge" else "readout and session embedding"))  # fmt: skip
    lines = ["", "### The exported decoder as shipped (no refit)", "",
             f"**{choice['chosen']}** with {whose}, on every session's test block, as `rtdecode run` decodes a new day: nothing "
             + ("refit but the z-scoring ([chain] normalize = \"session\": each session's features on its own training "
                "time's statistics, no behaviour read, as `rtdecode run --renormalize` or `rtdecode calibrate --label-free` "
                "gives a new day)" if session_norm else "refit")
             + ". (The 'zero-shot' rows above refit every readout on the unseen session's training time, as in the "
             "paper: they are what a lab gets after a calibration block, these what it gets without one.)", "",
             "| session | role | " + " | ".join(names) + " | mean |", "|---|---|" + "---|" * (len(names) + 1)]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['session']} | {r['role']} | " + " | ".join(f"{v:.3f}" for v in r["r2"]) + f" | {np.mean(pick(r['r2'])):.3f} |")
    unseen = [float(np.mean(pick(r["r2"]))) for r in rows if r["role"] == "unseen"]
    own = (choice.get("val_r2_own") or {}).get(choice["chosen"])
    warn = None
    if unseen:
        m = float(np.mean(unseen))
        what = "all outputs" if idx is None else ", ".join(names[k] for k in idx)
        lines += ["", f"Mean over the {len(unseen)} unseen session{'s' if len(unseen) > 1 else ''} ({what}): **{m:.3f}**"
                  + (f"; its validation figure with each session's own readout: {own:.3f}." if own is not None else ".")]  # fmt: skip
        if unseen_all:
            lines.append("Every candidate as shipped there (scored after the choice, not used for it): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in sorted(unseen_all.items(), key=lambda kv: -kv[1])) + ".")  # fmt: skip
        if own is not None and (m <= 0 or m < 0.5 * own):
            warn = (f"the exported decoder ({choice['chosen']}) reaches R² {m:.3f} on the unseen sessions as shipped ("
                    + ("its readout" if pooled else "its export session's readout")
                    + f", no refit), against {own:.3f} on validation with each session's own readout: "
                    + ("it keeps less than half of that on new days as it is" if own > 0 and m > 0 else
                       "it does not decode new days as it is (R² at or below 0: no better than each output's mean)")
                    + ". On a new day, refit its readout on a few minutes "
                    "recorded with behaviour: rtdecode calibrate BUNDLE FILE --out NEW --minutes 2"
                    + ("; export.choose_by = \"unseen\" ships the candidate that decodes the unseen sessions' "
                       "validation blocks best as shipped" if choice.get("by") != "unseen" else ""))  # fmt: skip
            lines.append(f"WARNING: {warn}.")
    return "\n".join(lines) + "\n", warn


# ------------------------------------------------------------------------------------------
# the run


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _teacher_side(cfg, data, n_train, nb, ckpt, dd, tick=lambda name: None):
    """Teacher -> distilled student -> supervised distilled student (each loaded when finished)."""
    train = list(range(n_train))
    teacher = _train_teacher(cfg, data, train, ckpt, dd)
    targets = None
    if not (ckpt.has("distill") and ckpt.has("distill_sup")):  # the frozen teacher's latents, to align to
        tseq = cfg.seq_bins(cfg.teacher_train)
        targets = {i: teacher_latents(teacher, data[i].spikes, i, tseq) for i in train}
        targets = standardize_targets(targets, data, cfg.loss.standardize_targets)
    tick("teacher")
    pretrain = lambda name, ratio: _train_student(name, cfg, data, train, targets, ckpt, dd, None, cfg.distill, 0.0, nb, ratio)[0]  # noqa: E731
    kept: dict = {}
    distilled, choice = _pretrain_choice("distill", cfg, data, train, ckpt, cfg.loss.distill_mask_ratio, pretrain, kept)
    start = _finetune_start("distill", cfg, distilled, choice, pretrain, kept)
    tick("distill")
    sup, sup_head = _train_student("distill_sup", cfg, data, train, targets, ckpt, dd, start, cfg.supervised, 1.0, nb)
    tick("supervised")
    return {"teacher": teacher, "distilled": distilled, "sup": sup, "sup_head": sup_head, "distilled_objective": choice}


def _baseline_side(cfg, data, n_train, nb, ckpt, dd, tick=lambda name: None):
    """The LFP-only baselines (no teacher: independent of `_teacher_side`)."""
    train = list(range(n_train))
    f = data[0].features.shape[1]
    vb = cfg.validation.batches
    pretrain = lambda name, ratio: train_lfp_only(name, cfg.student_cfg, data, train, f, nb, cfg.distill, cfg.seq_bins(cfg.distill),  # noqa: E731
                                                  cfg.seed + 5, cfg.loss.recon, ckpt, dd, supervised=False, mask_ratio=ratio,
                                                  val_batches=vb)[0]  # fmt: skip
    kept: dict = {}
    unsup, choice = _pretrain_choice("lfp_multi_unsup", cfg, data, train, ckpt, cfg.loss.mask_ratio, pretrain, kept)
    unsup.eval()
    start = _finetune_start("lfp_multi_unsup", cfg, unsup, choice, pretrain, kept)
    tick("lfp_multi_unsup")
    multi, multi_head, multi_map = train_lfp_only("lfp_multi", cfg.student_cfg, data, train, f, nb, cfg.supervised,
                                                  cfg.seq_bins(cfg.supervised), cfg.seed + 3, cfg.loss.recon, ckpt, dd,
                                                  init=start, behavior=cfg.loss.behavior, val_batches=vb)  # fmt: skip
    multi.eval()
    tick("lfp_multi")
    singles = {}
    if cfg.eval.single_session:
        for i in range(len(data)):
            st, hd, _ = train_lfp_only(f"lfp_single_{i}", cfg.student_cfg, data, [i], f, nb, cfg.single,
                                       cfg.seq_bins(cfg.single), cfg.seed + 4, cfg.loss.recon, ckpt, dd,
                                       behavior=cfg.loss.behavior, val_batches=vb)  # fmt: skip
            singles[i] = (st.eval(), hd)
        tick("lfp_single")
    return {"multi": multi, "multi_head": multi_head, "multi_map": multi_map, "unsup": unsup, "singles": singles,
            "lfp_only_objective": choice}


def _stage_worker(part: str, cfg, data, n_train: int, nb: int, root: str, which: list[int] | None = None,
                  resume: bool = True):  # fmt: skip
    """Another process's share of a run (jobs > 1). "baselines" trains the LFP-only models into
    the run's checkpoints, then evaluates them and the ridges on every session (while the
    teacher chain still trains in the main process): returns (timings, rows). "evaluate" loads
    the finished teacher-side models and returns their rows on sessions `which`. Every stage
    seeds itself and every batch is a function of (seed, stage, step), so the numbers match a
    one-process run."""
    from .ddp import BARS

    BARS["on"] = False
    torch.set_num_threads(max(1, cfg.threads))
    ckpt = Checkpoints(root, resume=resume or part == "evaluate", every=cfg.checkpoint_every, clear=False)
    if part == "baselines":
        tick = _Ticks(say=" 2nd process")
        models = _baseline_side(cfg, data, n_train, nb, ckpt, Dist(), tick)
        rows = evaluate_all(cfg, data, n_train, models, bar=False, part="baselines")
        pr = pooled_ridge(cfg, data, n_train)
        rows += pooled_rows(cfg, data, n_train, pr)
        tick("evaluate (baselines)")
        return tick.times, rows, pr
    missing = [st for st in ("teacher", "distill", "distill_sup") if not ckpt.has(st)]
    if missing:  # evaluate only what the run trained: never retrain here
        raise RuntimeError(f"{root}: stages {missing} are not finished; the evaluation worker only loads")
    models = _teacher_side(cfg, data, n_train, nb, ckpt, Dist())
    return evaluate_all(cfg, data, n_train, models, which=which, bar=False, part="teacher")


class _Ticks:
    """Stage timings: tick(name) records the seconds since the previous tick and, with `say`,
    prints one line per finished stage to stderr (a long run without a terminal, its output
    redirected to a log, shows where it is; the bars show only on a terminal)."""

    def __init__(self, say: str | None = None):
        self.times: dict[str, float] = {}
        self.start = self.last = time.perf_counter()
        self.say = say

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self.last, 2)
        self.last = now
        if self.say is not None:
            print(f"[distill{self.say}] {name}: done in {self.times[name]:.0f} s "
                  f"({(now - self.start) / 60:.1f} min since the start)", file=sys.stderr, flush=True)  # fmt: skip


def _stage_names(cfg, n_sessions: int) -> list[str]:
    singles = [f"lfp_single_{i}" for i in range(n_sessions)] if cfg.eval.single_session else []
    return ["teacher", "distill", "distill_sup", "lfp_multi_unsup", "lfp_multi", *singles]


def _eval_shares(n: int, n_train: int, jobs: int) -> list[list[int]]:
    """Sessions split into `jobs` shares of about equal evaluation cost (an unseen session costs
    about 3 training sessions: new embeddings are fit for every model), largest first."""
    cost = [1.0 if i < n_train else 3.0 for i in range(n)]
    shares: list[list[int]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for i in sorted(range(n), key=lambda i: -cost[i]):
        j = int(np.argmin(load))
        shares[j].append(i)
        load[j] += cost[i]
    return [sorted(s) for s in shares]


def _pool(jobs: int):
    """jobs - 1 worker processes (spawned: a forked copy of a process that has run torch's
    thread pools can hang), or None for jobs = 1."""
    if jobs <= 1:
        return None
    import concurrent.futures as cf
    import multiprocessing as mp

    pool = cf.ProcessPoolExecutor(jobs - 1, mp_context=mp.get_context("spawn"))
    pool.rtdecode_children_before = set(mp.active_children())  # for _stop: what the pool adds
    return pool


def _stop(pool) -> None:
    """Stop the workers mid-stage (after an error or Ctrl-C here, a process must not train
    on): what they finished is in the checkpoints, for --resume. Returns only when every
    process the pool started is gone: the executor's manager thread (which also joins them)
    has finished, and each process has an exit code."""
    import multiprocessing as mp

    procs = set((getattr(pool, "_processes", None) or {}).values())  # the executor's own record, and
    procs |= set(mp.active_children()) - getattr(pool, "rtdecode_children_before", set())  # any it lost
    manager = getattr(pool, "_executor_manager_thread", None)
    for p in procs:
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        manager.join(30)  # it reaps the workers (and would otherwise race with the joins below)
    late = set(mp.active_children()) - getattr(pool, "rtdecode_children_before", set())
    for p in procs | late:
        for sig in (p.terminate, p.kill):
            if p.exitcode is not None:
                break
            sig()
            deadline = time.monotonic() + 10
            while p.exitcode is None and time.monotonic() < deadline:  # exitcode polls: a join from two
                p.join(0.1)  # threads can miss the reaped child; the exit code is set by whichever reaps it
    mp.active_children()  # reap what has exited


def run_distill(config: str | Path | dict | DistillRunConfig, out_dir: str | Path, *, resume: bool = False,
                sessions: list | None = None) -> Path:  # fmt: skip
    """Run everything; returns the bundle folder (<out_dir>/bundle). `sessions` overrides the
    config's data source (a list of offline.data Session objects).

    With `jobs` > 1 (one process, no torchrun) the LFP-only baselines train in a second process
    while this one trains the teacher chain, and that process then evaluates them (and the
    ridges) while this one still trains; the teacher-side models' rows are evaluated here (split
    by session over any further workers). The models and metrics are the same as with jobs = 1
    (tests/offline/train)."""
    cfg = config if isinstance(config, DistillRunConfig) else load_config(config)
    torch.set_num_threads(max(1, cfg.threads))
    dd = init_distributed()
    out = Path(out_dir)
    ckpt = Checkpoints(out / "checkpoints", resume=resume, every=cfg.checkpoint_every, rank=dd.rank)
    tick = _Ticks(say="" if dd.main else None)
    times = tick.times

    sessions = sessions if sessions is not None else load_sessions(cfg)
    chain, data, n_train = prepare(sessions, cfg)
    unknown = [o for o in cfg.export.choose_outputs if o not in list(sessions[0].behavior_names)]
    if unknown:
        raise ConfigError(f"export.choose_outputs names {unknown}, which the data do not have; its outputs are "
                          f"{list(sessions[0].behavior_names)}")  # fmt: skip
    if cfg.export.session >= n_train or cfg.eval.zero_shot_from >= n_train:
        raise ConfigError(f"export.session ({cfg.export.session}) and eval.zero_shot_from ({cfg.eval.zero_shot_from}) "
                          f"must name a training session (0..{n_train - 1})")  # fmt: skip
    if cfg.export.choose_by == "unseen" and len(data) <= n_train:
        raise ConfigError("export.choose_by = \"unseen\" scores the candidates as shipped on the unseen sessions' "
                          "validation blocks, and this run holds out none: set data.held_out_sessions >= 1, or use "
                          "choose_by = \"own\"")  # fmt: skip
    if cfg.export.choose_by == "transfer" and n_train < 2:
        raise ConfigError(f"export.choose_by = \"transfer\" scores the candidates on the training sessions other than "
                          f"export.session, and this run has {n_train}: use choose_by = \"own\", or train on more sessions")  # fmt: skip
    tick("features")

    nb = chain.n_branches
    jobs = cfg.jobs if dd.world == 1 else 1  # under torchrun, DDP already uses every process
    if dd.main:
        print(f"[distill] {len(data)} sessions ({n_train} training, {len(data) - n_train} unseen); "
              + ("the teacher chain trains here, the LFP-only baselines in a 2nd process" if jobs > 1 else
                 "every stage in this process") + f"; checkpoints in {ckpt.root}", file=sys.stderr, flush=True)  # fmt: skip
    pool = _pool(jobs)
    try:
        if pool is not None:
            side = pool.submit(_stage_worker, "baselines", cfg, data, n_train, nb, str(ckpt.root), None, resume)

            def tick_and_check(name: str):  # a worker that failed stops the run now, not at the end
                tick(name)
                if side.done() and side.exception() is not None:
                    side.result()

            models = _teacher_side(cfg, data, n_train, nb, ckpt, dd, tick_and_check)
            # the teacher-side rows here (and in the jobs - 2 other workers); the baselines' rows
            # come from their own process, which evaluated them while the teacher chain trained
            mine, *theirs = _eval_shares(len(data), n_train, jobs - 1)
            futs = [pool.submit(_stage_worker, "evaluate", cfg, data, n_train, nb, str(ckpt.root), w) for w in theirs]
            rows = evaluate_all(cfg, data, n_train, models, which=mine, part="teacher") + [r for f in futs for r in f.result()]
            tick("evaluate (teacher-side models)")
            side_times, side_rows, pr = side.result()
            times.update({f"{k} (2nd process)": v for k, v in side_times.items()})
            rows += side_rows
            loader = Checkpoints(ckpt.root, resume=True, every=cfg.checkpoint_every)  # the baselines it wrote
            models.update(_baseline_side(cfg, data, n_train, nb, loader, dd), ridge_pooled=pr)
            tick("baselines (waiting for the 2nd process)")
        else:
            models = {**_teacher_side(cfg, data, n_train, nb, ckpt, dd, tick), **_baseline_side(cfg, data, n_train, nb, ckpt, dd, tick)}
            rows = evaluate_all(cfg, data, n_train, models) if dd.main else None
            if dd.main:
                models["ridge_pooled"] = pooled_ridge(cfg, data, n_train)
                rows += pooled_rows(cfg, data, n_train, models["ridge_pooled"])
            tick("evaluate")
        if rows is not None:
            rows.sort(key=row_order)  # session, model, split: the same list from one process or several
            for r in rows:
                r.pop("_i")
    except BaseException as e:
        if pool is not None:
            _stop(pool)
            from concurrent.futures.process import BrokenProcessPool

            if isinstance(e, BrokenProcessPool):
                raise RuntimeError(
                    f"a worker process of this run (jobs = {jobs}) died before it finished. If run_distill is "
                    "called from a script, put the call under `if __name__ == \"__main__\":` (the spawned worker "
                    "imports that script; its error is printed above), or set jobs = 1. Finished stages are kept "
                    "in the checkpoints: `--resume` (resume=True) continues from them") from e  # fmt: skip
        raise
    if pool is not None:
        pool.shutdown(wait=True)

    bundle_path = out / "bundle"
    if dd.main:
        names = list(sessions[0].behavior_names)
        kin = [k for k, nm in enumerate(names) if nm in ("vx", "vy", "grip")]
        subsets = {"velocity and grip (" + ", ".join(names[k] for k in kin) + ")": kin} if kin else None
        summary = summarize(rows, COMPARISONS, subsets=subsets, output_names=names)
        cands = {**CHOICES, "distilled": _distilled_row(cfg)}
        out_idx = [names.index(o) for o in cfg.export.choose_outputs] or None
        transfer = shipped_scores(cfg, data, n_train, models, cands, out_idx)
        unseen_val = shipped_unseen(cfg, data, n_train, models, cands, out_idx, block="val")
        choice = choose_decoder(rows, cfg.export.choose, cands, n_train, outputs=list(cfg.export.choose_outputs),
                                names=names, transfer=transfer, unseen=unseen_val, by=cfg.export.choose_by)  # fmt: skip
        shipped = shipped_rows(cfg, data, n_train, models, choice["chosen"])
        choice["shipped_unseen"] = shipped_unseen(cfg, data, n_train, models, cands, out_idx) or None
        shipped_md, choice["transfer_warning"] = shipped_markdown(shipped, names, choice, out_idx, choice["shipped_unseen"],
                                                                  session_norm=cfg.chain.normalize == "session")  # fmt: skip
        choice["shipped"] = shipped
        summary["export_choice"] = choice
        objectives = {k: models.get(f"{k}_objective") for k in ("distilled", "lfp_only")}
        summary["objective_choice"] = objectives if any(objectives.values()) else None
        summary["paired"] = paired_summary(rows, COMPARISONS + [("best_lfp", "ridge_lfp"), ("best_lfp", "ridge_pooled")], subsets,
                                           StatsConfig(seed=cfg.seed), shipped={None: choice["row"]})  # fmt: skip
        # CIs and n beside every p (offline.analysis.stats); best_lfp: the decoder the bundle ships
        report = write_report(summary, out / "report", LABELS)
        with open(report["markdown"], "a") as fh:
            fh.write(stats_markdown(summary["paired"], {**LABELS, "best_lfp": BEST_LFP_LABEL}))
            fh.write(objective_markdown(summary["objective_choice"]))
            fh.write(shipped_md)
        student, head, emb = _exported(cfg, data, models, choice["chosen"])
        s0 = sessions[cfg.export.session]
        prov = {
            "tool": "rtdecode distill",
            "config": cfg.to_dict(),
            "git_revision": git_revision(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "design": cfg.design,
            "sessions": [{"id": d.session_id, "role": "train" if i < n_train else "held_out", "n_units": int(d.spikes.shape[1]),
                          "n_bins": int(d.n_bins)} for i, d in enumerate(data)],  # fmt: skip
            "metrics": {"table": summary["table"], "tests": summary["tests"]},
            "decoder_choice": choice,
            "objective_choice": summary["objective_choice"],
            "timings_s": times,
            "world_size": dd.world,
        }
        units = list(getattr(s0, "behavior_units", None) or []) or None
        common = dict(provenance=prov, parity_tol=cfg.export.parity_tol, real_features=data[cfg.export.session].features[:256],
                      output_units=units,
                      channel_names=[str(c) for c in s0.channel_ids] if getattr(s0, "channel_ids", None) is not None else None,
                      extra_files={"report/metrics.md": report["markdown"], "report/metrics.json": report["json"],
                                   "report/r2.png": report["figure"]})  # fmt: skip
        if choice["chosen"] in RIDGES:
            from ..linear import export_ridge_bundle

            bundle = export_ridge_bundle(bundle_path, head, chain, lags(cfg), list(s0.behavior_names), **common)
        else:
            from ..export import export_bundle

            bundle = export_bundle(bundle_path, student, head, emb, chain, cfg.window_bins, list(s0.behavior_names),
                                   opset=cfg.export.opset, **common)  # fmt: skip
        tick("export")
        times["total"] = round(time.perf_counter() - tick.start, 2)
        (out / "timings.json").write_text(json.dumps(times, indent=1))
        del bundle
    if dd.world > 1:
        torch.distributed.barrier()
    return bundle_path


def demo_artifacts(config_path: str | Path, out_dir: str | Path):
    """For `rtdecode demo`: run the distillation of `config_path` into <out_dir>/run and return
    (bundle, a held-out session as a `rtdecode.recording.Recording`: raw LFP with its channels
    put in the bundle's order by channel id, behaviour at the bin rate)."""
    from rtdecode.bundle import load_bundle
    from rtdecode.recording import Recording

    cfg = load_config(config_path)
    sessions = load_sessions(cfg)
    path = run_distill(cfg, Path(out_dir) / "run", sessions=sessions)
    bundle = load_bundle(path)
    held, ref = sessions[-1], sessions[cfg.export.session]
    lfp = np.asarray(held.lfp)
    names = [str(c) for c in held.channel_ids]
    want = [str(c) for c in ref.channel_ids]
    if sorted(names) == sorted(want):  # the same electrodes in another order: map them
        lfp = lfp[:, [names.index(c) for c in want]]
        names = want
    rec = Recording(lfp, held.lfp_rate, channel_names=names, behavior=np.asarray(held.behavior, np.float32),
                    behavior_names=list(held.behavior_names), behavior_rate=1.0 / held.bin_width,
                    meta={"session": str(held.session_id), "role": "held_out" if cfg.data.held_out_sessions else "train"})  # fmt: skip
    return bundle, rec


def main_distill(config_path: str, out: str | None, resume: bool) -> int:
    """CLI entry (`rtdecode distill --config C [--out DIR] [--resume]`, also under torchrun): 0 on
    success, 2 on a bad config or data that does not fit it (one line, as rtdecode.cli prints)."""
    from rtdecode.cli import error_message

    from ..data.nwb import NWBMappingError
    from ..data.session import SessionError

    out_dir = Path(out) if out else Path("runs") / Path(config_path).stem
    try:
        path = run_distill(load_config(config_path), out_dir, resume=resume)
    except (ConfigError, NWBMappingError, SessionError) as e:
        print(f"rtdecode distill: error: {error_message(e)}", file=sys.stderr)
        return 2
    if init_distributed().main:
        print((out_dir / "report" / "metrics.md").read_text())
        print(f"bundle: {path}")
        choice = json.loads((out_dir / "report" / "metrics.json").read_text()).get("export_choice", {})
        for warn in (choice.get("warning"), choice.get("transfer_warning")):
            if warn:
                print(f"WARNING: {warn}")
    return 0


if __name__ == "__main__":  # torchrun --nproc_per_node N -m offline.train.pipeline --config C --out DIR
    ap = argparse.ArgumentParser(description="rtdecode distill (also under torchrun)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    sys.exit(main_distill(a.config, a.out, a.resume))
