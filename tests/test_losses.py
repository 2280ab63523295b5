import torch
from torch import nn

from voxgan.losses import BCEObjective, WGANGPObjective


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
    loss, stats = BCEObjective(d_gate_accuracy=0.8).d_loss(strong, real, fake)
    assert stats["d_acc"] == 1.0 and not BCEObjective(d_gate_accuracy=0.8).update_d(stats)
    assert BCEObjective(d_gate_accuracy=None).update_d(stats) is None
    weak = Linear(torch.zeros(8))  # logits 0: accuracy 0
    _, weak_stats = BCEObjective().d_loss(weak, real, fake)
    assert BCEObjective().update_d(weak_stats)
    # BCE of logits +4 on real and -4 on fake: 2 * log(1 + e^-4)
    assert torch.isclose(loss, 2 * torch.log1p(torch.exp(torch.tensor(-4.0))))


def test_label_smoothing_changes_real_target() -> None:
    real, fake = torch.ones(4, 1, 2, 2, 2), torch.zeros(4, 1, 2, 2, 2)
    d = Linear(torch.full((8,), 1.0), b=-4.0)
    plain, _ = BCEObjective().d_loss(d, real, fake)
    smooth, _ = BCEObjective(label_smoothing=0.1).d_loss(d, real, fake)
    assert smooth > plain


def test_non_saturating_generator_loss() -> None:
    d = Linear(torch.zeros(8), b=0.0)
    loss, _ = BCEObjective().g_loss(d, torch.zeros(4, 1, 2, 2, 2))
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
    loss, stats = WGANGPObjective(gp_lambda=10).d_loss(d, real, fake)
    expected = -(d(real).mean() - d(fake).mean())
    assert torch.isclose(loss, expected, atol=1e-6)
    assert torch.isclose(stats["wasserstein"], -expected)
