"""The architectures voxgan builds, by ``model.name``: how each one's generator (and its discriminator of
voxel grids, where it has one) is built, declared at the network level so that exports rebuild and size
a generator without the training code.

``register_architecture`` adds one (``voxgan.training.families.register_family`` does it for a family
together with its LightningModule); the 3D-GAN's (``dcgan3d``, ``resgan3d``) and the latent GAN's
(``latentgan``) are registered here. Code that builds networks asks the registry's declarations, never
a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from voxgan.models.autoencoder import LatentGenerator, VoxelEncoder
from voxgan.models.dcgan3d import DCGANDiscriminator, DCGANGenerator
from voxgan.models.resgan3d import ResDiscriminator, ResGenerator

# (latent_dim, resolution, g_channels, settings) -> G: z (N, latent_dim) -> (N, 1, R, R, R) in [0, 1]
GeneratorBuilder = Callable[[int, int, int, dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class Architecture:
    """What builds one ``model.name``'s networks, and what an export of its G records.

    ``generator``: builds G from (latent_dim, resolution, g_channels, settings), ``settings`` being the
    values of its own group of settings (empty without one). ``discriminator``: the class of its D of
    voxel grids, called as (resolution, d_channels, norm, minibatch_std), with ``features(x)`` (the
    activations after each block) and optionally ``preferred_norm``; None where D judges something else
    (a latent GAN's codes). ``settings``: the group under ``model`` of its own settings, which an
    export's config.json records under the same key, e.g. ``"latent"``; ``generator_keys``: the integer
    keys of that group that rebuild G; ``export_keys``: those config.json records (``generator_keys``
    and any that rebuild ``encoder``). ``encoder``: (resolution, settings) -> the encoder of grids
    exported beside G, or None. ``generator_parameters``: G's parameter and buffer count from
    (latent_dim, resolution, g_channels, settings) without allocating (None: G is built on the meta
    device and counted), for sizes that even the meta device would take long to build."""

    generator: GeneratorBuilder
    discriminator: type[nn.Module] | None = None
    settings: str | None = None
    generator_keys: tuple[str, ...] = ()
    export_keys: tuple[str, ...] = ()
    encoder: Callable[[int, dict[str, Any]], nn.Module | None] | None = None
    generator_parameters: Callable[[int, int, int, dict[str, Any]], int] | None = None


ARCHITECTURES: dict[str, Architecture] = {}  # model.name -> its architecture (register_architecture)


def register_architecture(name: str, architecture: Architecture) -> None:
    """Register ``architecture`` under ``name`` (again: only the same one)."""
    known = ARCHITECTURES.get(name)
    if known is not None and known is not architecture:
        raise ValueError(f"model.name={name!r} is registered already, with another architecture")
    ARCHITECTURES[name] = architecture


def unregister_architecture(name: str) -> None:
    """Forget ``name``'s architecture (a test's temporary family)."""
    ARCHITECTURES.pop(name, None)


def architecture_names() -> tuple[str, ...]:
    """The registered ``model.name``s, sorted."""
    return tuple(sorted(ARCHITECTURES))


def architecture(name: str) -> Architecture:
    """The architecture registered as ``name``; a ValueError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name={name!r} is not a registered architecture; choose one of "
                         f"{list(architecture_names())}")
    return ARCHITECTURES[name]


def architecture_settings(name: str, model: Any) -> dict[str, Any]:
    """The values of architecture ``name``'s own settings in ``model`` (a ``model`` config, or an
    export's config.json, which records them under the same key): empty without a group."""
    group = architecture(name).settings
    found = model.get(group) if group is not None else None
    return dict(found) if found else {}


def build_generator(
    name: str, latent_dim: int, resolution: int, base_channels: int, settings: dict[str, Any] | None = None
) -> nn.Module:
    """The generator of model ``name``: z (N, latent_dim) -> (N, 1, R, R, R) in [0, 1]. ``settings``: the
    values of the architecture's own settings group (``model.latent`` for ``latentgan``), where it has one."""
    arch = architecture(name)
    settings = dict(settings or {})
    missing = [key for key in arch.generator_keys if key not in settings]
    if missing:
        raise ValueError(f"model.name={name} needs its {arch.settings} settings ({', '.join(missing)})")
    return arch.generator(latent_dim, resolution, base_channels, settings)


def generator_parameters(
    name: str, latent_dim: int, resolution: int, base_channels: int, settings: dict[str, Any] | None = None
) -> int:
    """G's parameters and buffers, counted without allocating memory."""
    arch = architecture(name)
    settings = dict(settings or {})
    if arch.generator_parameters is not None:
        return arch.generator_parameters(latent_dim, resolution, base_channels, settings)
    with torch.device("meta"):
        return count_tensors(build_generator(name, latent_dim, resolution, base_channels, settings))


def count_tensors(network: nn.Module) -> int:
    """The numbers in a network's parameters and buffers."""
    return sum(t.numel() for t in (*network.parameters(), *network.buffers()))


def _voxel_discriminator(name: str) -> type[nn.Module]:
    found = architecture(name).discriminator
    if found is None:
        known = sorted(n for n, a in ARCHITECTURES.items() if a.discriminator is not None)
        raise ValueError(f"model.name={name!r} has no voxel discriminator; choose one of {known}")
    return found


def resolve_d_norm(d_norm: str, name: str, objective_norm: str) -> str:
    """``d_norm=auto``: the architecture's own norm where it has one (spectral for resgan3d), else the
    objective's (BatchNorm for BCE, LayerNorm for a WGAN-GP critic, whose penalty is per sample)."""
    if d_norm != "auto":
        return d_norm
    return getattr(_voxel_discriminator(name), "preferred_norm", None) or objective_norm


def build_discriminator(
    name: str, resolution: int, base_channels: int, norm: str, minibatch_std: bool
) -> nn.Module:
    """The discriminator/critic of architecture ``name``: (N, 1, R, R, R) -> (N,) logits."""
    return _voxel_discriminator(name)(resolution, base_channels, norm, minibatch_std)


# ----------------------------------------------------------------------- the architectures of voxgan
def _voxel_gan(generator: type[nn.Module], discriminator: type[nn.Module]) -> Architecture:
    """A 3D-GAN architecture: G and D on voxel grids, no settings of its own."""
    def build(latent_dim: int, resolution: int, channels: int, _settings: dict[str, Any]) -> nn.Module:
        return generator(latent_dim, resolution, channels)

    return Architecture(generator=build, discriminator=discriminator)


LATENT_GENERATOR_KEYS = ("code_dim", "width", "depth")  # what rebuilds a latent GAN's code generator


def _latent_generator(latent_dim: int, resolution: int, channels: int, latent: dict[str, Any]) -> nn.Module:
    code_dim, width, depth = (latent[key] for key in LATENT_GENERATOR_KEYS)
    return LatentGenerator(latent_dim, resolution, code_dim, width, depth, channels)


def _latent_encoder(resolution: int, latent: dict[str, Any]) -> nn.Module | None:
    """The latent GAN's encoder of grids, where its settings record it (``encoder_channels``)."""
    channels = latent.get("encoder_channels")
    return VoxelEncoder(resolution, latent["code_dim"], channels) if isinstance(channels, int) else None


def _latent_generator_parameters(
    latent_dim: int, resolution: int, channels: int, latent: dict[str, Any]
) -> int:
    """The latent GAN's G counted on the meta device, its hidden layers past the second counted, not built
    (a depth of millions would take long even there)."""
    depth, width = latent["depth"], latent["width"]
    extra = max(depth - 2, 0) * (width * width + width)
    with torch.device("meta"):
        return extra + count_tensors(_latent_generator(latent_dim, resolution, channels,
                                                       {**latent, "depth": min(depth, 2)}))


LATENT_ARCHITECTURE = Architecture(
    generator=_latent_generator,
    settings="latent",
    generator_keys=LATENT_GENERATOR_KEYS,
    export_keys=(*LATENT_GENERATOR_KEYS, "encoder_channels"),
    encoder=_latent_encoder,
    generator_parameters=_latent_generator_parameters,
)

register_architecture("dcgan3d", _voxel_gan(DCGANGenerator, DCGANDiscriminator))
register_architecture("resgan3d", _voxel_gan(ResGenerator, ResDiscriminator))
register_architecture("latentgan", LATENT_ARCHITECTURE)  # code MLP + decoder (voxgan.models.autoencoder)
