"""Pick networks by architecture name."""

from __future__ import annotations

from torch import nn

from voxgan.models.dcgan3d import DCGANDiscriminator, DCGANGenerator
from voxgan.models.resgan3d import ResDiscriminator, ResGenerator

ARCHITECTURES = {
    "dcgan3d": (DCGANGenerator, DCGANDiscriminator),
    "resgan3d": (ResGenerator, ResDiscriminator),
}


def _architecture(name: str) -> tuple[type[nn.Module], type[nn.Module]]:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture model.name={name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_generator(name: str, latent_dim: int, resolution: int, base_channels: int) -> nn.Module:
    """The generator of architecture ``name``: z (N, latent_dim) -> (N, 1, R, R, R) in [0, 1]."""
    return _architecture(name)[0](latent_dim, resolution, base_channels)


def resolve_d_norm(d_norm: str, name: str, objective_norm: str) -> str:
    """``d_norm=auto``: the architecture's own norm where it has one (spectral for resgan3d), else the
    objective's (BatchNorm for BCE, LayerNorm for a WGAN-GP critic, whose penalty is per sample)."""
    if d_norm != "auto":
        return d_norm
    return _architecture(name)[1].preferred_norm or objective_norm


def build_discriminator(
    name: str, resolution: int, base_channels: int, norm: str, minibatch_std: bool = False
) -> nn.Module:
    """The discriminator/critic of architecture ``name``: (N, 1, R, R, R) -> (N,) logits."""
    return _architecture(name)[1](resolution, base_channels, norm, minibatch_std)
