"""The 3D-GAN networks of Wu et al. (2016): transposed 3D convolutions up, strided ones down."""

from __future__ import annotations

import torch
from torch import nn

from voxgan.models.layers import (
    DepthToSpaceConvTranspose3d,
    MinibatchStd,
    block_features,
    down_conv3d,
    level_channels,
    maybe_spectral,
    norm3d,
)


class DCGANGenerator(nn.Module):
    """z -> 4^3 -> ... -> resolution^3 occupancy probabilities (sigmoid), kernel 4 stride 2."""

    def __init__(self, latent_dim: int, resolution: int, base_channels: int = 64) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose3d(latent_dim, channels[0], 4, 1, 0, bias=False),
            nn.BatchNorm3d(channels[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [
                nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm3d(c_out),
                nn.ReLU(True),
            ]
        layers += [DepthToSpaceConvTranspose3d(channels[-1]), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """resolution^3 -> ... -> 4^3 -> one logit; the generator's mirror with LeakyReLU(0.2)."""

    preferred_norm: str | None = None  # model.d_norm=auto: the objective picks

    def __init__(
        self, resolution: int, base_channels: int = 64, norm: str = "batch", minibatch_std: bool = False
    ) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)[::-1]
        blocks: list[nn.Module] = [
            nn.Sequential(maybe_spectral(down_conv3d(1, channels[0]), norm), nn.LeakyReLU(0.2, True))
        ]
        for c_in, c_out in zip(channels, channels[1:]):
            blocks.append(
                nn.Sequential(
                    maybe_spectral(nn.Conv3d(c_in, c_out, 4, 2, 1, bias=norm in ("none", "spectral")), norm),
                    norm3d(norm, c_out),
                    nn.LeakyReLU(0.2, True),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.batch_std = MinibatchStd() if minibatch_std else nn.Identity()
        self.head = maybe_spectral(nn.Conv3d(channels[-1] + int(minibatch_std), 1, 4, 1, 0), norm)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each block, coarsest last."""
        return block_features(self.blocks, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.batch_std(self.features(x)[-1])).flatten()
