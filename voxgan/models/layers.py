"""Building blocks shared by the architectures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

D_NORMS = ("batch", "layer", "spectral", "none")


def num_levels(resolution: int) -> int:
    """Number of 2x resolution steps between the 4^3 seed volume and ``resolution``^3."""
    levels = math.log2(resolution / 4)
    if resolution < 8 or levels != int(levels):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return int(levels)


def level_channels(resolution: int, base_channels: int) -> list[int]:
    """Channels from the 4^3 level up to resolution/2: 512-256-128-64 at 64^3 with base 64."""
    levels = num_levels(resolution)
    return [base_channels * 2 ** (levels - 1 - i) for i in range(levels)]


def norm3d(kind: str, channels: int) -> nn.Module:
    """A normalisation layer over (C, D, H, W); ``layer`` normalises each sample as a whole."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind in ("spectral", "none"):
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; choose one of {D_NORMS}")


def maybe_spectral(module: nn.Module, norm: str) -> nn.Module:
    """Wrap a weight layer in spectral normalisation when ``norm == 'spectral'``."""
    return nn.utils.parametrizations.spectral_norm(module) if norm == "spectral" else module


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature standard deviation as one extra channel.

    A discriminator that sees how varied a batch is can tell a collapsed generator (every sample
    alike) from the data, which pushes G back towards diversity (Karras et al. 2018).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.float().std(dim=0, unbiased=False).mean().to(x.dtype) if x.shape[0] > 1 else x.new_zeros(())
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def block_features(blocks: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Activations after each block of a discriminator, coarsest last (for probes and SVM transfer)."""
    out = []
    for block in blocks:
        x = block(x)
        out.append(x)
    return out


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``network``, whose running statistics training measures or protects."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def frozen(network: nn.Module) -> Iterator[nn.Module]:
    """The network in eval mode (BatchNorm uses its running statistics) with no parameter gradients."""
    was_training = network.training
    flags = [p.requires_grad for p in network.parameters()]
    network.eval().requires_grad_(False)
    try:
        yield network
    finally:
        network.train(was_training)
        for p, flag in zip(network.parameters(), flags, strict=True):
            p.requires_grad_(flag)
