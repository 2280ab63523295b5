import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.objectives import bce, wgan
from voxgan.config import ConfigError
from voxgan.training.losses import OBJECTIVES, BCEObjective, Objective, WGANGPObjective


class Linear(nn.Module):
    """D(x) = <w, x> + b: the gradient w.r.t. x is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.0) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(1) + self.b


def test_bce_gate_skips_update_when_d_is_too_accurate() -> None:
    real, fake = torch.ones(8, 1, 2, 2, 2), torch.zeros(8, 1, 2, 2, 2)
    strong = Linear(torch.full((8,), 1.0), b=-4.0)  # real -> +4, fake -> -4: accuracy 1
    loss, stats = bce(d_gate_accuracy=0.8).d_loss(strong, real, fake)
    assert stats["d_acc"] == 1.0 and not bce(d_gate_accuracy=0.8).update_d(stats)
    assert bce(d_gate_accuracy=None).update_d(stats) is None
    weak = Linear(torch.zeros(8))  # logits 0: accuracy 0
    _, weak_stats = bce().d_loss(weak, real, fake)
    assert bce().update_d(weak_stats)
    # BCE of logits +4 on real and -4 on fake: 2 * log(1 + e^-4)
    assert torch.isclose(loss, 2 * torch.log1p(torch.exp(torch.tensor(-4.0))))


def test_label_smoothing_changes_real_target() -> None:
    real, fake = torch.ones(4, 1, 2, 2, 2), torch.zeros(4, 1, 2, 2, 2)
    d = Linear(torch.full((8,), 1.0), b=-4.0)
    plain, _ = bce().d_loss(d, real, fake)
    smooth, _ = bce(label_smoothing=0.1).d_loss(d, real, fake)
    assert smooth > plain


def test_non_saturating_generator_loss() -> None:
    d = Linear(torch.zeros(8), b=0.0)
    loss, _ = bce().g_loss(d, torch.zeros(4, 1, 2, 2, 2))
    assert torch.isclose(loss, torch.log(torch.tensor(2.0)))


def test_gradient_penalty_zero_for_unit_gradient_critic() -> None:
    w = torch.randn(8)
    unit = Linear(w / w.norm())
    real, fake = torch.rand(5, 1, 2, 2, 2), torch.rand(5, 1, 2, 2, 2)
    penalty, grad_norm = WGANGPObjective.gradient_penalty(unit, real, fake)
    assert penalty.abs() < 1e-10 and torch.isclose(grad_norm, torch.tensor(1.0))
    steep = Linear(3 * w / w.norm())
    penalty, _ = WGANGPObjective.gradient_penalty(steep, real, fake)
    assert torch.isclose(penalty, torch.tensor(4.0))  # (3 - 1)^2


def test_wgan_d_loss_is_negative_wasserstein_plus_penalty() -> None:
    w = torch.randn(8)
    d = Linear(w / w.norm())
    real, fake = torch.rand(6, 1, 2, 2, 2), torch.rand(6, 1, 2, 2, 2)
    loss, stats = wgan(gp_lambda=10).d_loss(d, real, fake)
    expected = -(d(real).mean() - d(fake).mean())
    assert torch.isclose(loss, expected, atol=1e-6)
    assert torch.isclose(stats["wasserstein"], -expected)


class Quadratic(nn.Module):
    """D(x) = sum(w * x^2): the gradient w.r.t. x is 2 w x, so R1 depends on where it is taken."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w * x.flatten(1) ** 2).sum(1)


def test_r1_penalty_has_the_known_value_and_trains_d() -> None:
    d = Quadratic(8)
    real = torch.rand(5, 1, 2, 2, 2)
    penalty = BCEObjective.r1_penalty(d, real)
    x, w = real.flatten(1), d.w.detach()
    expected = ((2 * w * x) ** 2).sum(1).mean()
    assert torch.isclose(penalty, expected)
    penalty.backward()  # the penalty's gradient reaches D's weights: d/dw of mean(sum 4 w^2 x^2)
    assert torch.allclose(d.w.grad, (8 * w * x**2).mean(0))


def test_r1_is_taken_on_the_reals_and_scaled_for_lazy_batches() -> None:
    d = Quadratic(8)
    real, fake = torch.rand(4, 1, 2, 2, 2), 3 * torch.rand(4, 1, 2, 2, 2)
    objective = bce(d_gate_accuracy=None, r1_gamma=2.0, r1_every=4)
    plain, _ = objective.d_loss(d, real, fake, regularize=False)
    regularised, stats = objective.d_loss(d, real, fake, regularize=True)
    on_reals = BCEObjective.r1_penalty(d, real)
    assert torch.isclose(stats["r1_penalty"], on_reals)
    assert not torch.isclose(on_reals, BCEObjective.r1_penalty(d, fake))
    assert torch.isclose(regularised - plain, 0.5 * 2.0 * 4 * on_reals)
    assert "r1_penalty" not in bce(r1_gamma=0.0).d_loss(d, real, fake, regularize=True)[1]


def _expected_gradient_penalty(
    d: Quadratic, real: torch.Tensor, fake: torch.Tensor, seed: int
) -> torch.Tensor:
    torch.manual_seed(seed)
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1)
    x_hat = (alpha * real + (1 - alpha) * fake).flatten(1)
    grad = 2 * d.w * x_hat  # grad of sum(w x^2): depends on where it is taken
    return ((grad.norm(dim=1) - 1) ** 2).mean()


def test_gradient_penalty_is_taken_between_real_and_fake_with_the_known_value() -> None:
    d = Quadratic(8)
    real, fake = torch.rand(6, 1, 2, 2, 2), -torch.rand(6, 1, 2, 2, 2)
    expected = _expected_gradient_penalty(d, real, fake, seed=3)
    torch.manual_seed(3)
    penalty, _ = WGANGPObjective.gradient_penalty(d, real, fake)
    assert torch.isclose(penalty, expected, rtol=1e-5)
    # The penalty trains the critic: its gradient reaches D's weights (a double backward).
    (autograd_w,) = torch.autograd.grad(expected, d.w)
    penalty.backward()
    assert torch.allclose(d.w.grad, autograd_w, rtol=1e-4)


def test_wgan_d_loss_carries_the_weighted_penalty_and_its_gradient() -> None:
    d = Quadratic(8)
    real, fake = torch.rand(6, 1, 2, 2, 2), -torch.rand(6, 1, 2, 2, 2)
    torch.manual_seed(4)
    loss, stats = wgan(gp_lambda=10).d_loss(d, real, fake)
    penalty = _expected_gradient_penalty(d, real, fake, seed=4)
    wasserstein = d(real).mean() - d(fake).mean()
    assert torch.isclose(loss, -wasserstein + 10 * penalty, rtol=1e-5)
    (expected_grad,) = torch.autograd.grad(-wasserstein + 10 * penalty, d.w)
    loss.backward()
    assert torch.allclose(d.w.grad, expected_grad, rtol=1e-4)


def test_gradient_penalty_takes_d_and_its_gradient_without_tf32() -> None:
    # TF32 keeps 10 bits of mantissa: the penalty's forward and input gradient are taken in true fp32
    seen: list[tuple[str, str, bool]] = []

    class Critic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            precisions = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
            seen.append((*precisions, torch.is_autocast_enabled("cpu")))
            return (x.flatten(1) * self.weight).sum(dim=1).tanh()

    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    real, fake = torch.rand(4, 1, 4, 4, 4), torch.rand(4, 1, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wgan().d_loss(Critic(), real, fake)
    assert seen[:2] == [(*before, True)] * 2  # D on real and fake: the trainer's precision
    assert seen[2] == ("ieee", "ieee", False)  # D on the interpolates
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


@dataclass
class HingeObjective(Objective):
    """The hinge loss (Lim & Ye 2017), defined here as a user would add an objective."""

    default_d_norm: ClassVar[str] = "layer"
    logits: ClassVar[bool] = False
    supports_gate: ClassVar[bool] = False
    supports_ada: ClassVar[bool] = False
    n_critic: int

    def d_loss(self, d, real, fake, regularize=False):
        return F.relu(1 - d(real)).mean() + F.relu(1 + d(fake)).mean(), {}

    def g_loss(self, d, fake):
        return -d(fake).mean(), {}


def test_a_new_objective_trains_from_its_class_alone(make_cfg, tmp_path, monkeypatch) -> None:
    """Adding a loss is its class and its registration: the loop, the D norm and checks follow its traits."""
    from voxgan.training.train import build_module, run

    monkeypatch.setitem(OBJECTIVES, "hinge", HingeObjective)
    cfg = make_cfg("loss.name=hinge", "loss.instance_noise=0", "iterations=2")
    module = build_module(cfg)
    assert isinstance(module.objective, HingeObjective)
    assert any(isinstance(m, nn.GroupNorm) for m in module.discriminator.modules())  # its default D norm
    run(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert all(math.isfinite(r["train/g_loss"]) for r in records)
    with pytest.raises(ConfigError, match=r"augment\.ada_target"):  # it reports no ADA signal
        run(make_cfg("loss.name=hinge", "augment=ada", out="ada"))


def test_the_gate_reads_d_accuracy_on_reals_and_fakes_together() -> None:
    # D calls every grid real: right on all reals, wrong on all fakes, so its accuracy is 0.5 and
    # the paper's gate (0.8) lets it step; an accuracy on reals alone (1.0) would close the gate.
    real, fake = torch.ones(8, 1, 2, 2, 2), torch.zeros(8, 1, 2, 2, 2)
    says_real = Linear(torch.zeros(8), b=4.0)
    _, stats = bce(d_gate_accuracy=0.8).d_loss(says_real, real, fake)
    assert (stats["d_acc_real"], stats["d_acc_fake"], stats["d_acc"]) == (1.0, 0.0, 0.5)
    assert bce(d_gate_accuracy=0.8).update_d(stats)
    _, stats = bce(d_gate_accuracy=0.8).d_loss(Linear(torch.zeros(8), b=-4.0), real, fake)  # all fake
    assert stats["d_acc"] == 0.5 and bce(d_gate_accuracy=0.8).update_d(stats)


def test_only_a_gated_objective_needs_d_accuracy_alike_on_every_process() -> None:
    assert bce(d_gate_accuracy=0.8).gated and not bce(d_gate_accuracy=None).gated and not wgan().gated


def test_lazy_r1_is_due_every_k_d_steps_and_is_the_scaled_term_of_d_loss() -> None:
    objective = bce(d_gate_accuracy=None, r1_gamma=2.0, r1_every=4)
    assert [step for step in range(12) if objective.penalty_due(step)] == [0, 4, 8]
    assert not any(bce(r1_gamma=0.0).penalty_due(step) for step in range(4))
    d = Quadratic(8)
    real, fake = torch.rand(4, 1, 2, 2, 2), torch.rand(4, 1, 2, 2, 2)
    term, stats = objective.lazy_penalty(d, real)
    assert torch.isclose(term, 0.5 * 2.0 * 4 * BCEObjective.r1_penalty(d, real))
    plain, _ = objective.d_loss(d, real, fake)
    regularised, _ = objective.d_loss(d, real, fake, regularize=True)
    assert torch.isclose(regularised, plain + term) and torch.equal(stats["r1_penalty"], term.detach() / 4)
