"""Residual voxel GAN: nearest-neighbour upsampling + 3^3 convolutions in G (no checkerboard
artefacts of transposed convolutions), residual downsampling blocks in D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxgan.models.layers import MinibatchStd, block_features, level_channels, maybe_spectral, norm3d


class UpBlock(nn.Module):
    """BN-ReLU-upsample-conv3-BN-ReLU-conv3 with a 1^3 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm3d(c_in), nn.BatchNorm3d(c_out)
        self.conv1 = nn.Conv3d(c_in, c_out, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv3d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """conv3-LReLU-conv3-avgpool with a 1^3 shortcut; normalisation chosen by ``norm``."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.conv1 = maybe_spectral(nn.Conv3d(c_in, c_out, 3, 1, 1), norm)
        self.conv2 = maybe_spectral(nn.Conv3d(c_out, c_out, 3, 1, 1), norm)
        self.norm1, self.norm2 = norm3d(norm, c_out), norm3d(norm, c_out)
        self.shortcut = maybe_spectral(nn.Conv3d(c_in, c_out, 1), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        h = F.leaky_relu(self.norm2(self.conv2(h)), 0.2)
        return F.avg_pool3d(h, 2) + F.avg_pool3d(self.shortcut(x), 2)


class ResGenerator(nn.Module):
    """z -> linear -> 4^3 -> residual up blocks -> resolution^3 occupancy probabilities."""

    def __init__(self, latent_dim: int, resolution: int, base_channels: int = 32) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)
        self.latent_dim = latent_dim
        self.project = nn.Linear(latent_dim, channels[0] * 4**3)
        self.blocks = nn.Sequential(*(UpBlock(a, b) for a, b in zip(channels, channels[1:] + [channels[-1]])))
        self.out = nn.Sequential(
            nn.BatchNorm3d(channels[-1]), nn.ReLU(True), nn.Conv3d(channels[-1], 1, 3, 1, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z.view(z.shape[0], self.latent_dim)).view(z.shape[0], -1, 4, 4, 4)
        return torch.sigmoid(self.out(self.blocks(x)))


class ResDiscriminator(nn.Module):
    """resolution^3 -> residual down blocks -> 4^3 -> global sum -> linear logit."""

    preferred_norm: str | None = "spectral"  # model.d_norm=auto picks spectral normalisation

    def __init__(
        self, resolution: int, base_channels: int = 32, norm: str = "spectral", minibatch_std: bool = False
    ) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)[::-1]
        ins = [1] + channels[:-1]
        self.blocks = nn.ModuleList(DownBlock(a, b, norm) for a, b in zip(ins, channels))
        self.batch_std = MinibatchStd() if minibatch_std else nn.Identity()
        self.head = maybe_spectral(nn.Linear(channels[-1] + int(minibatch_std), 1), norm)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each block, coarsest last."""
        return block_features(self.blocks, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.batch_std(F.leaky_relu(self.features(x)[-1], 0.2)).sum(dim=(2, 3, 4))
        return self.head(h).flatten()
