"""The embedded procedural shape library: parametric furniture, vehicles and objects at any resolution.

Each family samples a shape's attributes from a generator seeded by (family, seed), builds the shape
from analytic primitives in world units, and rasterises it at the voxel centres of the canonical grid
(``voxgan.data.grid``): y up, front +z, centred, longest side spanning ``fit_extent(R)`` voxels.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from voxgan.data.procedural import airplane, car, chair, lamp, mug, sofa, table
from voxgan.data.procedural.raster import rasterise
from voxgan.data.procedural.sampling import Sampler

# Part of the cache key of generated datasets: bump it whenever any family's shapes change.
LIBRARY_VERSION = 1

_FAMILIES: dict[str, ModuleType] = {
    "chair": chair,
    "airplane": airplane,
    "table": table,
    "sofa": sofa,
    "lamp": lamp,
    "car": car,
    "mug": mug,
}
CATEGORIES: tuple[str, ...] = tuple(_FAMILIES)
MIN_RESOLUTION = 8


def describe(category: str, seed: int) -> dict[str, object]:
    """The attributes sampled for shape ``seed`` of ``category``: part types, sizes, angles in radians."""
    return _family(category).sample(_sampler(category, seed))


def make_shape(category: str, seed: int, resolution: int) -> np.ndarray:
    """Shape ``seed`` of ``category`` as a bool ``(R, R, R)`` grid in the canonical pose."""
    if resolution < MIN_RESOLUTION:
        raise ValueError(
            f"resolution {resolution} is too small: use {MIN_RESOLUTION} or more voxels per side"
        )
    family = _family(category)
    return rasterise(family.build(family.sample(_sampler(category, seed))), resolution)


def make_shapes(category: str, seeds: Sequence[int], resolution: int) -> np.ndarray:
    """Shapes ``seeds`` of ``category`` stacked as a bool ``(N, R, R, R)`` array."""
    _check_resolution(resolution)
    out = np.empty((len(seeds),) + (resolution,) * 3, dtype=bool)
    for i, seed in enumerate(seeds):
        out[i] = make_shape(category, seed, resolution)
    return out


def _check_resolution(resolution: int) -> None:
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"resolution {resolution} is too small: use at least {MIN_RESOLUTION} voxels a side")


def _family(category: str) -> ModuleType:
    if category not in _FAMILIES:
        raise ValueError(f"unknown shape category {category!r}: choose one of {', '.join(CATEGORIES)}")
    return _FAMILIES[category]


def _sampler(category: str, seed: int) -> Sampler:
    if seed < 0:
        raise ValueError(f"seed {seed} is negative: use a seed >= 0")
    # The family's name (not its position in CATEGORIES) keys the stream, so adding families changes no shape.
    return Sampler((zlib.crc32(category.encode()), int(seed)))
