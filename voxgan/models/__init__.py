"""Networks only: generators, discriminators/critics, and the factory that picks them by name."""

from voxgan.models.factory import ARCHITECTURES, build_discriminator, build_generator

__all__ = ["ARCHITECTURES", "build_discriminator", "build_generator"]
