"""The state teacher (issue 13, item 2): bidirectional attention, a loss at every position on
hidden neighbouring bins, spatial patch tokens; the first design still builds and loads."""

import pytest
import torch

from offline.models.teacher import SpikeTeacher, TeacherConfig
from offline.train.config import load_config
from rtdecode.config import ConfigError

STATE = {"dim": 16, "n_layers": 2, "n_heads": 2, "n_patches": 2, "causal": False, "objective": "state", "past_bins": 4,
         "future_bins": 1, "mask_ratio": 0.5}  # fmt: skip


def _teacher(**kw) -> SpikeTeacher:
    torch.manual_seed(0)
    return SpikeTeacher(TeacherConfig(**{**STATE, **kw}), [6, 9])


@pytest.mark.parametrize("causal", [False, True])
def test_a_later_bin_changes_an_earlier_latent_only_when_bidirectional(causal):
    t = _teacher(causal=causal).eval()
    counts = torch.poisson(torch.full((1, 10, 6), 1.5))
    other = counts.clone()
    other[0, 7] += 4.0  # a later bin
    with torch.no_grad():
        a, b = t(counts, 0)["latent"][0], t(other, 0)["latent"][0]
    earlier_moved = not torch.allclose(a[:7], b[:7], atol=1e-5)
    assert earlier_moved == (not causal)


def _grad_per_bin(t: SpikeTeacher, counts, mask) -> torch.Tensor:
    """|d loss / d pooled latent| summed per bin: which positions the loss reaches."""
    got = {}

    def keep(_m, _i, out):
        out.retain_grad()
        got["h"] = out

    hook = t.encoder.register_forward_hook(keep)
    try:
        t.loss(counts, 0, mask).backward()
    finally:
        hook.remove()
    return got["h"].grad.abs().sum((0, 2, 3))  # (T,)


def test_the_state_loss_reaches_every_position_the_masked_loss_only_masked_bins():
    counts = torch.poisson(torch.full((2, 12, 6), 1.5))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, [1, 5, 9]] = True  # every bin t has a hidden bin among t - 4 .. t + 1 (its targets)
    g = _grad_per_bin(_teacher(), counts, mask)
    assert (g > 0).all(), g
    old = _grad_per_bin(_teacher(objective="masked", past_bins=0, future_bins=0), counts, mask)
    assert (old[~mask[0]] == 0).all() and (old[mask[0]] > 0).all()


def test_the_state_loss_scores_only_bins_hidden_from_the_input():
    t = _teacher().eval()
    counts = torch.poisson(torch.full((1, 12, 6), 1.5))
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, 5] = True
    out = t(counts, 0, mask)
    lr = t.offset_log_rates(out["latent"], 0)  # (1, T, K, N)
    offs = t.cfg.offsets
    nll = [torch.nn.functional.poisson_nll_loss(lr[0, 5 - o, k], counts[0, 5], log_input=True, full=False)
           for k, o in enumerate(offs) if 0 <= 5 - o < 12]  # fmt: skip
    with torch.no_grad():
        assert t.loss(counts, 0, mask) == pytest.approx(float(torch.stack(nll).mean()), rel=1e-5)


def test_spatial_patch_tokens_read_only_their_own_units():
    t = _teacher(spatial_patches=True)
    x = torch.rand(1, 3, 9)
    y = x.clone()
    y[..., 0] += 1.0  # unit 0 belongs to patch 0 of 2 (units 0-4)
    with torch.no_grad():
        a, b = t._tokens(x, 1).view(1, 3, 2, 16), t._tokens(y, 1).view(1, 3, 2, 16)
    assert not torch.allclose(a[:, :, 0], b[:, :, 0]) and torch.equal(a[:, :, 1], b[:, :, 1])
    dense = _teacher()
    with torch.no_grad():
        a, b = dense._tokens(x, 1).view(1, 3, 2, 16), dense._tokens(y, 1).view(1, 3, 2, 16)
    assert not torch.allclose(a[:, :, 1], b[:, :, 1])


def test_the_first_design_is_the_dataclass_default_and_its_weights_load():
    old = TeacherConfig(dim=16, n_layers=1, n_heads=2, n_patches=2)
    assert old.objective == "masked" and old.causal and not old.spatial_patches
    sd = SpikeTeacher(old, [5]).state_dict()  # a checkpoint of an earlier run (no offset maps)
    assert not any(k.startswith("offset_maps") for k in sd)
    SpikeTeacher(TeacherConfig(dim=16, n_layers=1, n_heads=2, n_patches=2), [5]).load_state_dict(sd)  # strict


def test_the_configs_train_the_state_teacher_and_bad_keys_are_refused():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    for name in ("distill_tiny", "distill_default", "distill_tiny_dynamics", "distill_tiny_hga", "distill_nwb_example"):
        t = load_config(root / "configs" / f"{name}.toml").teacher
        assert t.objective == "state" and not t.causal and t.past_bins >= 9 and t.spatial_patches, name
    base = {"teacher": {"objective": "masked", "past_bins": 3}}
    with pytest.raises((ConfigError, ValueError), match="past_bins"):
        load_config(base)
    with pytest.raises((ConfigError, ValueError), match="objective"):
        load_config({"teacher": {"objective": "denoise"}})
