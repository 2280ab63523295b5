"""Adversarial objectives. Each knows how to score D and G on a batch; none knows about optimisers,
logging or the training loop. Every statistic is returned as a detached tensor (no host sync).

An objective declares what the training loop needs to know of it as traits (the norm a D trained
with it wants, whether its penalty differentiates D's input gradient, whether D's outputs are logits,
whether it can gate D's steps or drive ADA) and is built from its ``loss`` config by name:
adding one is its class here, registered with ``@objective("name")``, and ``conf/loss/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

Stats = dict[str, torch.Tensor]
OBJECTIVES: dict[str, type[Objective]] = {}


class Objective:
    """What every objective offers the loop: D's and G's losses on a batch, and whether D steps.

    Subclasses are dataclasses whose fields are the ``loss.*`` keys they read (their defaults live in
    the config schema, not here)."""

    default_d_norm: ClassVar[str]  # the norm D gets under model.d_norm=auto (unless its architecture has one)
    logits: ClassVar[bool]  # D's output is a logit: sigmoid(D(x)) is its probability that x is real
    supports_gate: ClassVar[bool]  # reports D's accuracy, so loss.d_gate_accuracy can skip D's steps
    supports_ada: ClassVar[bool]  # reports d_real_sign, the signal of adaptive augmentation
    n_critic: int  # batches (D steps) per G step

    @classmethod
    def from_config(cls, loss: dict[str, Any]) -> Objective:
        """The objective with the options of a ``loss`` config (a dict of every loss key)."""
        return cls(**{f.name: loss[f.name] for f in fields(cls)})

    @property
    def double_backward(self) -> bool:
        """Whether D's loss differentiates D's input gradient (a penalty): torch.compile cannot, there."""
        return False

    @property
    def gated(self) -> bool:
        """Whether ``update_d`` reads D's accuracy to decide (so every process must see the same one)."""
        return False

    def penalty_due(self, d_step: int) -> bool:
        """Whether D step ``d_step`` (from 0; counting the steps D takes, not the batches the gate skips)
        adds the objective's lazy penalty (``lazy_penalty``)."""
        return False

    def lazy_penalty(self, d: Callable, real: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """The lazy penalty's term of D's loss on a batch of reals (scaled for the steps between two)."""
        raise NotImplementedError(f"{type(self).__name__} has no lazy penalty")

    def d_loss(
        self, d: Callable, real: torch.Tensor, fake: torch.Tensor, regularize: bool = False
    ) -> tuple[torch.Tensor, Stats]:
        """D's loss on a batch of reals and (detached) fakes; ``regularize``: plus the lazy penalty.

        Training adds the lazy penalty itself, once the gate has said that D steps (it is not worth its
        double backward otherwise); ``regularize`` composes the two for a caller that knows it will."""
        raise NotImplementedError

    def g_loss(self, d: Callable, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """G's loss on a batch of fakes, differentiable through them."""
        raise NotImplementedError

    def update_d(self, stats: Stats) -> torch.Tensor | None:
        """Whether D takes its step this batch: a 0-d bool tensor, or None for always (no host sync)."""
        return None


def objective(name: str) -> Callable[[type[Objective]], type[Objective]]:
    """Register an objective class under ``loss.name=<name>``."""

    def register(cls: type[Objective]) -> type[Objective]:
        OBJECTIVES[name] = cls
        return cls

    return register


def build_objective(loss: dict[str, Any]) -> Objective:
    """The objective ``loss['name']`` with its options."""
    if loss["name"] not in OBJECTIVES:
        raise ValueError(f"loss.name={loss['name']!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[loss["name"]].from_config(loss)


@objective("bce")
@dataclass
class BCEObjective(Objective):
    """The 3D-GAN objective: binary cross-entropy on D's logits, non-saturating G loss.

    ``d_gate_accuracy``: D is only updated while its accuracy on the current batch is below this
    threshold (the paper's 0.8), because D otherwise overpowers G; ``None`` disables gating.
    ``r1_gamma`` > 0 adds R1 on reals every ``r1_every`` D steps (lazy, scaled up to match): batches
    whose step the gate skips neither count nor compute it.
    """

    default_d_norm: ClassVar[str] = "batch"
    logits: ClassVar[bool] = True
    supports_gate: ClassVar[bool] = True
    supports_ada: ClassVar[bool] = True
    label_smoothing: float
    d_gate_accuracy: float | None
    n_critic: int
    r1_gamma: float
    r1_every: int

    @property
    def double_backward(self) -> bool:
        return self.r1_gamma > 0

    @property
    def gated(self) -> bool:
        return self.d_gate_accuracy is not None

    def penalty_due(self, d_step: int) -> bool:
        return self.r1_gamma > 0 and d_step % self.r1_every == 0

    def lazy_penalty(self, d: Callable, real: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """``r1_every`` x gamma/2 x R1 on ``real`` (the reals D's loss saw), and R1 itself as a statistic."""
        penalty = self.r1_penalty(d, real)
        return 0.5 * self.r1_gamma * self.r1_every * penalty, {"r1_penalty": penalty.detach()}

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
            term, penalty_stats = self.lazy_penalty(d, real)
            loss = loss + term
            stats.update(penalty_stats)
        return loss, stats

    @staticmethod
    def r1_penalty(d: Callable, real: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on reals, in fp32, differentiable in D."""
        x = real.detach().float().requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False):
            logits = d(x)
        (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
        return grad.flatten(1).square().sum(dim=1).mean()

    def g_loss(self, d: Callable, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        fake_logits = d(fake)
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)), {}

    def update_d(self, stats: Stats) -> torch.Tensor | None:
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


@objective("wgan_gp")
@dataclass
class WGANGPObjective(Objective):
    """Wasserstein loss with a gradient penalty on random interpolates (Gulrajani et al. 2017)."""

    default_d_norm: ClassVar[str] = "layer"  # the penalty is per sample: no batch statistics in the critic
    logits: ClassVar[bool] = False
    supports_gate: ClassVar[bool] = False
    supports_ada: ClassVar[bool] = False
    gp_lambda: float
    n_critic: int

    @property
    def double_backward(self) -> bool:
        return True

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

    def g_loss(self, d: Callable, fake: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        return -d(fake).float().mean(), {}

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
