"""A deliberately plain 3D-GAN training loop, the baseline that ``train_step.py`` measures voxgan against.

Written the way public 3D-GAN re-implementations commonly are: fp32, default memory layout,
a per-sample ``Dataset`` of float grids batched by a ``DataLoader`` with the default collate and
copied to the device every step, a fresh generator forward (with autograd on) for every D step
and another for the G step, ``Adam`` without the fused kernel. The losses are returned as tensors,
not read with ``.item()`` each step, so the loop waits on the device only where the benchmark
synchronises (once per iteration): the comparison does not charge it host syncs a careful plain
loop would not make. The architecture is the paper's (Wu et al. 2016) with the widths given:
G transposed convolutions, kernel 4 stride 2, BatchNorm + ReLU, sigmoid; D the mirror with
LeakyReLU(0.2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Generator(nn.Module):
    """z -> 4^3 -> ... -> resolution^3 occupancy probabilities; ``widths`` from the 4^3 level up."""

    def __init__(self, latent_dim: int, widths: list[int]) -> None:
        super().__init__()
        first = nn.ConvTranspose3d(latent_dim, widths[0], 4, 1, 0, bias=False)
        layers = [first, nn.BatchNorm3d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose3d(widths[-1], 1, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1, 1))


class Discriminator(nn.Module):
    """resolution^3 -> ... -> 4^3 -> one logit; ``widths`` from the finest level down.

    ``norm``: ``batch`` (BCE) or ``layer`` (one group per sample, for the WGAN-GP critic).
    """

    def __init__(self, widths: list[int], norm: str = "batch") -> None:
        super().__init__()
        layers = [nn.Conv3d(1, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            norm_layer = nn.BatchNorm3d(c_out) if norm == "batch" else nn.GroupNorm(1, c_out)
            layers += [nn.Conv3d(c_in, c_out, 4, 2, 1, bias=False), norm_layer, nn.LeakyReLU(0.2)]
        layers += [nn.Conv3d(widths[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


class VoxelDataset(Dataset):
    """One float grid (1, R, R, R) per item, converted from a boolean array on every access."""

    def __init__(self, voxels: np.ndarray) -> None:
        self.voxels = voxels

    def __len__(self) -> int:
        return len(self.voxels)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.FloatTensor(self.voxels[index].astype(np.float32))


def endless_batches(voxels: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Shuffled batches from a DataLoader, epoch after epoch."""
    loader = DataLoader(VoxelDataset(voxels), batch_size=batch_size, shuffle=True, drop_last=True)
    while True:
        yield from loader


class ReferenceGAN:
    """G, D, their Adam optimizers and one training iteration (``n_critic`` D steps, one G step)."""

    def __init__(
        self, latent_dim: int, g_widths: list[int], d_widths: list[int], loss: str, n_critic: int,
        g_lr: float, d_lr: float, betas: tuple[float, float], device: torch.device, gp_lambda: float = 10.0,
    ) -> None:
        self.generator = Generator(latent_dim, g_widths).to(device)
        self.discriminator = Discriminator(d_widths, "layer" if loss == "wgan_gp" else "batch").to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=betas)
        self.latent_dim, self.loss, self.n_critic = latent_dim, loss, n_critic
        self.gp_lambda, self.device = gp_lambda, device

    def iteration(self, batches: Iterator[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Train ``n_critic`` D steps on the next batches, then one G step; return the last losses."""
        for _ in range(self.n_critic):
            real = next(batches).to(self.device)
            d_loss = self.d_step(real)
        return {"d_loss": d_loss, "g_loss": self.g_step(len(real))}

    def d_step(self, real: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        fake = self.generator(z)
        fake = fake.detach()
        real_out, fake_out = self.discriminator(real), self.discriminator(fake)
        if self.loss == "wgan_gp":
            loss = fake_out.mean() - real_out.mean() + self.gp_lambda * self.gradient_penalty(real, fake)
        else:
            loss = F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
            loss = loss + F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()
        return loss.detach()

    def g_step(self, batch_size: int) -> torch.Tensor:
        z = torch.randn(batch_size, self.latent_dim, device=self.device)
        out = self.discriminator(self.generator(z))
        if self.loss == "wgan_gp":
            loss = -out.mean()
        else:
            loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        return loss.detach()

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(len(real), 1, 1, 1, 1, device=self.device)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(x_hat).sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
