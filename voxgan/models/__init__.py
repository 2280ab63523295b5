"""Networks only: generators, discriminators/critics, and the factory that picks them by name."""

from voxgan.models.factory import ARCHITECTURES, build_discriminator, build_generator, resolve_d_norm

__all__ = ["ARCHITECTURES", "build_discriminator", "build_generator", "resolve_d_norm"]
