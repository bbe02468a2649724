"""What limits distillation: training variants on a finished run's data, teacher and pre-trained
students, each decoded as the run decodes (velocity and grip R², mean over sessions).

    python bench/distill_variants.py --run runs/default --variants all
    python bench/distill_variants.py --run runs/default --variants oracle_ft,masked_ft --out variants.jsonl

Variants (steps: D = the run's [distill] steps, S = its [supervised] steps, same lr/batch):
  distill_ft         the run's distilled student fine-tuned S steps (behaviour + alignment +
                     autoencoding): the pipeline's distilled_sup re-run with another batch order
                     (its stage name seeds the batches): a measure of run-to-run noise
  distill_ft_noalign the same without the alignment term while fine-tuning
  masked_ft          the run's masked-autoencoding LFP-only student fine-tuned S steps: the
                     pipeline's lfp_multi re-run with other seeds (head initialisation, batches)
  scratch            an LFP-only student trained on behaviour from scratch for D + S steps
  joint              distillation and behaviour together from scratch for D + S steps
  masked_distill_ft  distillation with masked autoencoding (weight 1) for D steps, then S
  oracle_ft          distillation to the simulator's TRUE latents (a perfect teacher) for D
                     steps, then S: what the method gives when the teacher is not the limit
  bidir_ft           a bidirectional teacher (the run's teacher settings, causal = false),
                     distillation D steps, then S

  objectives         the 2 x 2 of pre-training objectives, D steps each from the same initialisation
                     (each its own batch order: the stage name seeds it; final weights, no early
                     stopping), decoded from frozen latents: alignment or not (distilled / LFP-only) x
                     plain or masked autoencoding (loss.mask_ratio of the patch tokens hidden), all at
                     weight loss.recon: which reconstruction objective each student does best with
  label_budget       no training: every representation of the run (ridge on lagged LFP features,
                     distilled, masked-autoencoding LFP-only, and the two supervised students'
                     latents) decoded by a ridge fit on only the first K seconds of a session's
                     training time (K = --budgets), tested on its held-out time: how many labelled
                     seconds a new session needs (on unseen sessions no model has seen a label)

Every row: held-out time R² of the head (supervised) and of a ridge on the frozen latents,
zero-shot ridge R² on the held-out sessions, per session and mean; the pre-trained student's
ridge R² where a variant distils one.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

VARIANTS = ("objectives", "label_budget", "distill_ft", "distill_ft_noalign", "masked_ft", "scratch", "joint", "masked_distill_ft", "oracle_ft", "bidir_ft")


class Variants:
    def __init__(self, run_dir: str):
        from offline.analysis.latents import load_run
        from offline.train.distill import standardize_targets
        from offline.train.teacher import teacher_latents

        run = load_run(run_dir)
        self.run, self.cfg, self.data, self.n_train = run, run.cfg, run.data, run.n_train
        self.train = list(range(self.n_train))
        self.nb = self.data[0].features.shape[1] // np.asarray(run.sessions[0].lfp).shape[1]  # chain branches
        c = self.cfg
        self.tseq = c.seq_bins(c.teacher_train)
        raw = {i: teacher_latents(run.teacher, self.data[i].spikes, i, self.tseq) for i in self.train}
        self.targets = standardize_targets(raw, self.data, c.loss.standardize_targets)
        names = list(run.sessions[0].behavior_names)
        self.outs = [k for k, n in enumerate(names) if n in ("vx", "vy", "grip")] or list(range(len(names)))

    def stage(self, steps: int):
        return replace(self.cfg.supervised, steps=steps) if steps else self.cfg.supervised

    def train_student(self, name, stage, align, recon, behavior, targets=None, init=None, mask=0.0):
        import torch

        from offline.models.heads import BehaviorHead
        from offline.models.student import LFPStudent
        from offline.train.ddp import run_stage
        from offline.train.distill import StudentObjective

        c, f = self.cfg, self.data[0].features.shape[1]
        targets = self.targets if targets is None else targets
        torch.manual_seed(c.seed + 2)
        tdim = next(iter(targets.values())).shape[1]
        st = copy.deepcopy(init) if init is not None else LFPStudent(c.student_cfg, f, self.nb, self.n_train, tdim if align else None)
        head = BehaviorHead(c.student.dim, self.data[0].behavior.shape[1]) if behavior else None
        obj = StudentObjective(st, self.data, self.train, c.seq_bins(stage), stage.batch_size, c.seed, name, align=align,
                               recon=recon, behavior=behavior, head=head, targets=targets if align else None,
                               mask_ratio=mask)  # fmt: skip
        st.train()
        run_stage(name, obj, list(obj.parameters()), stage)
        return st.eval(), head

    def score(self, model, head) -> dict:
        from offline.train.pipeline import _head_rows, _latents, _ridge_rows

        c = self.cfg
        r = {"ridge_time": [], "head_time": [], "ridge_zero_shot": []}
        for i, s in enumerate(self.data):
            lat = _latents(model, s, i if i < self.n_train else c.eval.zero_shot_from, c)
            row = _ridge_rows("m", "", s, lat, c)["r2"]
            r["ridge_time" if i < self.n_train else "ridge_zero_shot"].append(float(np.mean([row[k] for k in self.outs])))
            if head is not None and i < self.n_train:
                h = _head_rows("m", "", s, lat, head)["r2"]
                r["head_time"].append(float(np.mean([h[k] for k in self.outs])))
        return {k: {"mean": round(float(np.mean(v)), 4), "sessions": [round(x, 4) for x in v]} for k, v in r.items() if v}

    def run_variant(self, name: str) -> dict:
        from offline.train.checkpoint import Checkpoints
        from offline.train.ddp import Dist
        from offline.train.distill import standardize_targets
        from offline.train.pipeline import _train_teacher
        from offline.train.teacher import teacher_latents

        c = self.cfg
        d_steps, s_steps = c.distill.steps, c.supervised.steps
        t0 = time.perf_counter()
        out: dict = {"variant": name}
        if name == "distill_ft":
            m, h = self.train_student(name, c.supervised, c.loss.align, c.loss.recon, c.loss.behavior, init=self.run.students["distilled"])
        elif name == "distill_ft_noalign":
            m, h = self.train_student(name, c.supervised, 0.0, c.loss.recon, c.loss.behavior, init=self.run.students["distilled"])
        elif name == "masked_ft":
            m, h = self.train_student(name, c.supervised, 0.0, c.loss.recon, c.loss.behavior, init=self.run.students["lfp_multi_unsup"])
        elif name == "scratch":
            m, h = self.train_student(name, self.stage(d_steps + s_steps), 0.0, c.loss.recon, c.loss.behavior)
        elif name == "joint":
            m, h = self.train_student(name, self.stage(d_steps + s_steps), c.loss.align, c.loss.recon, c.loss.behavior)
        else:
            targets = None
            if name == "oracle_ft":
                lat = [getattr(self.run.sessions[i], "latents", None) for i in self.train]
                if any(x is None for x in lat):
                    raise SystemExit("oracle_ft needs true latents: simulated sessions only")
                targets = standardize_targets({i: np.asarray(lat[i], np.float32) for i in self.train}, self.data, "session")
            elif name == "bidir_ft":
                cb = replace(c, teacher=replace(c.teacher, causal=False))
                teacher = _train_teacher(cb, self.data, self.train, Checkpoints(None), Dist())
                raw = {i: teacher_latents(teacher, self.data[i].spikes, i, self.tseq) for i in self.train}
                out["teacher_ridge_time"] = self.score_teacher(raw)
                targets = standardize_targets(raw, self.data, c.loss.standardize_targets)
            elif name != "masked_distill_ft":
                raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
            masked = name == "masked_distill_ft"
            d, _ = self.train_student(name + "_distill", c.distill, c.loss.align, 1.0 if masked else c.loss.recon, 0.0,
                                      targets=targets, mask=c.loss.mask_ratio if masked else 0.0)  # fmt: skip
            out["pretrained"] = self.score(d, None)
            m, h = self.train_student(name, c.supervised, c.loss.align, c.loss.recon, c.loss.behavior, targets=targets, init=d)
        out["train_s"] = round(time.perf_counter() - t0, 1)
        out.update(self.score(m, h))
        return out

    def objectives(self) -> list[dict]:
        """Four unsupervised students: (distilled | LFP-only) x (plain | masked autoencoding)."""
        c, rows = self.cfg, []
        for align in (c.loss.align, 0.0):
            for mask in (0.0, c.loss.mask_ratio):
                name = f"{'distilled' if align else 'lfp_only'}_{'masked' if mask else 'plain'}"
                t0 = time.perf_counter()
                m, _ = self.train_student(name, c.distill, align, c.loss.recon, 0.0, mask=mask)
                rows.append({"variant": "objectives", "model": name, "mask_ratio": mask, "train_s": round(time.perf_counter() - t0, 1),
                             **self.score(m, None)})  # fmt: skip
        return rows

    def label_budget(self, budgets: list[float]) -> list[dict]:
        from offline.train.decode import lagged_features, ridge_r2
        from offline.train.pipeline import _eval_bins, _fit_idx, _latents, _test_idx

        c = self.cfg
        w = c.window_bins
        names = ["ridge_lfp", "distilled", "lfp_multi_unsup", "distilled_sup", "lfp_multi"]
        r2 = {(k, n, sp): [] for k in budgets for n in names for sp in ("held_out_time", "held_out_sessions")}
        for i, s in enumerate(self.data):
            emb = i if i < self.n_train else c.eval.zero_shot_from
            split = "held_out_time" if i < self.n_train else "held_out_sessions"
            reps = {n: _latents(self.run.students[n], s, emb, c) for n in names[1:]}
            lag = np.zeros((s.n_bins, min(w, 10) * s.features.shape[1]), np.float32)
            ev = _eval_bins(s, c)
            lag[ev] = lagged_features(s.features, ev, min(w, 10))
            reps["ridge_lfp"] = lag
            fit, te = _fit_idx(s, c.eval.fit_stride, w), _test_idx(s)
            bins_per_s = 1.0 / float(self.run.sessions[i].bin_width)
            for k in budgets:
                idx = fit if not k else fit[fit < s.train.start + int(round(k * bins_per_s))]
                for n in names:
                    y, _ = ridge_r2(reps[n][idx], s.behavior[idx], reps[n][te], s.behavior[te], c.eval.ridge_alpha,
                                    guard=-(-w // c.eval.fit_stride))  # fmt: skip
                    r2[(k, n, split)].append(float(np.mean([y[j] for j in self.outs])))
        return [{"variant": "label_budget", "budget_s": k or "all", "model": n, "split": sp,
                 "mean": round(float(np.mean(v)), 4), "sessions": [round(x, 4) for x in v]}
                for (k, n, sp), v in r2.items() if v]  # fmt: skip

    def score_teacher(self, raw: dict) -> dict:
        from offline.train.pipeline import _ridge_rows

        v = [float(np.mean([_ridge_rows("t", "", self.data[i], raw[i], self.cfg)["r2"][k] for k in self.outs])) for i in self.train]
        return {"mean": round(float(np.mean(v)), 4), "sessions": [round(x, 4) for x in v]}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished `rtdecode distill` run folder")
    ap.add_argument("--variants", default="all", help=f"comma-separated, or all: {', '.join(VARIANTS)}")
    ap.add_argument("--budgets", default="10,30,60,0", help="label_budget: seconds of labelled training time (0: all)")
    ap.add_argument("--out", default=None, help="append one JSON line per variant to this file")
    a = ap.parse_args()
    torch.set_num_threads(1)
    v = Variants(a.run)
    for name in VARIANTS if a.variants == "all" else a.variants.split(","):
        name = name.strip()
        if name == "label_budget":
            rows = v.label_budget([float(x) for x in a.budgets.split(",")])
        else:
            rows = v.objectives() if name == "objectives" else [v.run_variant(name)]
        for row in rows:
            line = json.dumps(row)
            print(line, flush=True)
            if a.out:
                with Path(a.out).open("a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
