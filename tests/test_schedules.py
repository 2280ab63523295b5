"""The schedules of a run's end: G's and D's rates falling linearly (``loss.lr_decay_from``) and the span
of G's moving average (``model.ema_warmup``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voxgan.config import ConfigError
from voxgan.training.ema import update_average
from voxgan.training.train import build_module, run


def test_the_rates_fall_linearly_from_their_share_of_the_run(make_cfg) -> None:
    module = build_module(make_cfg("iterations=8", "loss.lr_decay_from=0.5"))
    factors = []
    for iteration in range(8):
        module.iteration = iteration
        factors.append(module.lr_factor())
    assert factors == [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    module = build_module(make_cfg("iterations=8"))
    module.iteration = 7
    assert module.lr_factor() == 1.0  # constant rates unless asked


def test_a_decayed_run_ends_at_the_last_iterations_rates(make_cfg, tmp_path: Path) -> None:
    """Both optimizers take their last step at 1/(decay length) of their configured rates, and keep the
    configured rate beside it (what a resume continues from)."""
    run(make_cfg("iterations=4", "loss.lr_decay_from=0.5", "loss.g_lr=1e-3", "loss.d_lr=2e-3"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    g_group, d_group = (state["param_groups"][0] for state in ckpt["optimizer_states"])
    assert g_group["base_lr"] == 1e-3 and d_group["base_lr"] == 2e-3
    assert g_group["lr"] == pytest.approx(0.5e-3) and d_group["lr"] == pytest.approx(1e-3)


def test_a_decay_share_outside_the_run_is_refused(make_cfg) -> None:
    with pytest.raises(ConfigError, match="loss.lr_decay_from"):
        run(make_cfg("loss.lr_decay_from=1.0"))


@pytest.mark.parametrize(("warmup", "moved"), [(9.0, 0.9), (1.0, 0.5), (0.25, 0.2)])
def test_the_warmup_sets_how_far_the_first_update_moves_the_average(make_cfg, warmup: float,
                                                                    moved: float) -> None:
    """After n updates the decay is at most n / (n + warmup): a smaller warm-up, a longer span."""
    module = build_module(make_cfg("model.g_channels=4", "model.d_channels=4"))
    with torch.no_grad():
        for p in module.g_ema.parameters():
            p.zero_()
        for p in module.generator.parameters():
            p.fill_(1.0)
    update_average(module.g_ema, module.generator, 0.999, 0, warmup)
    first = next(module.g_ema.parameters())
    assert torch.allclose(first, torch.full_like(first, moved))


def test_the_configured_warmup_reaches_the_average(make_cfg, monkeypatch) -> None:
    import voxgan.training.base as base

    seen = []
    monkeypatch.setattr(base, "update_average", lambda *args: seen.append(args[-1]))
    run(make_cfg("iterations=2", "model.ema_warmup=3"))
    assert seen == [3.0, 3.0]
