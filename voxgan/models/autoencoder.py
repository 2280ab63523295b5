"""The latent GAN's networks: a voxel autoencoder (3D-conv encoder, 3D-GAN-style decoder) and the MLPs
of the GAN on its codes (Achlioptas et al. 2018, "l-GAN"; Chen & Zhang 2019, IM-GAN)."""

from __future__ import annotations

import torch
from torch import nn

from voxgan.models.layers import DepthToSpaceConvTranspose3d, down_conv3d, level_channels, num_levels


class VoxelEncoder(nn.Module):
    """resolution^3 occupancy -> a code of ``code_dim`` numbers: strided 3D convolutions (no norm, so a
    shape's code does not depend on its batch) down to 4^3, then a linear layer."""

    def __init__(self, resolution: int, code_dim: int, base_channels: int = 16) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)[::-1]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([1, *channels], channels):
            layers += [down_conv3d(c_in, c_out), nn.LeakyReLU(0.2, True)]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * 4**3, code_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).flatten(1))


class VoxelDecoder(nn.Module):
    """A code -> occupancy logits (N, 1, R, R, R): a linear layer to 4^3, then the 3D-GAN generator's
    transposed convolutions (BatchNorm, ReLU), the last without its sigmoid (the loss takes logits)."""

    def __init__(self, code_dim: int, resolution: int, base_channels: int = 32) -> None:
        super().__init__()
        channels = level_channels(resolution, base_channels)
        self.first = channels[0]
        self.fc = nn.Sequential(nn.Linear(code_dim, channels[0] * 4**3), nn.ReLU(True))
        layers: list[nn.Module] = [nn.BatchNorm3d(channels[0])]
        for c_in, c_out in zip(channels, channels[1:]):
            up = nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False)
            layers += [up, nn.BatchNorm3d(c_out), nn.ReLU(True)]
        layers.append(DepthToSpaceConvTranspose3d(channels[-1]))
        self.net = nn.Sequential(*layers)
        num_levels(resolution)  # checks the resolution

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(code).view(code.shape[0], self.first, 4, 4, 4))


def mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with LeakyReLU(0.2), then a linear output."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class LatentGenerator(nn.Module):
    """z -> occupancy probabilities through the code space: the code GAN's G, the codes' scale (G works on
    standardised codes), then the decoder and a sigmoid. What samples come from, and what is exported."""

    def __init__(self, latent_dim: int, resolution: int, code_dim: int, width: int, depth: int,
                 decoder_channels: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.code_generator = mlp(latent_dim, width, depth, code_dim)
        self.decoder = VoxelDecoder(code_dim, resolution, decoder_channels)
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_std", torch.ones(code_dim))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """The (unstandardised) codes G makes of z: what the decoder reads."""
        return self.code_generator(z) * self.code_std + self.code_mean

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities of standardised codes (G's outputs, or the encoder's codes of shapes)."""
        return torch.sigmoid(self.decoder(codes * self.code_std + self.code_mean))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.code_generator(z))
