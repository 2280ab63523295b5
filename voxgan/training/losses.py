"""Adversarial objectives. Each knows how to score D and G on a batch; none knows about optimisers,
logging or the training loop. Every statistic is returned as a detached tensor (no host sync)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Stats = dict[str, torch.Tensor]


@dataclass
class BCEObjective:
    """The 3D-GAN objective: binary cross-entropy on D's logits, non-saturating G loss.

    ``d_gate_accuracy``: D is only updated while its accuracy on the current batch is below this
    threshold (the paper's 0.8), because D otherwise overpowers G; ``None`` disables gating.
    """

    label_smoothing: float = 0.0
    d_gate_accuracy: float | None = 0.8
    n_critic: int = 1
    r1_gamma: float = 0.0
    r1_every: int = 1

    def d_loss(
        self, d: Callable, real: torch.Tensor, fake: torch.Tensor, regularize: bool = False
    ) -> tuple[torch.Tensor, Stats]:
        """D's loss; with ``regularize`` (a lazy-R1 batch) plus ``r1_every`` x gamma/2 x R1."""
        real_logits, fake_logits = d(real), d(fake)
        real_target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        loss = F.binary_cross_entropy_with_logits(
            real_logits, real_target
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        acc_real = (real_logits.detach() > 0).float().mean()
        acc_fake = (fake_logits.detach() < 0).float().mean()
        stats = {
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
            "d_acc": (acc_real + acc_fake) / 2,
            "d_real_sign": torch.sign(real_logits.detach().float()).mean(),
        }
        if regularize and self.r1_gamma > 0:
            penalty = self.r1_penalty(d, real)
            loss = loss + 0.5 * self.r1_gamma * self.r1_every * penalty
            stats["r1_penalty"] = penalty.detach()
        return loss, stats

    @staticmethod
    def r1_penalty(d: Callable, real: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on reals, in fp32, differentiable in D."""
        x = real.detach().float().requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False):
            logits = d(x)
        (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
        return grad.flatten(1).square().sum(dim=1).mean()

    def g_loss(self, d: nn.Module, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        fake_logits = d(fake)
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)), {}

    def update_d(self, stats: Stats) -> torch.Tensor | None:
        """Whether D takes its step this batch: a 0-d bool tensor, or None for always (no host sync)."""
        if self.d_gate_accuracy is None:
            return None
        return stats["d_acc"] < self.d_gate_accuracy


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """float32 convolutions and matmuls without TF32 inside the block (it changes only CUDA kernels)."""
    backends = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "ieee"
        yield
    finally:
        for backend, precision in zip(backends, saved, strict=True):
            backend.fp32_precision = precision


@dataclass
class WGANGPObjective:
    """Wasserstein loss with a gradient penalty on random interpolates (Gulrajani et al. 2017)."""

    gp_lambda: float = 10.0
    n_critic: int = 5

    def d_loss(
        self, d: Callable, real: torch.Tensor, fake: torch.Tensor, regularize: bool = False
    ) -> tuple[torch.Tensor, Stats]:
        """The critic's loss (its gradient penalty is every batch's; ``regularize`` is unused)."""
        # Scores in fp32: under bf16 autocast the critic's output is bf16.
        real_score, fake_score = d(real).float().mean(), d(fake).float().mean()
        penalty, grad_norm = self.gradient_penalty(d, real, fake)
        wasserstein = real_score - fake_score
        loss = -wasserstein + self.gp_lambda * penalty
        return loss, {
            "wasserstein": wasserstein.detach(),
            "gradient_penalty": penalty.detach(),
            "critic_grad_norm": grad_norm.detach(),
        }

    def g_loss(self, d: nn.Module, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        return -d(fake).float().mean(), {}

    def update_d(self, stats: Stats) -> None:
        """The critic always takes its step."""
        return None

    @staticmethod
    def gradient_penalty(
        d: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(||grad D(x_hat)|| - 1)^2 on x_hat between real and fake.

        The penalty is a difference near 0 of norms near 1, so D's forward on x_hat and its gradient
        are taken in true fp32: no autocast, and no TF32 on a GPU (which keeps 10 bits of mantissa).
        The penalty's own backward into D's weights is a weight gradient like the others and runs at
        the trainer's precision."""
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
        x_hat = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False), ieee_fp32():
            scores = d(x_hat)
            (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        grad_norm = grad.flatten(1).norm(dim=1)
        return ((grad_norm - 1) ** 2).mean(), grad_norm.mean()


OBJECTIVES = {"bce": BCEObjective, "wgan_gp": WGANGPObjective}
Objective = BCEObjective | WGANGPObjective


def mode_seeking_term(z: torch.Tensor, fake: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al., 2019), added to G's loss with a weight: the inverse
    of how far apart two samples lie per unit of distance between their z, so that G is pushed to
    spread nearby z over different shapes instead of collapsing them onto one. Sample i of the batch
    is paired with sample i + n/2; distances are mean absolute differences, in fp32."""
    half = len(z) // 2
    if half == 0:
        raise ValueError("the mode-seeking term needs a batch of at least 2 samples")
    z, fake = z.float(), fake.float()
    ratio = (fake[:half] - fake[half : 2 * half]).abs().mean() / (z[:half] - z[half : 2 * half]).abs().mean()
    return 1.0 / (ratio + eps)
