"""The model families voxgan trains: which LightningModule a ``model.name`` builds, registered with the
architecture of its networks.

The 3D-GAN (``dcgan3d``, ``resgan3d``: G and D on voxels, voxgan.training.module) and the latent GAN
(``latentgan``: a voxel autoencoder with a GAN on its codes, voxgan.training.latent_module) share the
data, the configs, the callbacks, evaluation, export and the study apps, which ask a family's
declarations (``GenerativeModule``'s class attributes, and its ``voxgan.models.Architecture``), never its
name or type. A new family is its module and one ``register_family`` call.
"""

from __future__ import annotations

from voxgan.config import ConfigError
from voxgan.models import (
    Architecture,
    architecture,
    register_architecture,
    unregister_architecture,
)
from voxgan.training.base import GenerativeModule
from voxgan.training.latent_module import AutoencoderGAN
from voxgan.training.module import VoxelGAN

FAMILIES: dict[str, type[GenerativeModule]] = {}  # model.name -> the LightningModule that trains it


def register_family(name: str, module: type[GenerativeModule], networks: Architecture) -> None:
    """Register a family: ``model.name=name`` trains ``module`` (checkpoints load as it), and its networks
    are built by ``networks`` (what exports rebuild G from, without the training code). Registering a
    name again takes the same module and architecture only."""
    known = FAMILIES.get(name)
    if known is not None and known is not module:
        raise ValueError(f"model.name={name!r} is registered already, as {known.__name__}")
    register_architecture(name, networks)
    FAMILIES[name] = module


def unregister_family(name: str) -> None:
    """Forget the family ``name`` and its architecture (a test's temporary family)."""
    FAMILIES.pop(name, None)
    unregister_architecture(name)


def module_class(model_name: str) -> type[GenerativeModule]:
    """The LightningModule that trains ``model.name``; a one-line ConfigError for a name not registered."""
    if model_name not in FAMILIES:
        raise ConfigError(f"model.name={model_name!r} is not a registered model family; choose one of "
                          f"{sorted(FAMILIES)} (voxgan.training.families.register_family adds one)")
    return FAMILIES[model_name]


# voxgan's own families (their architectures are voxgan.models')
register_family("dcgan3d", VoxelGAN, architecture("dcgan3d"))
register_family("resgan3d", VoxelGAN, architecture("resgan3d"))
register_family("latentgan", AutoencoderGAN, architecture("latentgan"))
