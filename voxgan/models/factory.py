"""Pick networks by architecture name."""

from __future__ import annotations

from typing import Any

from torch import nn

from voxgan.models.autoencoder import LatentGenerator
from voxgan.models.dcgan3d import DCGANDiscriminator, DCGANGenerator
from voxgan.models.resgan3d import ResDiscriminator, ResGenerator

ARCHITECTURES = {
    "dcgan3d": (DCGANGenerator, DCGANDiscriminator),
    "resgan3d": (ResGenerator, ResDiscriminator),
}
LATENT_GAN = "latentgan"  # the latent GAN's generator: code MLP + decoder (voxgan.models.autoencoder)
MODEL_NAMES = (*ARCHITECTURES, LATENT_GAN)


def _architecture(name: str) -> tuple[type[nn.Module], type[nn.Module]]:
    if name not in ARCHITECTURES:
        known = sorted(ARCHITECTURES)
        raise ValueError(f"model.name={name!r} has no voxel discriminator; choose one of {known}")
    return ARCHITECTURES[name]


def build_generator(
    name: str, latent_dim: int, resolution: int, base_channels: int, latent: dict[str, Any] | None = None
) -> nn.Module:
    """The generator of model ``name``: z (N, latent_dim) -> (N, 1, R, R, R) in [0, 1]. ``latent``: the
    latent GAN's code settings (code_dim, width, depth), which its generator needs."""
    if name == LATENT_GAN:
        if latent is None:
            raise ValueError(f"model.name={name} needs its latent settings (code_dim, width, depth)")
        return LatentGenerator(
            latent_dim, resolution, latent["code_dim"], latent["width"], latent["depth"], base_channels
        )
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
