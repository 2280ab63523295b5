"""The model families voxgan trains, and which LightningModule a ``model.name`` builds.

The 3D-GAN (``dcgan3d``, ``resgan3d``: G and D on voxels, voxgan.training.module) is the default;
``latentgan`` is a voxel autoencoder with a GAN on its codes (voxgan.training.latent_module). Both
share the data, the configs, the callbacks, evaluation, export and the study apps through the
``Sampler`` each returns; a new family is its module and a line here.
"""

from __future__ import annotations

from voxgan.training.base import GenerativeModule
from voxgan.training.latent_module import LatentGAN
from voxgan.training.module import VoxelGAN

FAMILIES: dict[str, type[GenerativeModule]] = {"latentgan": LatentGAN}


def module_class(model_name: str) -> type[GenerativeModule]:
    """The LightningModule that trains ``model.name`` (the 3D-GAN's for every voxel architecture)."""
    return FAMILIES.get(model_name, VoxelGAN)
