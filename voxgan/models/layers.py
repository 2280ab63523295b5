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


# The one-channel ends of the networks, on the CPU: oneDNN's kernels for a convolution with one input
# channel (D's first) or one output channel (G's last) run at 5-10 GFLOP/s, a tenth of the other layers'.
# The same arithmetic rearranged into 8 channels of half the resolution runs at the others' rates
# (benchmarks/one_channel.py). Both keep nn.Conv3d's / nn.ConvTranspose3d's parameters, so checkpoints
# and exports are unchanged; on other devices, and under torch.compile (whose generated code for the
# rearrangement corrupted the heap on a two-thread AVX2 run), they run as their parent class.


def _rearranged(x: torch.Tensor) -> bool:
    """Whether a one-channel end runs rearranged: eager, on the CPU."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


class SpaceToDepthConv3d(nn.Conv3d):
    """``nn.Conv3d(1, C, 4, stride=2, padding=1)`` computed on the CPU as a kernel-2 convolution of the
    padded input's 2x2x2 blocks stacked as 8 channels (space to depth): the same sums, reordered."""

    def __init__(self, out_channels: int, bias: bool = True) -> None:
        super().__init__(1, out_channels, 4, 2, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _rearranged(x):
            return super().forward(x)
        n, _, d, h, w = x.shape
        if d % 2 or h % 2 or w % 2:
            return super().forward(x)
        # the padded grid's 2x2x2 blocks stacked as 8 channels, then laid out channels-last: two copies
        # with long inner rows run faster than one whose innermost dimensions are the blocks' 2s
        d2, h2, w2 = d // 2 + 1, h // 2 + 1, w // 2 + 1
        blocks = nn.functional.pad(x, (1, 1, 1, 1, 1, 1)).reshape(n, d2, 2, h2, 2, w2, 2)
        blocks = blocks.permute(0, 2, 4, 6, 1, 3, 5).reshape(n, 8, d2, h2, w2)
        blocks = blocks.contiguous(memory_format=torch.channels_last_3d)
        # weight (C, 1, 4, 4, 4): kernel index 2a + p along each axis -> channel (p_d, p_h, p_w), tap a
        weight = self.weight.reshape(self.out_channels, 2, 2, 2, 2, 2, 2).permute(0, 2, 4, 6, 1, 3, 5)
        return nn.functional.conv3d(blocks, weight.reshape(self.out_channels, 8, 2, 2, 2), self.bias)


# [channel q][tap a] -> kernel index 2 + q - 2a: channel q holds output phase p = 1 - q, and phase p of
# output 2m + p reads inputs m + p - 1 + a through kernel index 3 - 2a - p
_TAPS = torch.tensor([[2, 0], [3, 1]])


class DepthToSpaceConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d(C, 1, 4, stride=2, padding=1)`` computed on the CPU as a kernel-2 convolution
    into 8 channels, one per output phase (odd or even along each axis), interleaved into the doubled
    grid (depth to space, sub-pixel): the same sums, reordered.

    Phase p of output 2m + p is the convolution's position j = m + p. Channel q = 1 - p of position j
    goes to 2j + q of a grid one voxel larger on each side, so the output is that grid's interior
    (2m + p -> 2m + p + 1): one interleaving copy, no per-phase slices."""

    def __init__(self, in_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, 1, 4, 2, 1, bias=bias)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not _rearranged(x) or output_size is not None:
            return super().forward(x, output_size)
        n, c, d, h, w = x.shape
        k = self.weight[:, 0]
        k = k[:, _TAPS][:, :, :, _TAPS][:, :, :, :, :, _TAPS]  # (C, q_d, a_d, q_h, a_h, q_w, a_w)
        weight = k.permute(1, 3, 5, 0, 2, 4, 6).reshape(8, c, 2, 2, 2)
        # channels-last whatever the input's layout, so that a model stored either way computes the same
        # numbers (an export samples exactly what its checkpoint samples)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        phases = nn.functional.conv3d(x, weight, padding=1)  # (N, 8, d + 1, h + 1, w + 1)
        grid = phases.reshape(n, 2, 2, 2, d + 1, h + 1, w + 1).permute(0, 4, 1, 5, 2, 6, 3)
        out = grid.reshape(n, 1, 2 * d + 2, 2 * h + 2, 2 * w + 2)[:, :, 1:-1, 1:-1, 1:-1]
        if self.bias is not None:
            out = out + self.bias.reshape(1, 1, 1, 1, 1)
        return out


def down_conv3d(c_in: int, c_out: int, bias: bool = True) -> nn.Conv3d:
    """A kernel-4, stride-2 convolution halving the grid (space to depth when it reads one channel)."""
    return SpaceToDepthConv3d(c_out, bias) if c_in == 1 else nn.Conv3d(c_in, c_out, 4, 2, 1, bias=bias)


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
