"""Networks only: generators, discriminators/critics, and the factory that picks them by name."""

from voxgan.models.factory import (
    ARCHITECTURES,
    LATENT_GAN,
    MODEL_NAMES,
    build_discriminator,
    build_generator,
    resolve_d_norm,
)

__all__ = [
    "ARCHITECTURES",
    "LATENT_GAN",
    "MODEL_NAMES",
    "build_discriminator",
    "build_generator",
    "resolve_d_norm",
]
