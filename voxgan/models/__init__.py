"""Networks only: generators, discriminators/critics, and the registry of architectures that builds them
by ``model.name``."""

from voxgan.models.factory import (
    ARCHITECTURES,
    Architecture,
    architecture,
    architecture_names,
    architecture_settings,
    build_discriminator,
    build_generator,
    count_tensors,
    generator_parameters,
    register_architecture,
    resolve_d_norm,
    unregister_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architecture",
    "architecture_names",
    "architecture_settings",
    "build_discriminator",
    "build_generator",
    "count_tensors",
    "generator_parameters",
    "register_architecture",
    "resolve_d_norm",
    "unregister_architecture",
]
